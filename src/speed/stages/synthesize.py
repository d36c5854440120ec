"""Stage ``synthesize``: the senior generator writes the large set D_syn.

Same prompt machinery and proportions as ``seed`` (its own salt). Sharded: a killed run resumes at
the shard it was in, and the requests already answered are cache hits. Outputs
``synthesize/examples.jsonl`` (valid examples), ``synthesize/rejected.jsonl`` (raw text and
reason of every sample that did not validate).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..runtime.configschema import check
from . import Stage
from .generation import PlannedConfig, generate_examples, llm_client, model_label, planned_prompts, split_rows


@dataclass
class Config(PlannedConfig):
    count: int = 1000
    samples_per_prompt: int = 1

    def validate(self, where: str) -> None:
        super().validate(where)
        check(self.samples_per_prompt >= 1, f"{where}.samples_per_prompt", self.samples_per_prompt, "must be >= 1")


def run(ctx) -> None:
    cfg: Config = ctx.cfg
    plan_stats: dict = {}
    prompts = planned_prompts(ctx, plan_stats)
    model = model_label(ctx, "senior")
    rows = generate_examples(ctx, llm_client(ctx, "senior"), prompts, cfg, samples=cfg.samples_per_prompt)
    examples, rejected = split_rows(ctx, rows, model)
    ctx.write_jsonl("examples.jsonl", examples)
    ctx.write_jsonl("rejected.jsonl", rejected)
    ctx.counts.update({"prompts": len(prompts), "samples": len(rows), "parsed": sum(r["parsed_json"] for r in rows),
                       "valid": len(examples), "plan": plan_stats,
                       "by_kind": {k: sum(e.kind == k for e in examples) for k in plan_stats.get("by_kind", {})}})


STAGE = Stage("synthesize", Config, run, needs=("sampled-topics", "tasks"),
              provides={"synthetic-examples": "examples.jsonl"}, roles=("senior",),
              calls=lambda config, cfg: cfg.count * cfg.samples_per_prompt, tokens_per_call=(250, 150))
