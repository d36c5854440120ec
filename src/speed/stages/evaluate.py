"""Stage ``evaluate``: the trained embedder against its untouched base, MTEB-style, on task folders.

Evaluates the ``embedder`` role's model as the run uses it (the ``train-embedder`` output once
that stage is done) and the configured base model itself on the configured task folders (default:
the built-in STSBenchmark and Banking77Classification), with the persistent embedding cache, and
writes ``evaluate/results.json``: ``{"trained": ..., "base": ..., "delta": {task: trained - base}}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..runtime.configschema import check
from . import Stage


@dataclass
class Config:
    tasks: list[str] = field(default_factory=list)  # task folders (or folders of tasks); [] = built-ins
    instruction: Literal["auto", "on", "off"] = "auto"
    compare_base: bool = True
    batch_size: int = 32
    cache_dir: str | None = None  # default $SPEED_HOME/embcache

    def validate(self, where: str) -> None:
        check(self.batch_size >= 1, f"{where}.batch_size", self.batch_size, "must be >= 1")


def preflight(config, cfg: Config) -> None:
    """Validate the task folders before the run writes anything."""
    from ..evaluate.tasks import discover

    if cfg.tasks:
        discover(cfg.tasks)


def deltas(trained: dict, base: dict | None) -> dict:
    if not base:
        return {}
    out = {}
    for name, r in trained["results"].items():
        b = base["results"].get(name)
        if b is not None:
            out[name] = round(r["main_score"] - b["main_score"], 6)
    if trained.get("average") is not None and base.get("average") is not None:
        out["average"] = round(trained["average"] - base["average"], 6)
    return out


def run(ctx) -> None:
    from ..evaluate.runner import evaluate_model, format_table, write_json
    from ..evaluate.tasks import load_tasks

    cfg: Config = ctx.cfg
    tasks = load_tasks(cfg.tasks or None)
    base_ref = ctx.config.model("embedder")
    ref = ctx.model_ref("embedder")
    kw = dict(instruction=cfg.instruction, cache_dir=cfg.cache_dir, batch_size=cfg.batch_size, tasks=tasks,
              configured_instruction=ref.instruction)
    trained = evaluate_model(ref.model, **kw, log=print)
    is_trained = ref.model != base_ref.model
    base = None
    if cfg.compare_base and is_trained:
        base = evaluate_model(base_ref.model, **{**kw, "configured_instruction": base_ref.instruction}, log=print)
    elif cfg.compare_base:
        base = trained  # no trained model (train-embedder provided none): the base is the model itself
    body = {"trained": trained, "base": base, "delta": deltas(trained, base), "is_trained": is_trained,
            "tasks": [str(t.path) for t in tasks]}
    write_json(ctx.dir / "results.json", body)
    ctx.register_output("results.json")
    from ..io import atomic_write_text

    atomic_write_text(ctx.dir / "results.txt", format_table(trained, base if is_trained else None) + "\n")
    ctx.register_output("results.txt")
    print(format_table(trained, base if is_trained else None))
    ctx.counts.update({"tasks": len(tasks), "trained": {k: round(v["main_score"], 4) for k, v in trained["results"].items()},
                       "delta": body["delta"], "encoded": trained["encode"]["encoded"] + (
                           base["encode"]["encoded"] if base is not None and base is not trained else 0)})


def summary(entry: dict, run_dir) -> list[str]:
    """Each task's score, base and fine-tuned."""
    trained, delta = entry["counts"].get("trained", {}), entry["counts"].get("delta", {}) or {}
    lines = []
    for task, score in trained.items():
        b = score - delta[task] if task in delta else None
        lines.append(f"  {task:<34} base {'-' if b is None else f'{b:.4f}'}  fine-tuned {score:.4f}")
    return lines


STAGE = Stage("evaluate", Config, run, needs=("embedder",), provides={"eval-results": "results.json"},
              roles=("embedder",), preflight=preflight, summary=summary)
