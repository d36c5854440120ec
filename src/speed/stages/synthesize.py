"""Stage ``synthesize``: the senior generator writes the large set D_syn.

Same prompt machinery and proportions as ``seed`` (its own salt). Sharded: a killed run resumes at
the shard it was in, and the requests already answered are cache hits. Outputs
``synthesize/examples.jsonl`` (valid examples), ``synthesize/rejected.jsonl`` (raw text and
reason of every sample that did not validate).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..configschema import check
from ..planning import PAPER_PROPORTIONS, check_proportions, plan_prompts
from . import Stage
from .generation import GenerationConfig, generate_examples, llm_client, model_label, require_prompts, split_rows


@dataclass
class Config(GenerationConfig):
    count: int = 1000
    samples_per_prompt: int = 1
    proportions: dict[str, float] = field(default_factory=lambda: dict(PAPER_PROPORTIONS))

    def validate(self, where: str) -> None:
        super().validate(where)
        check(self.count >= 1, f"{where}.count", self.count, "must be >= 1")
        check(self.samples_per_prompt >= 1, f"{where}.samples_per_prompt", self.samples_per_prompt, "must be >= 1")
        check_proportions(self.proportions, f"{where}.proportions")


def run(ctx) -> None:
    cfg: Config = ctx.cfg
    plan_stats: dict = {}
    prompts = plan_prompts(ctx.seed, ctx.name, cfg.count, cfg.proportions, list(ctx.read_input("tasks")),
                           list(ctx.read_input("sampled-topics")), plan_stats)
    require_prompts(ctx, prompts, plan_stats)
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
