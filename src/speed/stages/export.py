"""Stage ``export``: the final dataset, a sentence-transformers view, quality signals, a data card.

Outputs in ``export/``:
- ``data.jsonl`` and ``data.parquet`` (what ``datasets.load_dataset`` reads): one row per example
  with ``id, kind, task, query, positive, negative`` ("" where the kind has none), ``topic``,
  ``model``, ``revised`` and the quality signals ``length_ok, sim_pos, sim_neg, margin,
  false_negative`` (cosines by the reference embedder);
- ``st_triplets.jsonl`` (anchor, positive, negative: kinds with a hard negative) and
  ``st_pairs.jsonl`` (anchor, positive: matching kinds, in-batch negatives only);
- ``filtered.jsonl``: rows dropped as likely false negatives (their negative is as close to the query
  as the positive), with the reason: those of ``false_negative_kinds`` (default ``[sts]``) always,
  every kind with ``drop_false_negatives``;
- ``DATACARD.md``: counts by kind, the funnel (prompted -> parsed -> valid -> revised -> kept),
  quality and the cost of the run so far.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..llm.ledger import iter_ledger, summarize, totals
from ..runtime.configschema import check
from ..synth.records import TRIPLET_KEYS, Example
from . import Stage

COLUMNS = ("id", "kind", "task", "query", "positive", "negative", "topic", "model", "revised", "length_ok",
           "sim_pos", "sim_neg", "margin", "false_negative")


@dataclass
class Config:
    quality: bool = True
    drop_false_negatives: bool = False  # every kind
    # kinds whose likely false negatives are dropped even with drop_false_negatives off (quality on): an STS
    # triple whose "less similar" S3 is as close to S1 as S2 is teaches nothing (three near-paraphrases)
    false_negative_kinds: list[str] = field(default_factory=lambda: ["sts"])
    false_negative_margin: float = 0.0
    batch_size: int = 64

    def validate(self, where: str) -> None:
        check(-1.0 <= self.false_negative_margin <= 1.0, f"{where}.false_negative_margin",
              self.false_negative_margin, "must be in [-1, 1]")
        check(self.batch_size >= 1, f"{where}.batch_size", self.batch_size, "must be >= 1")
        from ..prompts.schemas import TASK_KINDS

        for i, k in enumerate(self.false_negative_kinds):
            check(k in TASK_KINDS, f"{where}.false_negative_kinds[{i}]", k, "one of " + ", ".join(TASK_KINDS))
        check(self.quality or not self.drop_false_negatives, f"{where}.drop_false_negatives",
              self.drop_false_negatives, "needs quality: true (the filter uses the similarity signals)")


def _row(e: Example, signals: dict | None) -> dict:
    row = {"id": e.id, "kind": e.kind, "task": e.task, "query": e.query, "positive": e.positive,
           "negative": e.negative, "topic": e.topic, "model": e.model, "revised": bool(e.revised)}
    sig = signals or {}
    for k in ("length_ok", "sim_pos", "sim_neg", "margin", "false_negative"):
        row[k] = sig.get(k)
    return row


def write_parquet(path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..io import atomic_writer

    schema = pa.schema([("id", pa.string()), ("kind", pa.string()), ("task", pa.string()), ("query", pa.string()),
                        ("positive", pa.string()), ("negative", pa.string()), ("topic", pa.string()),
                        ("model", pa.string()), ("revised", pa.bool_()), ("length_ok", pa.bool_()),
                        ("sim_pos", pa.float64()), ("sim_neg", pa.float64()), ("margin", pa.float64()),
                        ("false_negative", pa.bool_())])
    table = pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema=schema)
    with atomic_writer(path, "wb") as fh:
        pq.write_table(table, fh)


def run(ctx) -> None:
    cfg: Config = ctx.cfg
    examples = [Example.from_dict(r) for r in ctx.read_input("unique-examples")]
    signals = [None] * len(examples)
    if cfg.quality and examples:
        from ..synth.quality import load_embedder, similarity_signals

        ref = ctx.config.models.get("reference_embedder")
        if ref is None:
            from ..runtime.config import ModelRef

            ref = ModelRef(backend="sentence-transformers", model="all-minilm-l6-v2")
        signals = similarity_signals(examples, load_embedder(ref), batch_size=cfg.batch_size,
                                     fn_margin=cfg.false_negative_margin)
    rows, filtered = [], []
    for e, sig in zip(examples, signals):
        row = _row(e, sig)
        if row["false_negative"] and (cfg.drop_false_negatives or row["kind"] in cfg.false_negative_kinds):
            filtered.append({**row, "reason": "false_negative"})
        else:
            rows.append(row)
    if not rows:
        print(f"[{ctx.name}] warning: 0 examples to export ({len(examples)} reached it, {len(filtered)} filtered); "
              "see the rejected / removed files of the earlier stages (speed status)", flush=True)
    ctx.write_jsonl("data.jsonl", rows)
    write_parquet(ctx.dir / "data.parquet", rows)
    ctx.register_output("data.parquet", rows=len(rows))
    ctx.write_jsonl("st_triplets.jsonl", ({"anchor": r["query"], "positive": r["positive"], "negative": r["negative"]}
                                          for r in rows if TRIPLET_KEYS[r["kind"]][2] is not None))
    ctx.write_jsonl("st_pairs.jsonl", ({"anchor": r["query"], "positive": r["positive"]}
                                       for r in rows if TRIPLET_KEYS[r["kind"]][2] is None))
    ctx.write_jsonl("filtered.jsonl", filtered)
    by_kind = {}
    for r in rows:
        by_kind[r["kind"]] = by_kind.get(r["kind"], 0) + 1
    syn, rev, ded = (ctx.input_counts(a) for a in ("synthetic-examples", "revised-examples", "unique-examples"))
    funnel = {"prompted": syn.get("samples"), "parsed": syn.get("parsed"), "valid": syn.get("valid"),
              "revised": rev.get("revised"), "after_dedup": len(examples), "kept": len(rows)}
    margins = [r["margin"] for r in rows if r["margin"] is not None]
    fns = [r["false_negative"] for r in rows if r["false_negative"] is not None]
    lens = [r["length_ok"] for r in rows if r["length_ok"] is not None]
    quality = {"mean_margin": round(sum(margins) / len(margins), 4) if margins else None,
               "false_negative_rate": round(sum(fns) / len(fns), 4) if fns else None,
               "length_adherence": round(sum(lens) / len(lens), 4) if lens else None,
               "filtered_false_negatives": len(filtered)}
    usage = summarize(iter_ledger(ctx.rundir.path / "ledger.jsonl"))
    ctx.counts.update({"rows": len(rows), "by_kind": by_kind, "funnel": funnel, "quality": quality,
                       "dedup_removed": (ded.get("removed_exact", 0) or 0) + (ded.get("removed_near", 0) or 0)})
    from ..io import atomic_write_text

    atomic_write_text(ctx.dir / "DATACARD.md", datacard(ctx.config.run.name, by_kind, funnel, quality, usage))
    ctx.register_output("DATACARD.md")


def datacard(name: str, by_kind: dict, funnel: dict, quality: dict, usage: dict) -> str:
    lines = [f"# Data card: {name}", "", "Synthetic text-embedding training data made with speed (the SPEED method).",
             "", "## Examples by kind", "", "| kind | rows |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(by_kind.items())]
    lines += [f"| **total** | {sum(by_kind.values())} |", "", "## Funnel", "", "| step | rows |", "|---|---|"]
    lines += [f"| {k} | {'-' if v is None else v} |" for k, v in funnel.items()]
    lines += ["", "## Quality (reference embedder)", "", "| signal | value |", "|---|---|"]
    lines += [f"| {k} | {'-' if v is None else v} |" for k, v in quality.items()]
    lines += ["", "## Cost (model calls recorded in the ledger)", "",
              "| role | model | calls | cache hits | prompt tokens | completion tokens |", "|---|---|---|---|---|---|"]
    for role, models in sorted(usage.items()):
        for model, t in sorted(models.items()):
            lines.append(f"| {role} | {model} | {t['calls']} | {t['cache_hits']} | {t['prompt_tokens']} | "
                         f"{t['completion_tokens']} |")
    tot = totals(usage)
    lines += [f"| **all** | | {tot['calls']} | {tot['cache_hits']} | {tot['prompt_tokens']} | {tot['completion_tokens']} |",
              "", "Columns of `data.parquet` / `data.jsonl`: " + ", ".join(f"`{c}`" for c in COLUMNS) + ".", ""]
    return "\n".join(lines)


def summary(entry: dict, run_dir) -> list[str]:
    c = entry.get("counts", {})
    return [f"examples exported: {c.get('rows')} by kind {c.get('by_kind')}; funnel {c.get('funnel')}"]


STAGE = Stage("export", Config, run, needs=("unique-examples",), provides={"training-data": "data.jsonl"},
              roles=("reference_embedder",), optional_roles=("reference_embedder",), summary=summary)
