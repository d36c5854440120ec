"""Stage ``judge``: the teacher (temperature 0) picks the best and worst root candidate per prompt.

Output ``judge/dpo.jsonl``: TRL conversational preference records (``prompt`` = the synthesis
prompt as messages, ``chosen`` / ``rejected`` = the best / worst candidate as an assistant message).
The chosen answer is the best candidate's validated example as JSON; the rejected one is the worst
candidate's raw text. Prompts with fewer than two distinct candidates, an unparseable verdict, or
an unparseable best candidate are recorded in ``judge/skipped.jsonl`` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..prompts import JUDGE_SCHEMA, judge_messages, parse_judge
from . import Stage, provider
from .generation import GenerationConfig, ask_in_shards, canonical_json, count_reason, llm_client, request


@dataclass
class Config(GenerationConfig):
    temperature: float = 0.0
    max_tokens: int = 256
    shard_size: int = 8
    min_valid: int = 1  # prompts with fewer parseable candidates are skipped without a teacher call


def _text(prompt: dict) -> str:
    return "\n\n".join(m["content"] for m in prompt["messages"] if m["role"] == "user")


def run(ctx) -> None:
    cfg: Config = ctx.cfg
    roots = list(ctx.read_input("candidates"))
    todo, skipped = [], []
    for r in roots:
        seen, cands = set(), []
        for c in r["candidates"]:
            key = " ".join(c["raw"].split())
            if key and key not in seen:
                seen.add(key)
                cands.append(c)
        n_valid = sum(c["ok"] for c in cands)
        if n_valid < max(1, cfg.min_valid):
            skipped.append({"id": r["id"], "reason": "all_unparseable", "candidates": len(cands)})
        elif len(cands) < 2:
            skipped.append({"id": r["id"], "reason": "fewer_than_two_distinct", "candidates": len(cands)})
        else:
            todo.append((r, cands))

    def build(item):
        r, cands = item
        return request(judge_messages(_text(r["prompt"]), [c["raw"] for c in cands]), cfg.sampling(),
                       seed=ctx.item_seed(r["id"]), schema=JUDGE_SCHEMA)

    def handle(item, comps):
        (r, cands), c = item, comps[0]
        verdict = parse_judge(c.text, len(cands)) if c.ok else None
        row = {"id": r["id"], "raw": c.text, "error": c.error}
        if verdict is None or not verdict.ok:
            row.update(ok=False, reason="llm_error" if verdict is None else verdict.reason)
        else:
            best, worst = cands[verdict.value["best"]], cands[verdict.value["worst"]]
            if not best["ok"]:
                row.update(ok=False, reason="best_unparseable", verdict=verdict.value)
            else:
                row.update(ok=True, verdict=verdict.value, prompt=r["prompt"]["messages"], kind=r["prompt"]["kind"],
                           chosen=canonical_json(best["fields"]), rejected=worst["raw"],
                           chosen_sample=best["sample"], rejected_sample=worst["sample"])
        return [row]

    verdicts = ask_in_shards(ctx, llm_client(ctx, "teacher"), todo, build, handle)
    dpo = []
    for v in verdicts:
        if v["ok"]:
            dpo.append({"id": v["id"], "kind": v["kind"], "prompt": v["prompt"],
                        "chosen": [{"role": "assistant", "content": v["chosen"]}],
                        "rejected": [{"role": "assistant", "content": v["rejected"]}],
                        "reason": v["verdict"]["reason"]})
        else:
            skipped.append({"id": v["id"], "reason": v["reason"], "raw": v["raw"], "error": v["error"]})
    for s in skipped:
        count_reason(ctx.counts, "skipped", s["reason"])
    ctx.write_jsonl("dpo.jsonl", dpo)
    ctx.write_jsonl("skipped.jsonl", skipped)
    ctx.counts.update({"prompts": len(roots), "judged": len(todo), "pairs": len(dpo)})


STAGE = Stage("judge", Config, run, needs=("candidates",), provides={"preferences": "dpo.jsonl"}, roles=("teacher",),
              calls=lambda config, cfg: config.stage(provider("candidates").name).count, tokens_per_call=(950, 250))
