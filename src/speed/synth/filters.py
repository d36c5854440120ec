"""The data-quality filters of the export (and of the study's filter rows): one implementation.

Applied in this order to the rows that reach the export (``FilterSettings`` holds every knob):

1. **teacher score** (``min_score``): a row the optional ``score`` stage rated below the threshold (the
   mean of its rubric scores) is dropped; unscored rows (outside the sample, or an unparseable verdict)
   are kept and counted.
2. **false negatives**, by the reference embedder: with ``false_negative_rule: margin`` a negative whose
   cosine to the query is at least the positive's minus ``false_negative_margin``; with ``percpos``
   (NV-Retriever's TopK-PercPos) one at least ``false_negative_perc`` (95%) of the positive's. Per kind
   (``false_negative_action``): ``keep`` (flagged only), ``drop`` the row, ``strip`` its negative (the
   row becomes a pair), or ``mine`` a replacement (step 4; stripped when none is found).
3. **round trip** (``round_trip``, Promptagator / InPars style): for the query -> document kinds the
   positive must rank within the top ``round_trip_k`` for its query among the positives of every such
   row of the export; for STS the same both ways (S2 among all S2 for S1, S1 among all S1 for S2).
   Classification (a label, not a document) is not checked.
4. **mined hard negatives** (``mine_negatives: add | replace``, for ``mine_kinds``): sentence-transformers'
   ``mine_hard_negatives`` over the export's own positives of the same kind (rank window
   ``mine_range_min..mine_range_max``, ``mine_relative_margin``). ``replace`` puts the mined negative in
   ``negative`` (the generated one kept when none is found); ``add`` keeps the generated negative and
   puts the mined one in ``mined_negative`` (the trainer then uses both). A mined text never equals the
   row's query or positive.

Every dropped row goes to the rejected list with its reason and the values that decided it; every
changed negative is recorded there too (``action``: ``stripped`` / ``replaced``), with the old text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Sequence

from ..runtime.configschema import check

QUERY_DOC_KINDS = ("retrieval", "short-short", "long-long")
SYMMETRIC_KINDS = ("sts",)
FN_ACTIONS = ("keep", "drop", "strip", "mine")


@dataclass
class FilterSettings:
    """The export's filter keys (see the module docstring). The defaults change nothing but STS."""

    false_negative_rule: Literal["margin", "percpos"] = "margin"
    false_negative_margin: float = 0.0  # margin rule: sim_neg >= sim_pos - margin
    false_negative_perc: float = 0.95  # percpos rule: sim_neg >= perc * sim_pos
    # kind -> keep | drop | strip | mine; kinds not named: keep (flagged in the false_negative column). An STS
    # triple whose "less similar" S3 is as close to S1 as S2 is (three near-paraphrases) teaches nothing
    false_negative_action: dict[str, str] = field(default_factory=lambda: {"sts": "drop"})
    round_trip: bool = False
    round_trip_k: int = 3
    mine_negatives: Literal["off", "add", "replace"] = "off"
    mine_kinds: list[str] = field(default_factory=lambda: list(QUERY_DOC_KINDS))
    mine_range_min: int = 0
    mine_range_max: int = 20
    mine_relative_margin: float = 0.05
    min_score: float | None = None  # the teacher rubric's mean (score stage), 1-5

    def validate(self, where: str) -> None:
        from ..prompts.schemas import TASK_KINDS

        check(-1.0 <= self.false_negative_margin <= 1.0, f"{where}.false_negative_margin",
              self.false_negative_margin, "must be in [-1, 1]")
        check(0.0 < self.false_negative_perc <= 1.0, f"{where}.false_negative_perc", self.false_negative_perc,
              "must be in (0, 1]")
        for k, a in self.false_negative_action.items():
            check(k in TASK_KINDS, f"{where}.false_negative_action", k, "keys are kinds: " + ", ".join(TASK_KINDS))
            check(a in FN_ACTIONS, f"{where}.false_negative_action.{k}", a, "one of " + ", ".join(FN_ACTIONS))
            check(not (a == "mine" and k == "classification"), f"{where}.false_negative_action.{k}", a,
                  "a classification negative is a label, not mined from documents: use keep, drop or strip")
        check(self.round_trip_k >= 1, f"{where}.round_trip_k", self.round_trip_k, "must be >= 1")
        for i, k in enumerate(self.mine_kinds):
            check(k in TASK_KINDS and k != "classification", f"{where}.mine_kinds[{i}]", k,
                  "one of " + ", ".join(x for x in TASK_KINDS if x != "classification"))
        check(self.mine_range_min >= 0, f"{where}.mine_range_min", self.mine_range_min, "must be >= 0")
        check(self.mine_range_max > self.mine_range_min, f"{where}.mine_range_max", self.mine_range_max,
              f"must be > mine_range_min ({self.mine_range_min})")
        check(0.0 <= self.mine_relative_margin < 1.0, f"{where}.mine_relative_margin", self.mine_relative_margin,
              "must be in [0, 1)")
        check(self.min_score is None or 1.0 <= self.min_score <= 5.0, f"{where}.min_score", self.min_score,
              "must be null or in [1, 5] (the mean of the teacher's 1-5 rubric scores)")


def is_false_negative(sim_pos: float | None, sim_neg: float | None, s: FilterSettings) -> bool | None:
    """Is the negative as close to the query as the positive (by the rule of ``s``)? None without both."""
    if sim_pos is None or sim_neg is None:
        return None
    if s.false_negative_rule == "percpos":
        return sim_neg >= (s.false_negative_perc * sim_pos if sim_pos > 0 else sim_pos)
    return sim_neg >= sim_pos - s.false_negative_margin


def _norm(t: str) -> str:
    return " ".join((t or "").split()).lower()


def rank_of_positive(q, own: int, pool) -> int:
    """1 + how many pool vectors other than row ``own`` score higher against ``q`` than row ``own``."""
    import numpy as np

    scores = pool @ q
    mine = scores[own]
    others = np.delete(scores, own)
    return 1 + int((others > mine).sum())


def round_trip_ranks(rows: Sequence[dict], encode) -> list[int | None]:
    """Per row: the round-trip rank (None for kinds it does not apply to). ``encode(texts)`` returns unit
    vectors. For STS the worse of the two directions. Positives repeated verbatim count once."""
    out: list[int | None] = [None] * len(rows)
    groups = {"qd": [i for i, r in enumerate(rows) if r["kind"] in QUERY_DOC_KINDS],
              "sts": [i for i, r in enumerate(rows) if r["kind"] in SYMMETRIC_KINDS]}
    for name, idx in groups.items():
        if not idx:
            continue
        pos_texts = list(dict.fromkeys(rows[i]["positive"] for i in idx))
        qry_texts = list(dict.fromkeys(rows[i]["query"] for i in idx))
        P, Q = encode(pos_texts), encode(qry_texts)
        p_at = {t: j for j, t in enumerate(pos_texts)}
        q_at = {t: j for j, t in enumerate(qry_texts)}
        for i in idx:
            q, p = Q[q_at[rows[i]["query"]]], P[p_at[rows[i]["positive"]]]
            r = rank_of_positive(q, p_at[rows[i]["positive"]], P)
            if name == "sts":
                r = max(r, rank_of_positive(p, q_at[rows[i]["query"]], Q))
            out[i] = r
    return out


def mine(rows: Sequence[dict], need: Sequence[int], model, s: FilterSettings, batch_size: int = 64) -> dict[int, str]:
    """Mined negatives for the rows ``need`` (indices into ``rows``), from the positives of their own kind
    among ``rows``: sentence-transformers' ``mine_hard_negatives`` (top 1 in the rank window that clears the
    relative margin). Rows with none found are absent from the result."""
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    out: dict[int, str] = {}
    # the positives of every row sharing the anchor are never a negative of it (nor are the texts themselves)
    taken: dict[str, set[str]] = {}
    for r in rows:
        taken.setdefault(_norm(r["query"]), set()).add(_norm(r["positive"]))
    for kind in dict.fromkeys(rows[i]["kind"] for i in need):
        want = [i for i in need if rows[i]["kind"] == kind]
        corpus = list(dict.fromkeys(r["positive"] for r in rows if r["kind"] == kind))
        if len(corpus) < 2:
            continue
        pairs = list(dict.fromkeys((rows[i]["query"], rows[i]["positive"]) for i in want))
        ds = Dataset.from_dict({"anchor": [a for a, _ in pairs], "positive": [p for _, p in pairs]})
        mined = mine_hard_negatives(ds, model, corpus=corpus, range_min=s.mine_range_min,
                                    range_max=min(s.mine_range_max, len(corpus) - 1),
                                    relative_margin=s.mine_relative_margin, num_negatives=1,
                                    sampling_strategy="top", output_format="triplet", batch_size=batch_size,
                                    verbose=False)
        found = {}
        for a, p, n in zip(mined["anchor"], mined["positive"], mined["negative"]):
            found.setdefault((a, p), n)
        for i in want:
            n = found.get((rows[i]["query"], rows[i]["positive"]))
            if n and _norm(n) not in taken[_norm(rows[i]["query"])] and _norm(n) != _norm(rows[i]["query"]):
                out[i] = n
    return out


@dataclass
class FilterResult:
    rows: list[dict]  # kept rows (negatives possibly replaced / stripped / added)
    rejected: list[dict]  # dropped rows (reason + deciding values) and changed negatives (action + old text)
    funnel: list[dict]  # per filter: {filter, in, kept, dropped: {reason: n}, changed: {action: n}, ...}


def apply(rows: list[dict], s: FilterSettings, model=None, batch_size: int = 64) -> FilterResult:
    """Filter export rows (dicts with ``kind, query, positive, negative`` and, where computed, ``sim_pos,
    sim_neg, score, scores``); ``model`` is the reference embedder (needed by round trip and mining)."""
    rows = [dict(r, negative_source="generated" if r.get("negative") else "none", mined_negative=None,
                 round_trip_rank=None) for r in rows]
    rejected: list[dict] = []
    funnel: list[dict] = []

    def step(name: str, kept: list[dict], dropped: list[dict], n_in: int, **extra) -> list[dict]:
        by: dict[str, int] = {}
        for d in dropped:
            by[d["reason"]] = by.get(d["reason"], 0) + 1
        rejected.extend(dropped)
        funnel.append({"filter": name, "in": n_in, "kept": len(kept), "dropped": by, **extra})
        return kept

    # 1. the teacher's score
    if s.min_score is not None:
        kept, dropped, unscored = [], [], 0
        for r in rows:
            sc = r.get("score")
            if sc is None:
                unscored += 1
                kept.append(r)
            elif sc < s.min_score:
                dropped.append({**r, "reason": "low_score", "action": "dropped", "min_score": s.min_score})
            else:
                kept.append(r)
        rows = step("teacher_score", kept, dropped, len(rows), unscored=unscored)

    # 2. false negatives
    kept, dropped, changed, to_mine = [], [], {}, []
    for r in rows:
        fn = is_false_negative(r.get("sim_pos"), r.get("sim_neg"), s)
        r["false_negative"] = fn
        action = s.false_negative_action.get(r["kind"], "keep") if fn else "keep"
        if action == "drop":
            dropped.append({**r, "reason": "false_negative", "action": "dropped", "rule": s.false_negative_rule})
            continue
        if action in ("strip", "mine"):
            if action == "mine":
                to_mine.append(r)
            else:
                rejected.append({**r, "reason": "false_negative", "action": "stripped", "rule": s.false_negative_rule})
                r.update(negative="", negative_source="none")
                changed["stripped"] = changed.get("stripped", 0) + 1
        kept.append(r)
    rows = step("false_negative", kept, dropped, len(rows), rule=s.false_negative_rule, changed=changed)

    # 3. round trip
    if s.round_trip and rows:
        if model is None:
            raise ValueError("round_trip needs the reference embedder")
        encode = lambda texts: model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                                            convert_to_numpy=True, show_progress_bar=False)
        ranks = round_trip_ranks(rows, encode)
        kept, dropped = [], []
        for r, k in zip(rows, ranks):
            r["round_trip_rank"] = k
            if k is not None and k > s.round_trip_k:
                dropped.append({**r, "reason": "round_trip", "action": "dropped", "round_trip_k": s.round_trip_k})
            else:
                kept.append(r)
        rows = step("round_trip", kept, dropped, len(rows), k=s.round_trip_k,
                    not_applicable=sum(k is None for k in ranks))

    # 4. mined negatives (and the false negatives whose action is mine)
    fn_mine = {id(r) for r in to_mine} & {id(r) for r in rows}
    want = [i for i, r in enumerate(rows)
            if id(r) in fn_mine or (s.mine_negatives != "off" and r["kind"] in s.mine_kinds)]
    if want:  # (none when no row is left)
        if model is None:
            raise ValueError("mining negatives needs the reference embedder")
        found = mine(rows, want, model, s, batch_size=batch_size)
        changed = {}
        for i in want:
            r, n = rows[i], found.get(i)
            if id(r) in fn_mine:  # a likely false negative: replaced, else stripped
                act = "replaced" if n else "stripped"
                rejected.append({**r, "reason": "false_negative", "action": act, "mined": n,
                                 "rule": s.false_negative_rule})
                r.update(negative=n or "", negative_source="mined" if n else "none")
            elif n is None:
                act = "none_found"
            elif s.mine_negatives == "replace" or not r.get("negative"):
                act = "replaced" if r.get("negative") else "added"
                if r.get("negative"):
                    rejected.append({**r, "reason": "mined_negative", "action": "replaced", "mined": n})
                r.update(negative=n, negative_source="mined")
            else:
                act = "added"
                r["mined_negative"] = n
            changed[act] = changed.get(act, 0) + 1
        step("mined_negatives", rows, [], len(rows), mode=s.mine_negatives, changed=changed)
    return FilterResult(rows=rows, rejected=rejected, funnel=funnel)
