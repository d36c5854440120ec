"""Stage ``evaluate``: the trained embedder against its untouched base, MTEB-style, on task folders.

Evaluates the ``embedder`` role's model as the run uses it (the ``train-embedder`` output once
that stage is done) and the configured base model itself on the configured task folders (default:
the built-in STSBenchmark and Banking77Classification), with the persistent embedding cache, and
writes ``evaluate/results.json``: ``{"trained": ..., "base": ..., "delta": {task: trained - base},
"intervals": ...}``. The intervals are 95% paired bootstrap intervals (``bootstrap`` resamples of
each task's rows, ``speed.evaluate.bootstrap``) of the base score, the fine-tuned score and the gain.
A decoder base is evaluated as the trainer sets it up (EOS appended, last-token pooling, the same
instruction), not as a plain language model.
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
    bootstrap: int = 1000  # resamples for the intervals (0: none)

    def validate(self, where: str) -> None:
        check(self.batch_size >= 1, f"{where}.batch_size", self.batch_size, "must be >= 1")
        check(self.bootstrap == 0 or self.bootstrap >= 100, f"{where}.bootstrap", self.bootstrap, "0 or >= 100")


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
    keep = cfg.bootstrap > 0
    trained = evaluate_model(ref.model, **kw, log=print, keep_items=keep)
    is_trained = ref.model != base_ref.model
    base = None
    if cfg.compare_base and is_trained:
        base = evaluate_model(_base_model(ctx, base_ref, ref), **{**kw, "configured_instruction": base_ref.instruction},
                              log=print, keep_items=keep)
    elif cfg.compare_base:
        base = trained  # no trained model (train-embedder provided none): the base is the model itself
    intervals = _intervals(trained, base, cfg.bootstrap, ctx.seed) if keep and base is not None and is_trained else {}
    for res in (trained, base):
        for r in (res or {}).get("results", {}).values():
            r.pop("items", None)
    body = {"trained": trained, "base": base, "delta": deltas(trained, base), "is_trained": is_trained,
            "tasks": [str(t.path) for t in tasks], "intervals": intervals}
    write_json(ctx.dir / "results.json", body)
    ctx.register_output("results.json")
    from ..io import atomic_write_text

    atomic_write_text(ctx.dir / "results.txt", format_table(trained, base if is_trained else None) + "\n")
    ctx.register_output("results.txt")
    print(format_table(trained, base if is_trained else None))
    ctx.counts.update({"tasks": len(tasks), "trained": {k: round(v["main_score"], 4) for k, v in trained["results"].items()},
                       "delta": body["delta"], "intervals": intervals, "encoded": trained["encode"]["encoded"] + (
                           base["encode"]["encoded"] if base is not None and base is not trained else 0)})


def _base_model(ctx, base_ref, ref) -> str:
    """The base to compare with: the configured model, or for a decoder the untrained model set up as the
    trainer sets it up (a plain causal LM folder would be mean-pooled without EOS)."""
    from ..evaluate.encoder import uses_instruction
    from ..train.embedder import INFO_FILE, detect_family, untrained_embedder

    if detect_family(ref.model) != "decoder":
        return base_ref.model
    folder = ctx.dir / "untrained"
    if not (folder / "model" / INFO_FILE).is_file():  # with the instruction setting the trained model records
        untrained_embedder(base_ref.model, folder, ctx.config.stage("train-embedder"),
                           uses_instruction(ref.model, ref.model, None))
    return str(folder / "model")


def _intervals(trained: dict, base: dict, n: int, seed: int) -> dict:
    """Per task and on the average: base and fine-tuned scores and the gain, each with a 95% paired
    bootstrap interval."""
    from ..evaluate.bootstrap import summarize

    items = {t: {"base": base["results"][t]["items"], "trained": r["items"]} for t, r in trained["results"].items()
             if r.get("items") and base["results"].get(t, {}).get("items")}
    if not items:
        return {}
    s = summarize(items, [("base", "trained")], n=n, seed=seed)
    base, trained_, gain = s["scores"]["base"], s["scores"]["trained"], s["differences"][0]

    def triple(score: float, ci) -> list[float]:
        return [round(score, 4), round(ci[0], 4), round(ci[1], 4)]

    out = {}
    for t in list(items) + ["average"]:
        b = base["average"] if t == "average" else base["tasks"][t]
        f = trained_["average"] if t == "average" else trained_["tasks"][t]
        g = gain["average"] if t == "average" else gain["tasks"][t]
        out[t] = {"base": triple(b["score"], b["ci"]), "trained": triple(f["score"], f["ci"]),
                  "gain": triple(g["diff"], g["ci"])}
    return out


def summary(entry: dict, run_dir) -> list[str]:
    """Each task's score, base and fine-tuned (with 95% intervals and the gain's when computed)."""
    trained, delta = entry["counts"].get("trained", {}), entry["counts"].get("delta", {}) or {}
    intervals = entry["counts"].get("intervals") or {}
    if intervals:
        lines = []
        for task, iv in intervals.items():
            b, f, g = iv["base"], iv["trained"], iv["gain"]
            verdict = "gain" if g[1] > 0 else "loss" if g[2] < 0 else "no clear change"
            lines.append(f"  {task:<34} base {b[0]:.4f} [{b[1]:.4f}, {b[2]:.4f}]  fine-tuned {f[0]:.4f} "
                         f"[{f[1]:.4f}, {f[2]:.4f}]  gain {g[0]:+.4f} [{g[1]:+.4f}, {g[2]:+.4f}] ({verdict})")
        return lines
    lines = []
    for task, score in trained.items():
        b = score - delta[task] if task in delta else None
        lines.append(f"  {task:<34} base {'-' if b is None else f'{b:.4f}'}  fine-tuned {score:.4f}")
    return lines


STAGE = Stage("evaluate", Config, run, needs=("embedder",), provides={"eval-results": "results.json"},
              roles=("embedder",), preflight=preflight, summary=summary)
