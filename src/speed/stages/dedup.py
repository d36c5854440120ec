"""Stage ``dedup``: exact + MinHash LSH near-duplicate removal of the revised examples.

Reads ``revise/examples.jsonl`` (rows are ``Example.to_dict()``), compares ``Example.full_text()``
(query, positive and negative joined), keeps the first occurrence of each duplicate group and
writes:

- ``dedup/examples.jsonl``: the kept rows, unchanged, in input order;
- ``dedup/removed.jsonl``: each removed row plus ``duplicate_of`` (the id of the kept example it
  duplicates), ``reason`` (``exact`` or ``near``) and ``jaccard`` (1.0 for exact, else the MinHash
  estimate).

Counts: ``input``, ``kept``, ``removed_exact``, ``removed_near``, and ``lsh_bands`` / ``lsh_rows``
(the banding used). The MinHash permutations are seeded by the run seed. See :mod:`speed.synth.dedup`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..runtime.configschema import check
from . import Stage


@dataclass
class Config:
    threshold: float = 0.7  # estimated Jaccard at or above which two texts are near duplicates
    num_perm: int = 128  # MinHash permutations
    shingle: Literal["char", "word"] = "char"  # character or word n-grams of the normalised text
    shingle_size: int = 5  # n of the n-grams
    bands: int | None = None  # LSH bands; null: derived from threshold and num_perm
    rows: int | None = None  # LSH rows per band (give both bands and rows, or neither)
    exact: bool = True  # remove exact duplicates of the normalised text
    near: bool = True  # remove near duplicates (MinHash LSH)

    def validate(self, where: str) -> None:
        check(0.0 < self.threshold <= 1.0, f"{where}.threshold", self.threshold, "must be in (0, 1]")
        check(self.num_perm >= 8, f"{where}.num_perm", self.num_perm, "must be >= 8")
        check(1 <= self.shingle_size <= 64, f"{where}.shingle_size", self.shingle_size, "must be in 1..64")
        check((self.bands is None) == (self.rows is None), f"{where}.bands", self.bands,
              "give both bands and rows, or neither (null: derived from threshold)")
        if self.bands is not None and self.rows is not None:
            check(self.bands >= 1 and self.rows >= 1 and self.bands * self.rows <= self.num_perm,
                  f"{where}.bands", self.bands, f"bands * rows must be between 1 and num_perm ({self.num_perm})")


def run(ctx) -> None:
    from ..errors import InputError
    from ..progress import progress
    from ..synth.dedup import dedup
    from ..synth.records import Example

    cfg: Config = ctx.cfg
    rows = list(ctx.read_input("revised-examples"))
    texts = []
    for n, r in enumerate(rows, 1):
        try:
            texts.append(Example.from_dict(r).full_text())
        except (TypeError, KeyError, AttributeError) as exc:
            raise InputError(f"{ctx.input_path('revised-examples')}: row {n} is not an example "
                             f"({exc})") from None
    ids = [r.get("id") for r in rows]
    with progress(total=len(rows), desc=ctx.name, unit="example") as bar:
        result = dedup(texts, ids, threshold=cfg.threshold, num_perm=cfg.num_perm, shingle=cfg.shingle,
                       shingle_size=cfg.shingle_size, bands=cfg.bands, rows=cfg.rows, exact=cfg.exact,
                       near=cfg.near, seed=ctx.seed, on_progress=bar.update)
    ctx.write_jsonl("examples.jsonl", (rows[i] for i in result.kept))
    removed = []
    for d in result.duplicates:
        row = dict(rows[d.index])
        row.update(duplicate_of=d.duplicate_of, reason=d.reason, jaccard=round(d.jaccard, 6))
        removed.append(row)
    ctx.write_jsonl("removed.jsonl", removed)
    ctx.counts.update(result.counts)
    ctx.counts.update(lsh_bands=result.bands, lsh_rows=result.rows)


STAGE = Stage("dedup", Config, run, needs=("revised-examples",), provides={"unique-examples": "examples.jsonl"})
