"""Stage ``root``: the junior generator writes several candidates per prompt (D_root).

A fresh set of prompts (planned with its own salt, so different from the seed set), each sampled
``candidates_per_prompt`` times (default 5, temperature 1.0). Output ``root/candidates.jsonl``:
one row per prompt with the prompt (kind, task, topic, attributes, guidelines, messages) and every
candidate with its raw text and parse result (ok, fields or rejection reason).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..runtime.configschema import check
from . import Stage
from .generation import PlannedConfig, count_reason, generate_examples, llm_client, model_label, planned_prompts


@dataclass
class Config(PlannedConfig):
    candidates_per_prompt: int = 5
    shard_size: int = 8

    def validate(self, where: str) -> None:
        super().validate(where)
        check(self.candidates_per_prompt >= 2, f"{where}.candidates_per_prompt", self.candidates_per_prompt,
              "must be >= 2 (the judge compares candidates)")


def run(ctx) -> None:
    cfg: Config = ctx.cfg
    plan_stats: dict = {}
    prompts = planned_prompts(ctx, plan_stats)
    model = model_label(ctx, "junior")
    by_prompt: dict[str, dict] = {}
    valid = 0
    for row in generate_examples(ctx, llm_client(ctx, "junior"), prompts, cfg, samples=cfg.candidates_per_prompt):
        p = row["prompt"]
        entry = by_prompt.setdefault(p["id"], {"id": p["id"], "prompt": p, "model": model, "candidates": []})
        entry["candidates"].append({k: row[k] for k in ("sample", "raw", "ok", "fields", "reason", "detail",
                                                        "length_ok", "error", "finish_reason")})
        valid += row["ok"]
        if not row["ok"]:
            count_reason(ctx.counts, "rejected", row["reason"] or "unknown")
    rows = [by_prompt[p.id] for p in prompts]
    ctx.write_jsonl("candidates.jsonl", rows)
    total = sum(len(r["candidates"]) for r in rows)
    ctx.counts.update({"prompts": len(rows), "candidates": total, "valid": valid, "plan": plan_stats})


STAGE = Stage("root", Config, run, needs=("sampled-topics", "tasks"), provides={"candidates": "candidates.jsonl"},
              roles=("junior",), calls=lambda config, cfg: cfg.count * cfg.candidates_per_prompt,
              tokens_per_call=(250, 150))
