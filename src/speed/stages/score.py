"""Stage ``score``: optionally, the teacher rates each example (or a fixed sample) on a short rubric.

Off by default (``enabled: false``: the rows pass through and no model is called). On, the teacher
(temperature 0) gives 1-5 scores for query realism, positive relevance, negative hardness and validity
(``speed.prompts.rubric``, ``SCORE_KEYS``) to every unique example, or to a seeded random ``sample`` of
them; calls are cached and counted like every other call, in resumable shards.

Output ``score/examples.jsonl``: the ``dedup`` rows in their order, each with ``scores`` (the four
criteria, or null), ``score`` (their mean, or null) and ``score_reason`` (null when scored, else
``not_sampled``, or why the verdict was not usable: its raw text is in ``score/unscored.jsonl``). The
export's ``min_score`` filters on ``score``; the column is kept in the export.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..runtime.configschema import check
from . import Stage, provider
from .generation import GenerationConfig, ask_in_shards, count_reason, llm_client, request


@dataclass
class Config(GenerationConfig):
    enabled: bool = False
    sample: int | None = None  # null: every example; N: a seeded random sample of N
    temperature: float = 0.0
    max_tokens: int = 96
    shard_size: int = 16

    def validate(self, where: str) -> None:
        super().validate(where)
        check(self.sample is None or self.sample >= 1, f"{where}.sample", self.sample,
              "must be null (every example) or >= 1")


def run(ctx) -> None:
    from ..prompts.parse import parse_rubric
    from ..prompts.rubric import SCORE_KEYS, rubric_mean, rubric_messages
    from ..synth.records import Example

    cfg: Config = ctx.cfg
    rows = list(ctx.read_input("unique-examples"))
    chosen: set[str] = set()
    if cfg.enabled:
        ids = [r["id"] for r in rows]
        chosen = set(ids if cfg.sample is None or cfg.sample >= len(ids) else ctx.rng("sample").sample(ids, cfg.sample))
    todo = [r for r in rows if r["id"] in chosen]

    def build(r):
        e = Example.from_dict(r)
        return request(rubric_messages(e.kind, e.task, e.query, e.positive, e.negative or None, keys=SCORE_KEYS),
                       cfg.sampling(), seed=ctx.item_seed(r["id"]))

    def handle(r, comps):
        c = comps[0]
        p = parse_rubric(c.text, SCORE_KEYS) if c.ok else None
        ok = bool(p and p.ok)
        return [{"id": r["id"], "scores": p.value if ok else None, "raw": c.text, "error": c.error,
                 "reason": None if ok else ("llm_error" if p is None else p.reason)}]

    verdicts = {v["id"]: v for v in ask_in_shards(ctx, llm_client(ctx, "teacher"), todo, build, handle)} if todo else {}
    out, unscored = [], []
    for r in rows:
        v = verdicts.get(r["id"])
        scores = v["scores"] if v else None
        reason = "not_sampled" if v is None else v["reason"]
        if v is not None and v["reason"]:
            unscored.append({"id": r["id"], "reason": v["reason"], "raw": v["raw"], "error": v["error"]})
            count_reason(ctx.counts, "unscored", v["reason"])
        out.append({**r, "scores": scores, "score_reason": reason,
                    "score": rubric_mean(scores)})
    ctx.write_jsonl("examples.jsonl", out)
    ctx.write_jsonl("unscored.jsonl", unscored)
    vals = [r["score"] for r in out if r["score"] is not None]
    ctx.counts.update({"enabled": cfg.enabled, "rows": len(rows), "asked": len(todo), "scored": len(vals),
                       "mean_score": round(sum(vals) / len(vals), 4) if vals else None})


def _calls(config, cfg) -> int:
    if not cfg.enabled:
        return 0
    n = config.stage(provider("synthetic-examples").name).count  # at most: dedup only removes
    return n if cfg.sample is None else min(n, cfg.sample)


def summary(entry: dict, run_dir=None) -> list[str]:
    c = entry.get("counts", {})
    if not c.get("enabled"):
        return []
    return [f"teacher scores: {c.get('scored')} of {c.get('rows')} examples, mean {c.get('mean_score')} (1-5)"]


STAGE = Stage("score", Config, run, needs=("unique-examples",), provides={"scored-examples": "examples.jsonl"},
              roles=("teacher",), optional_roles=("teacher",), calls=_calls, tokens_per_call=(450, 40),
              summary=summary)
