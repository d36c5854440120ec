"""What the model-calling stages share: sampling settings, request building, row helpers."""

from __future__ import annotations

import json
from dataclasses import dataclass

from ..configschema import check
from ..prompts import example_schema, parse_example
from ..records import Example, Rejection


@dataclass
class GenerationConfig:
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 768
    shard_size: int = 16

    def validate(self, where: str) -> None:
        check(0.0 <= self.temperature <= 2.0, f"{where}.temperature", self.temperature, "must be in [0, 2]")
        check(0.0 < self.top_p <= 1.0, f"{where}.top_p", self.top_p, "must be in (0, 1]")
        check(self.max_tokens >= 16, f"{where}.max_tokens", self.max_tokens, "must be >= 16")
        check(self.shard_size >= 1, f"{where}.shard_size", self.shard_size, "must be >= 1")

    def sampling(self, temperature: float | None = None):
        from ..llm.backends.base import SamplingParams

        return SamplingParams(temperature=self.temperature if temperature is None else temperature,
                              top_p=self.top_p, max_tokens=self.max_tokens)


def request(messages, sampling, seed: int, n: int = 1, schema: dict | None = None, **meta):
    from ..llm.backends.base import Request

    return Request(messages=messages, sampling=sampling, seed=seed, n=n, json_schema=schema, meta=meta)


def canonical_json(fields: dict) -> str:
    """The example as the answer a generator is trained to write."""
    return json.dumps(fields, ensure_ascii=False, indent=2)


def count_reason(counts: dict, key: str, reason: str) -> None:
    bucket = counts.setdefault(key, {})
    bucket[reason] = bucket.get(reason, 0) + 1


def load_rows(ctx, stage: str, filename: str) -> list[dict]:
    return list(ctx.read_input(stage, filename))


def require_prompts(ctx, prompts: list, stats: dict) -> None:
    """No prompt could be planned (no brainstorm task of the kinds asked, no topic): a one-line error."""
    if prompts:
        return
    from ..errors import InputError

    missing = ", ".join(sorted(stats.get("not_planned_no_task", {}))) or "any"
    raise InputError(f"{ctx.input_path('brainstorm', 'tasks.jsonl')}: stage {ctx.name} has nothing to prompt with: "
                     f"no task (or topic) for the kinds {missing}; see brainstorm/rejected.jsonl for why, "
                     "or change proportions")


def generate_examples(ctx, role: str, prompts, cfg, samples: int = 1, desc: str = "generate"):
    """Run prompts through ``role``'s model in shards; yield one row per (prompt, sample)."""
    client = ctx.llm(role)

    def work(chunk, index):
        reqs = [request(p.messages, cfg.sampling(), seed=ctx.item_seed(p.id), n=samples,
                        schema=example_schema(p.kind)) for p in chunk]
        rows = []
        for p, comps in zip(chunk, client.generate(reqs, desc=desc)):
            for c in comps:
                parsed = parse_example(p.kind, c.text, p.attributes) if c.ok else None
                rows.append({"prompt": p.to_dict(), "sample": c.index, "raw": c.text, "error": c.error,
                             "finish_reason": c.finish_reason,
                             "ok": bool(parsed and parsed.ok), "fields": parsed.value if parsed and parsed.ok else None,
                             "reason": "llm_error" if parsed is None else parsed.reason,
                             "detail": c.error or (parsed.detail if parsed else ""),
                             "parsed_json": bool(parsed and (parsed.ok or parsed.reason not in ("no_json", "invalid_json"))),
                             "length_ok": parsed.length_ok if parsed else {}})
        return rows

    try:
        yield from ctx.map_shards(prompts, cfg.shard_size, work, desc=f"{desc} shards")
    finally:
        client.close()


def to_example(row: dict, model: str) -> Example:
    p = row["prompt"]
    return Example(id=f"{p['id']}-{row['sample']}", kind=p["kind"], task=p["task"], topic=p["topic"],
                   fields=row["fields"], attributes=p["attributes"], model=model, length_ok=row["length_ok"],
                   prompt_id=p["id"], sample=row["sample"],
                   meta={"guidelines": p["guidelines"], "topic_id": p["topic_id"]})


def to_rejection(row: dict, stage: str, model: str) -> Rejection:
    p = row["prompt"]
    return Rejection(id=f"{p['id']}-{row['sample']}", stage=stage, reason=row["reason"] or "unknown",
                     raw=row["raw"], detail=row["detail"], kind=p["kind"], prompt_id=p["id"],
                     sample=row["sample"], model=model)


def split_rows(ctx, rows, stage: str, model: str):
    examples, rejected = [], []
    for row in rows:
        if row["ok"]:
            examples.append(to_example(row, model))
        else:
            rejected.append(to_rejection(row, stage, model))
            count_reason(ctx.counts, "rejected", rejected[-1].reason)
    return examples, rejected


def sft_record(messages, fields: dict, **meta) -> dict:
    return {"prompt": messages, "completion": [{"role": "assistant", "content": canonical_json(fields)}], **meta}


def model_label(ctx, role: str) -> str:
    """How rows name their generator: the model, plus the adapter's stage when one is attached."""
    ref = ctx.model_ref(role)
    if not ref.adapter:
        return ref.model
    from pathlib import Path

    adapter = Path(ref.adapter)
    owner = adapter.parent.name if adapter.parent.parent == ctx.rundir.path else str(adapter)
    return f"{ref.model}+{owner}"
