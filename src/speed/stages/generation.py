"""The one generation path: what every model-calling stage (and ``speed compare``) shares.

``llm_client(ctx, role)`` is a role's client for a stage (cached, counted in the run's ledger);
``ask_in_shards(ctx, client, items, build, handle)`` is the body of a model-calling stage: items in
resumable shards, one request per item, rows made of the answers; ``generate_examples`` is that for
the example-writing stages (seed, root, synthesize). Plus sampling settings and row helpers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..prompts import example_schema, parse_example
from ..runtime.configschema import check
from ..synth.planning import PAPER_PROPORTIONS, check_proportions, plan_prompts
from ..synth.records import Example, Rejection


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


@dataclass
class PlannedConfig(GenerationConfig):
    """A stage that plans its own synthesis prompts: how many, in which kind proportions."""

    count: int = 100
    proportions: dict[str, float] = field(default_factory=lambda: dict(PAPER_PROPORTIONS))

    def validate(self, where: str) -> None:
        super().validate(where)
        check(self.count >= 1, f"{where}.count", self.count, "must be >= 1")
        check_proportions(self.proportions, f"{where}.proportions")


def planned_prompts(ctx, stats: dict, tasks: str = "tasks") -> list:
    """The stage's prompts, planned from the run's tasks and topics with its own salt (its name); none
    (no brainstormed task of the kinds asked, no topic) is a one-line error."""
    prompts = plan_prompts(ctx.seed, ctx.name, ctx.cfg.count, ctx.cfg.proportions, list(ctx.read_input(tasks)),
                           list(ctx.read_input("sampled-topics")), stats)
    if prompts:
        return prompts
    from ..errors import InputError
    from . import provider

    missing = ", ".join(sorted(stats.get("not_planned_no_task", {}))) or "any"
    raise InputError(f"{ctx.input_path(tasks)}: stage {ctx.name} has nothing to prompt with: "
                     f"no task (or topic) for the kinds {missing}; see {provider(tasks).name}/rejected.jsonl "
                     "for why, or change proportions")


def llm_client(ctx, role: str):
    """The LLM client of ``role`` for stage ``ctx``: cached and counted in the run's ledger."""
    from ..llm import llama_server
    from ..llm.cache import RequestCache
    from ..llm.client import LLMClient
    from ..llm.ledger import Ledger

    llama_server.set_log_dir(ctx.rundir.path / "logs")  # a managed llama-server logs into the run
    cache_path = ctx.config.run.cache or (ctx.rundir.path / "cache.sqlite")
    return LLMClient(ctx.model_ref(role), role=role, stage=ctx.name, cache=RequestCache(cache_path),
                     ledger=Ledger(ctx.rundir.path / "ledger.jsonl"))


def ask_in_shards(ctx, client, items, build, handle, shard_size: int | None = None) -> list:
    """``items`` in resumable shards (``ctx.cfg.shard_size``): ``build(item)`` is an item's request,
    ``handle(item, completions)`` the rows made of its answers. Returns every row, in item order;
    the client is closed at the end."""

    from ..executors import SharedWork

    def work(chunk, index):
        rows = []
        for item, comps in zip(chunk, client.generate([build(it) for it in chunk], desc=ctx.name)):
            rows.extend(handle(item, comps))
        return rows

    shards = SharedWork(work, client.shared(), client.attach)  # a Ray worker reaches cache and ledger via handles
    try:
        if getattr(client.ref, "batch", False):  # Batch API: the stage's open shards in as few batches as allowed, first
            size = shard_size or ctx.cfg.shard_size
            todo = [it for i in range(0, len(items), size) if not all(p.exists() for p in ctx.shard_paths(i // size))
                    for it in items[i:i + size]]
            client.prefetch([build(it) for it in todo])
        return list(ctx.map_shards(items, shard_size or ctx.cfg.shard_size, shards, desc=f"{ctx.name} shards"))
    finally:
        client.close()


def generate_examples(ctx, client, prompts, cfg, samples: int = 1, keep_tokens: bool = False) -> list[dict]:
    """Run prompts through ``client``'s model in shards; one row per (prompt, sample) (with its
    token counts when ``keep_tokens``)."""

    def build(p):
        return request(p.messages, cfg.sampling(), seed=ctx.item_seed(p.id), n=samples, schema=example_schema(p.kind))

    def handle(p, comps):
        rows = []
        for c in comps:
            parsed = parse_example(p.kind, c.text, p.attributes) if c.ok else None
            rows.append({"prompt": p.to_dict(), "sample": c.index, "raw": c.text, "error": c.error,
                         "finish_reason": c.finish_reason,
                         "ok": bool(parsed and parsed.ok), "fields": parsed.value if parsed and parsed.ok else None,
                         "reason": "llm_error" if parsed is None else parsed.reason,
                         "detail": c.error or (parsed.detail if parsed else ""),
                         "parsed_json": bool(parsed and (parsed.ok or parsed.reason not in ("no_json", "invalid_json"))),
                         "length_ok": parsed.length_ok if parsed else {}})
            if keep_tokens:
                rows[-1].update(prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens)
        return rows

    return ask_in_shards(ctx, client, prompts, build, handle, cfg.shard_size)


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


def split_rows(ctx, rows, model: str):
    examples, rejected = [], []
    for row in rows:
        if row["ok"]:
            examples.append(to_example(row, model))
        else:
            rejected.append(to_rejection(row, ctx.name, model))
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
