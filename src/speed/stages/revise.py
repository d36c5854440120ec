"""Stage ``revise``: the revisor revises each synthesized example in one pass.

The revisor sees the example's synthesis prompt (re-rendered from its kind, task, topic,
attributes and guideline plan) and the example. A revision that validates as an example of the
same kind replaces the original (``revised: true``); otherwise the original is kept and the raw
text and reason go to ``revise/failures.jsonl``. Output ``revise/examples.jsonl``: every input
example, revised or not, in input order.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..prompts import parse_example, parse_revision, revise_messages
from ..synth.planning import prompt_messages
from ..synth.records import Example, Rejection
from . import Stage, provider
from .generation import GenerationConfig, ask_in_shards, canonical_json, count_reason, llm_client, model_label, request


@dataclass
class Config(GenerationConfig):
    max_tokens: int = 1024


def parse_revisor_output(kind: str, text: str, attributes: dict):
    """A trained revisor writes the revised example; an untrained one may answer {reason, revision}."""
    direct = parse_example(kind, text, attributes)
    if direct.ok:
        return direct, direct.value
    wrapped = parse_revision(kind, text, attributes)
    if wrapped.ok:
        return wrapped, wrapped.value["revision"]
    return (wrapped if wrapped.reason == "bad_revision" else direct), None


def revise_examples(ctx, client, examples: list[Example], cfg) -> list[dict]:
    """Each example once through the revisor ``client`` (the generation path ``speed compare`` uses
    too); one row per example with its raw answer and the revised fields (None: kept as it was)."""

    def build(e):
        data_prompt = "\n\n".join(m["content"] for m in prompt_messages(
            {"kind": e.kind, "task": e.task, "topic": e.topic, "attributes": e.attributes,
             "guidelines": e.meta.get("guidelines", [])}) if m["role"] == "user")
        return request(revise_messages(data_prompt, canonical_json(e.fields)), cfg.sampling(), seed=ctx.item_seed(e.id))

    def handle(e, comps):
        c = comps[0]
        parsed, fields = parse_revisor_output(e.kind, c.text, e.attributes) if c.ok else (None, None)
        return [{"example": e.to_dict(), "raw": c.text, "fields": fields,
                 "length_ok": parsed.length_ok if parsed is not None and fields else None,
                 "reason": "llm_error" if parsed is None else parsed.reason,
                 "detail": c.error or (parsed.detail if parsed is not None else ""),
                 "prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens}]

    return ask_in_shards(ctx, client, examples, build, handle, cfg.shard_size)


def run(ctx) -> None:
    cfg: Config = ctx.cfg
    examples = [Example.from_dict(r) for r in ctx.read_input("synthetic-examples")]
    rows = revise_examples(ctx, llm_client(ctx, "revisor"), examples, cfg)
    out, failures = [], []
    model = model_label(ctx, "revisor")
    changed = 0
    for row in rows:
        e = Example.from_dict(row["example"])
        if row["fields"] is not None:
            changed += row["fields"] != e.fields
            e = dataclasses.replace(e, fields=row["fields"], revised=True, length_ok=row["length_ok"] or {},
                                    meta={**e.meta, "reviser": model, "original": e.fields})
        else:
            failures.append(Rejection(id=e.id, stage=ctx.name, reason=row["reason"] or "unknown", raw=row["raw"],
                                      detail=row["detail"], kind=e.kind, prompt_id=e.prompt_id, sample=e.sample,
                                      model=model))
            count_reason(ctx.counts, "kept_original", failures[-1].reason)
        out.append(e)
    ctx.write_jsonl("examples.jsonl", out)
    ctx.write_jsonl("failures.jsonl", failures)
    ctx.counts.update({"input": len(examples), "revised": sum(e.revised for e in out), "changed": changed,
                       "kept_original": len(failures)})


STAGE = Stage("revise", Config, run, needs=("synthetic-examples",), provides={"revised-examples": "examples.jsonl"},
              roles=("revisor",), tokens_per_call=(600, 250),
              calls=lambda config, cfg: (lambda s: s.count * s.samples_per_prompt)(
                  config.stage(provider("synthetic-examples").name)))
