"""Stage ``seed``: the teacher writes the seed set D_seed, the junior generator's SFT data.

Prompts are planned from (kind, task, topic, sampled attributes) with kinds in the configured
proportion (the paper's 7:7:7:2 by default). Outputs: ``seed/sft.jsonl`` (TRL conversational
prompt-completion records: ``prompt`` = the synthesis prompt as messages, ``completion`` = the
teacher's example as JSON), ``seed/examples.jsonl`` (the typed examples) and
``seed/rejected.jsonl`` (raw text and reason of every answer that did not validate).
"""

from __future__ import annotations

from dataclasses import dataclass

from . import Stage
from .generation import PlannedConfig, generate_examples, llm_client, model_label, planned_prompts, sft_record, split_rows


@dataclass
class Config(PlannedConfig):
    pass


def run(ctx) -> None:
    cfg: Config = ctx.cfg
    plan_stats: dict = {}
    prompts = planned_prompts(ctx, plan_stats)
    model = model_label(ctx, "teacher")
    rows = generate_examples(ctx, llm_client(ctx, "teacher"), prompts, cfg)
    examples, rejected = split_rows(ctx, rows, model)
    by_prompt = {p.id: p for p in prompts}
    sft = [sft_record(by_prompt[e.prompt_id].messages, e.fields, id=e.id, kind=e.kind) for e in examples]
    ctx.write_jsonl("sft.jsonl", sft)
    ctx.write_jsonl("examples.jsonl", examples)
    ctx.write_jsonl("rejected.jsonl", rejected)
    ctx.counts.update({"prompts": len(prompts), "valid": len(examples), "plan": plan_stats,
                       "by_kind": {k: sum(e.kind == k for e in examples) for k in plan_stats.get("by_kind", {})}})


STAGE = Stage("seed", Config, run, needs=("sampled-topics", "tasks"),
              provides={"seed-sft": "sft.jsonl", "seed-examples": "examples.jsonl"}, roles=("teacher",),
              calls=lambda config, cfg: cfg.count, tokens_per_call=(250, 150))
