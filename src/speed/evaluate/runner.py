"""Evaluate one embedding model on task folders with the MTEB protocol; results JSON and a table."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Literal, Sequence

import numpy as np

from ..errors import InputError, SpeedError
from .cache import EmbeddingCache
from .encoder import Encoder, uses_instruction
from .task_types import TASK_TYPES
from .tasks import Task, load_tasks

InstructionMode = Literal["auto", "on", "off"]


def evaluate_task(encoder: Encoder, task: Task, instruction: bool, keep_items: bool = False) -> dict:
    """The metrics of one task (``main_score`` and ``metric`` included; with ``keep_items`` the per-item
    values that ``speed.evaluate.bootstrap`` resamples, where the task type has them)."""
    ins = task.instruction if instruction and task.instruction else None
    if task.type not in TASK_TYPES:  # pragma: no cover - rejected by the reader
        raise InputError(f"{task.path / 'task.json'}: unknown task type {task.type!r}")
    t0 = time.time()
    m = TASK_TYPES[task.type]().evaluate(encoder, task, ins)
    items = m.pop("items", None)
    metric = task.main_score
    if metric not in m:
        raise InputError(f"{task.path / 'task.json'}:1: main_score {metric!r} is not a metric of type {task.type} "
                         f"(choose from {', '.join(k for k in m if isinstance(m[k], float))})")
    out = {"metric": metric, "main_score": float(m[metric]), "type": task.type, "instruction": ins,
           "seconds": round(time.time() - t0, 3)}
    out.update({k: v for k, v in m.items() if k != "main_score"})
    if keep_items and items is not None:
        out["items"] = items
    return out


def resolve_instruction(mode: InstructionMode, model: str, path: str | None = None,
                        configured: bool | None = None) -> bool:
    if mode == "on":
        return True
    if mode == "off":
        return False
    return uses_instruction(model, path, configured)


def evaluate_model(model: str, task_dirs: Sequence[str] | None = None, instruction: InstructionMode = "auto",
                   cache_dir: str | None = None, use_cache: bool = True, batch_size: int = 32,
                   configured_instruction: bool | None = None, tasks: Sequence[Task] | None = None,
                   log=None, keep_items: bool = False) -> dict:
    """Evaluate ``model`` (an offline name, a sentence-transformers folder or a hub id) on task folders
    (default: the built-in tasks). Every folder is validated before anything is encoded."""
    tasks = list(tasks) if tasks is not None else load_tasks(task_dirs)
    cache = EmbeddingCache(cache_dir) if use_cache else None
    try:
        enc = Encoder(model, cache=cache, batch_size=batch_size)
        on = resolve_instruction(instruction, model, enc.path, configured_instruction)
        results = {}
        t0 = time.time()
        for task in tasks:
            if log:
                log(f"[eval] {task.name} ({task.type}) ...")
            results[task.name] = evaluate_task(enc, task, on, keep_items)
            if log:
                r = results[task.name]
                log(f"[eval] {task.name}: {r['metric']} {r['main_score']:.4f} ({r['seconds']:.1f}s)")
        return {"model": model, "model_path": enc.path, "model_identity": enc.identity, "instruction": on,
                "protocol": "mteb-1.12", "seconds": round(time.time() - t0, 3), "encode": enc.stats.to_dict(),
                "cache": str(cache.path) if cache else None, "results": results,
                "average": float(np.mean([r["main_score"] for r in results.values()])) if results else None}
    finally:
        if cache is not None:
            cache.close()


def format_table(result: dict, baseline: dict | None = None) -> str:
    """A fixed-width table: task, type, metric, score (and the baseline and delta when given)."""
    rows = [("task", "type", "metric", "score") + (("base", "delta") if baseline else ())]
    for name, r in result["results"].items():
        row = (name, r.get("type", ""), r["metric"], f"{r['main_score']:.4f}")
        if baseline:
            b = baseline["results"].get(name)
            row += (f"{b['main_score']:.4f}", f"{r['main_score'] - b['main_score']:+.4f}") if b else ("-", "-")
        rows.append(row)
    if result.get("average") is not None:
        row = ("average", "", "", f"{result['average']:.4f}")
        if baseline and baseline.get("average") is not None:
            row += (f"{baseline['average']:.4f}", f"{result['average'] - baseline['average']:+.4f}")
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path: str | Path, obj: dict) -> None:
    from ..io import atomic_write_text

    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def _json_default(o):
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


# -- named MTEB tasks through mteb itself ------------------------------------------------------------
def run_mteb(model: str, names: Sequence[str], output_dir: str | None = None) -> dict:
    """Run named MTEB tasks through the ``mteb`` package (needs its data from the Hugging Face hub)."""
    from ..models.resolve import hub_reachable

    if not hub_reachable():
        raise SpeedError(f"--mteb {','.join(names)}: the MTEB task data is downloaded from the Hugging Face hub, "
                         "which is not reachable from here (offline); evaluate task folders with --tasks DIR instead")
    from ..errors import require
    from ..models import resolve_model

    mteb = require("mteb", "mteb", "--mteb (named MTEB tasks)")
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(resolve_model(model, want="embedder"), device="cpu")
    try:
        tasks = mteb.get_tasks(tasks=list(names), languages=["eng"])
    except Exception as exc:  # unknown task names
        raise SpeedError(f"--mteb: {exc}") from None
    evaluation = mteb.MTEB(tasks=tasks)
    res = evaluation.run(st, output_folder=output_dir, verbosity=0)
    out = {}
    for r in res:
        name = getattr(r, "task_name", str(r))
        try:
            score = r.get_score()
        except Exception:  # pragma: no cover - API differences between mteb versions
            score = None
        out[name] = {"metric": "main_score", "main_score": score}
    return {"model": model, "protocol": f"mteb-{getattr(mteb, '__version__', '?')}", "results": out}
