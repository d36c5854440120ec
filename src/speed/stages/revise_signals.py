"""Stage ``revise-signals``: the teacher revises root candidates -> the revisor's SFT data.

For each root prompt, ``per_prompt`` valid candidates (seeded choice) are shown to the teacher
with the revision prompt; a revision that validates as an example of the prompt's kind becomes a
revisor SFT record (``prompt`` = the revision prompt with the original example, ``completion`` =
the revised example as JSON) in ``revise-signals/sft.jsonl``. Revisions that do not validate are
kept with their raw text and reason in ``revise-signals/rejected.jsonl``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..prompts import REVISION_SCHEMA, parse_revision, revise_messages
from ..runtime.configschema import check
from ..synth.records import Rejection
from . import Stage, provider
from .generation import (GenerationConfig, ask_in_shards, canonical_json, count_reason, llm_client, model_label,
                         request, sft_record)


@dataclass
class Config(GenerationConfig):
    per_prompt: int = 1
    max_tokens: int = 1024
    shard_size: int = 8

    def validate(self, where: str) -> None:
        super().validate(where)
        check(self.per_prompt >= 1, f"{where}.per_prompt", self.per_prompt, "must be >= 1")


def prompt_text(prompt: dict) -> str:
    return "\n\n".join(m["content"] for m in prompt["messages"] if m["role"] == "user")


def run(ctx) -> None:
    cfg: Config = ctx.cfg
    items = []
    for r in ctx.read_input("candidates"):
        valid = [c for c in r["candidates"] if c["ok"]]
        ctx.rng(r["id"]).shuffle(valid)
        for c in valid[:cfg.per_prompt]:
            items.append((r, c))

    def build(item):
        r, c = item
        msgs = revise_messages(prompt_text(r["prompt"]), canonical_json(c["fields"]))
        return request(msgs, cfg.sampling(), seed=ctx.item_seed(r["id"], c["sample"]), schema=REVISION_SCHEMA)

    def handle(item, comps):
        (r, c), comp = item, comps[0]
        parsed = parse_revision(r["prompt"]["kind"], comp.text, r["prompt"]["attributes"]) if comp.ok else None
        return [{"id": f"{r['id']}-{c['sample']}", "kind": r["prompt"]["kind"], "messages": build(item).messages,
                 "raw": comp.text, "ok": bool(parsed and parsed.ok),
                 "revision": parsed.value["revision"] if parsed and parsed.ok else None,
                 "original": c["fields"], "reason": "llm_error" if parsed is None else parsed.reason,
                 "detail": comp.error or (parsed.detail if parsed else "")}]

    rows = ask_in_shards(ctx, llm_client(ctx, "teacher"), items, build, handle)
    sft, rejected = [], []
    model = model_label(ctx, "teacher")
    for row in rows:
        if row["ok"]:
            sft.append(sft_record(row["messages"], row["revision"], id=row["id"], kind=row["kind"],
                                  changed=row["revision"] != row["original"]))
        else:
            rejected.append(Rejection(id=row["id"], stage=ctx.name, reason=row["reason"] or "unknown",
                                      raw=row["raw"], detail=row["detail"], kind=row["kind"], model=model))
            count_reason(ctx.counts, "rejected", rejected[-1].reason)
    ctx.write_jsonl("sft.jsonl", sft)
    ctx.write_jsonl("rejected.jsonl", rejected)
    ctx.counts.update({"requests": len(items), "records": len(sft), "changed": sum(r["changed"] for r in sft)})


STAGE = Stage("revise-signals", Config, run, needs=("candidates",), provides={"revision-sft": "sft.jsonl"},
              roles=("teacher",), tokens_per_call=(600, 400),
              calls=lambda config, cfg: config.stage(provider("candidates").name).count * cfg.per_prompt)
