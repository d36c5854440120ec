"""Stage ``export``: the final dataset, a sentence-transformers view, quality signals, the filters, a data card.

Reads the ``score`` stage's rows (the unique examples, with the teacher's scores when that stage is
on), computes the reference embedder's signals and applies the data filters of
:mod:`speed.synth.filters` (teacher score threshold, false negatives, round trip, mined negatives;
their keys are this stage's, see ``FilterSettings``). Outputs in ``export/``:

- ``data.jsonl`` and ``data.parquet`` (what ``datasets.load_dataset`` reads): one row per example
  with ``id, kind, task, query, positive, negative`` ("" where the kind has none), ``topic``,
  ``model``, ``revised``, the quality signals ``length_ok, sim_pos, sim_neg, margin,
  false_negative`` (cosines by the reference embedder), the teacher's ``score`` / ``scores``,
  ``round_trip_rank``, ``negative_source`` (generated / mined / none) and ``mined_negative`` (with
  ``mine_negatives: add``);
- ``st_triplets.jsonl`` (anchor, positive, negative: a row with a negative; a second line for an
  added mined negative) and ``st_pairs.jsonl`` (anchor, positive: rows without a negative);
- ``filtered.jsonl``: every row a filter dropped (``action: dropped``) and every negative it
  stripped or replaced (``action: stripped / replaced``, the old text kept), with the reason and the
  values that decided it;
- ``DATACARD.md``: counts by kind, the funnel (prompted -> parsed -> valid -> revised -> kept), each
  filter's funnel (in, kept, dropped by reason, changed), quality and the cost of the run so far.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..llm.ledger import iter_ledger, summarize, totals
from ..runtime.configschema import check
from ..synth.filters import FilterSettings
from ..synth.records import Example
from . import Stage

COLUMNS = ("id", "kind", "task", "query", "positive", "negative", "topic", "model", "revised", "length_ok",
           "sim_pos", "sim_neg", "margin", "false_negative", "score", "scores", "round_trip_rank", "negative_source",
           "mined_negative")


@dataclass
class Config(FilterSettings):
    quality: bool = True  # the reference embedder's signals (and the filters that use them)
    batch_size: int = 64

    def validate(self, where: str) -> None:
        super().validate(where)
        check(self.batch_size >= 1, f"{where}.batch_size", self.batch_size, "must be >= 1")
        for key, on in (("round_trip", self.round_trip), ("mine_negatives", self.mine_negatives != "off")):
            check(self.quality or not on, f"{where}.{key}", getattr(self, key),
                  "needs quality: true (the filter uses the reference embedder)")


def _row(e: Example, signals: dict | None, scored: dict) -> dict:
    row = {"id": e.id, "kind": e.kind, "task": e.task, "query": e.query, "positive": e.positive,
           "negative": e.negative, "topic": e.topic, "model": e.model, "revised": bool(e.revised)}
    sig = signals or {}
    for k in ("length_ok", "sim_pos", "sim_neg", "margin"):
        row[k] = sig.get(k)
    row.update(score=scored.get("score"), scores=scored.get("scores"))
    return row


def write_parquet(path, rows: list[dict]) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..io import atomic_writer
    from ..prompts.rubric import SCORE_KEYS

    schema = pa.schema([("id", pa.string()), ("kind", pa.string()), ("task", pa.string()), ("query", pa.string()),
                        ("positive", pa.string()), ("negative", pa.string()), ("topic", pa.string()),
                        ("model", pa.string()), ("revised", pa.bool_()), ("length_ok", pa.bool_()),
                        ("sim_pos", pa.float64()), ("sim_neg", pa.float64()), ("margin", pa.float64()),
                        ("false_negative", pa.bool_()), ("score", pa.float64()),
                        ("scores", pa.struct([(k, pa.int64()) for k in SCORE_KEYS])),
                        ("round_trip_rank", pa.int64()), ("negative_source", pa.string()),
                        ("mined_negative", pa.string())])
    table = pa.Table.from_pylist([{c: r.get(c) for c in COLUMNS} for r in rows], schema=schema)
    with atomic_writer(path, "wb") as fh:
        pq.write_table(table, fh)


def st_views(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """(triplets, pairs) for sentence-transformers: a row with a negative is a triplet (and, with a mined
    negative added next to it, a second triplet); a row without one is a pair."""
    triplets, pairs = [], []
    for r in rows:
        negs = [n for n in (r.get("negative"), r.get("mined_negative")) if n]
        if not negs:
            pairs.append({"anchor": r["query"], "positive": r["positive"]})
        triplets += [{"anchor": r["query"], "positive": r["positive"], "negative": n} for n in negs]
    return triplets, pairs


def run(ctx) -> None:
    from ..synth.filters import apply

    cfg: Config = ctx.cfg
    src = list(ctx.read_input("scored-examples"))
    examples = [Example.from_dict(r) for r in src]
    signals, model = [None] * len(examples), None
    if cfg.quality and examples:
        from ..synth.quality import load_embedder, similarity_signals

        ref = ctx.config.models.get("reference_embedder")
        if ref is None:
            from ..runtime.config import ModelRef

            ref = ModelRef(backend="sentence-transformers", model="all-minilm-l6-v2")
        model = load_embedder(ref)
        signals = similarity_signals(examples, model, batch_size=cfg.batch_size)
    result = apply([_row(e, sig, r) for e, sig, r in zip(examples, signals, src)], cfg, model=model,
                   batch_size=cfg.batch_size)
    rows, filtered = result.rows, result.rejected
    if not rows:
        print(f"[{ctx.name}] warning: 0 examples to export ({len(examples)} reached it, {len(filtered)} filtered); "
              "see the rejected / removed files of the earlier stages (speed status)", flush=True)
    ctx.write_jsonl("data.jsonl", rows)
    write_parquet(ctx.dir / "data.parquet", rows)
    ctx.register_output("data.parquet", rows=len(rows))
    triplets, pairs = st_views(rows)
    ctx.write_jsonl("st_triplets.jsonl", triplets)
    ctx.write_jsonl("st_pairs.jsonl", pairs)
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
    scores = [r["score"] for r in rows if r["score"] is not None]
    quality = {"mean_margin": round(sum(margins) / len(margins), 4) if margins else None,
               "false_negative_rate": round(sum(fns) / len(fns), 4) if fns else None,
               "length_adherence": round(sum(lens) / len(lens), 4) if lens else None,
               "mean_teacher_score": round(sum(scores) / len(scores), 4) if scores else None,
               "filtered": sum(f["action"] == "dropped" for f in filtered)}
    usage = summarize(iter_ledger(ctx.rundir.path / "ledger.jsonl"))
    ctx.counts.update({"rows": len(rows), "by_kind": by_kind, "funnel": funnel, "quality": quality,
                       "filters": result.funnel,
                       "dedup_removed": (ded.get("removed_exact", 0) or 0) + (ded.get("removed_near", 0) or 0)})
    from ..io import atomic_write_text

    atomic_write_text(ctx.dir / "DATACARD.md", datacard(ctx.config.run.name, by_kind, funnel, quality, usage,
                                                        result.funnel))
    ctx.register_output("DATACARD.md")


def datacard(name: str, by_kind: dict, funnel: dict, quality: dict, usage: dict, filters: list | None = None) -> str:
    lines = [f"# Data card: {name}", "", "Synthetic text-embedding training data made with speed (the SPEED method).",
             "", "## Examples by kind", "", "| kind | rows |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in sorted(by_kind.items())]
    lines += [f"| **total** | {sum(by_kind.values())} |", "", "## Funnel", "", "| step | rows |", "|---|---|"]
    lines += [f"| {k} | {'-' if v is None else v} |" for k, v in funnel.items()]
    if filters:
        lines += ["", "## Filters (in order)", "", "| filter | in | kept | dropped (by reason) | changed negatives |",
                  "|---|---|---|---|---|"]
        for f in filters:
            dropped = ", ".join(f"{k}: {v}" for k, v in f["dropped"].items()) or "-"
            changed = ", ".join(f"{k}: {v}" for k, v in (f.get("changed") or {}).items()) or "-"
            lines.append(f"| {f['filter']} | {f['in']} | {f['kept']} | {dropped} | {changed} |")
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


STAGE = Stage("export", Config, run, needs=("scored-examples",), provides={"training-data": "data.jsonl"},
              roles=("reference_embedder",), optional_roles=("reference_embedder",), summary=summary)
