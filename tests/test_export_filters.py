"""export's data filters (``speed.synth.filters``) on hand-built examples, with the real reference
embedder (all-MiniLM-L6-v2): false negatives (margin and percpos rules; drop / strip / mine per kind),
round trip, mined negatives, the teacher-score threshold, and the export stage around them."""

from __future__ import annotations

import json

import pytest

from speed.errors import ConfigError
from speed.runtime.config import ModelRef, RunConfig, SpeedConfig
from speed.runtime.configschema import from_dict
from speed.runtime.rundir import RunDir, StageContext
from speed.stages import export as stage
from speed.synth import filters
from speed.synth.records import Example

STS_NEAR = {"S1": "Science is the systematic study of the natural world.",
            "S2": "Astronomy studies planets and stars.",
            "S3": "Science is the systematic study of the natural world through observation."}
STS_OK = {"S1": "A man is playing a guitar on stage.", "S2": "A man plays the guitar in front of a crowd.",
          "S3": "Stock markets fell sharply on Monday."}
RET_FN = {"user_query": "how to bake sourdough bread",
          "positive_document": "Our bakery sells cakes.",
          "hard_negative_document": "How to bake sourdough bread at home: a step by step guide."}

# round trip / mining: retrieval rows on distinct subjects; the last one's positive is off topic
TOPICAL = [
    ("how do I bake sourdough bread", "Mix flour, water and a sourdough starter, let the dough rise overnight, then bake it at 230 C."),
    ("what causes a car engine to overheat", "A failing radiator, low coolant or a broken water pump makes an engine overheat."),
    ("how to repot a houseplant", "Water the plant, ease it out of its pot, loosen the roots and set it in fresh soil one size up."),
    ("symptoms of the flu in adults", "Adults with influenza usually have fever, muscle aches, a dry cough and fatigue."),
    ("how to train a puppy to sit", "Hold a treat above the puppy's nose, move it back until the puppy sits, then reward it."),
    ("best time to visit Japan for cherry blossoms", "Cherry blossoms in Tokyo and Kyoto usually peak in late March and early April."),
    ("how to change a bicycle tyre", "Bake the cake at 180 C for 35 minutes and let it cool before icing it."),  # off topic
]


@pytest.fixture(scope="module")
def embedder():
    from speed.synth.quality import load_embedder

    return load_embedder(ModelRef(backend="sentence-transformers", model="all-minilm-l6-v2"))


def _settings(**kw) -> filters.FilterSettings:
    return from_dict(filters.FilterSettings, kw, "export")


def _ret(i, q, p, n=""):
    return {"id": f"r{i}", "kind": "retrieval", "task": "t", "query": q, "positive": p, "negative": n}


def test_false_negative_rules():
    margin, perc = _settings(), _settings(false_negative_rule="percpos", false_negative_perc=0.95)
    assert filters.is_false_negative(0.80, 0.79, margin) is False and filters.is_false_negative(0.80, 0.80, margin)
    assert filters.is_false_negative(0.80, 0.77, perc) and not filters.is_false_negative(0.80, 0.75, perc)
    assert filters.is_false_negative(0.80, None, perc) is None
    assert filters.is_false_negative(-0.2, -0.1, perc)  # a negative closer than a dissimilar positive


def test_planted_false_negative_dropped_stripped_or_kept():
    rows = [{**_ret(0, "q", "p", "n"), "sim_pos": 0.80, "sim_neg": 0.78},  # 97.5% of the positive: percpos flags it
            {**_ret(1, "q1", "p1", "n1"), "sim_pos": 0.80, "sim_neg": 0.40}]
    s = _settings(false_negative_rule="percpos", false_negative_action={"retrieval": "drop"})
    res = filters.apply(rows, s)
    assert [r["id"] for r in res.rows] == ["r1"]
    assert res.rejected[0]["id"] == "r0" and res.rejected[0]["reason"] == "false_negative"
    assert res.rejected[0]["sim_neg"] == 0.78 and res.funnel[-1]["dropped"] == {"false_negative": 1}
    res = filters.apply(rows, _settings(false_negative_rule="percpos", false_negative_action={"retrieval": "strip"}))
    assert [r["negative"] for r in res.rows] == ["", "n1"] and res.rows[0]["negative_source"] == "none"
    assert res.rejected[0]["action"] == "stripped" and res.rejected[0]["negative"] == "n"  # the old text kept
    res = filters.apply(rows, _settings(false_negative_action={"retrieval": "drop"}))  # margin rule: 0.78 < 0.80
    assert len(res.rows) == 2 and res.rows[0]["false_negative"] is False


def test_teacher_score_threshold_keeps_unscored_rows():
    rows = [{**_ret(0, "q0", "p0"), "score": 4.5, "scores": {"validity": 5}},
            {**_ret(1, "q1", "p1"), "score": 2.25, "scores": {"validity": 1}},
            {**_ret(2, "q2", "p2"), "score": None}]
    res = filters.apply(rows, _settings(min_score=3.0))
    assert [r["id"] for r in res.rows] == ["r0", "r2"]
    assert res.rejected == [{**rows[1], "negative_source": "none", "mined_negative": None, "round_trip_rank": None,
                             "reason": "low_score", "action": "dropped", "min_score": 3.0}]
    assert res.funnel[0] == {"filter": "teacher_score", "in": 3, "kept": 2, "dropped": {"low_score": 1}, "unscored": 1}


def test_planted_off_topic_positive_fails_round_trip(embedder):
    rows = [_ret(i, q, p) for i, (q, p) in enumerate(TOPICAL)]
    res = filters.apply(rows, _settings(round_trip=True, round_trip_k=1), model=embedder)
    assert [r["id"] for r in res.rejected] == ["r6"] and res.rejected[0]["reason"] == "round_trip"
    assert res.rejected[0]["round_trip_rank"] > 1
    assert all(r["round_trip_rank"] == 1 for r in res.rows)
    # the rank is 1 + the positives (of other rows) that score higher: an independent computation
    import numpy as np

    q = embedder.encode([TOPICAL[6][0]], normalize_embeddings=True)[0]
    P = embedder.encode([p for _, p in TOPICAL], normalize_embeddings=True)
    assert res.rejected[0]["round_trip_rank"] == 1 + int((np.delete(P @ q, 6) > P[6] @ q).sum())


def test_round_trip_sts_both_ways_and_classification_exempt(embedder):
    rows = [{"id": "s0", "kind": "sts", "task": "t", "query": STS_OK["S1"], "positive": STS_OK["S2"], "negative": ""},
            {"id": "s1", "kind": "sts", "task": "t", "query": "The stock market fell on Monday.",
             "positive": "Shares dropped sharply at the start of the week.", "negative": ""},
            {"id": "s2", "kind": "sts", "task": "t", "query": "A cat sleeps on the sofa.",
             "positive": "The weather in Paris is sunny today.", "negative": ""},  # S1 -> S2 rank 1; S2 -> S1 rank 3
            {"id": "c0", "kind": "classification", "task": "t", "query": "great film", "positive": "positive",
             "negative": "negative"}]
    res = filters.apply(rows, _settings(round_trip=True, round_trip_k=1), model=embedder)
    assert [r["id"] for r in res.rows] == ["s0", "s1", "c0"] and res.rows[-1]["round_trip_rank"] is None
    assert res.funnel[-1]["not_applicable"] == 1
    assert res.rejected[0]["id"] == "s2" and res.rejected[0]["round_trip_rank"] == 3  # only the reverse direction fails


def test_mined_negatives_never_equal_the_positive(embedder):
    rows = [_ret(i, q, p, n=f"generated negative {i}") for i, (q, p) in enumerate(TOPICAL[:6])]
    rows.append(_ret(6, TOPICAL[0][0], TOPICAL[0][1]))  # the same query and positive again
    res = filters.apply(rows, _settings(mine_negatives="replace", mine_relative_margin=0.0), model=embedder)
    mined = [r for r in res.rows if r["negative_source"] == "mined"]
    assert len(mined) == 7
    positives_of = {}
    for r in rows:
        positives_of.setdefault(r["query"], set()).add(r["positive"])
    for r in res.rows:
        assert r["negative"] not in positives_of[r["query"]] and r["negative"] != r["query"]
        assert r["negative"] in {p for _, p in TOPICAL[:6]}  # from the export's own positives
    # replaced generated negatives are recorded with their old text
    assert sorted(x["negative"] for x in res.rejected if x["action"] == "replaced") == \
        sorted(f"generated negative {i}" for i in range(6))
    added = filters.apply(rows, _settings(mine_negatives="add", mine_relative_margin=0.0), model=embedder)
    assert [r["negative"] for r in added.rows[:6]] == [f"generated negative {i}" for i in range(6)]
    assert all(r["mined_negative"] and r["mined_negative"] not in positives_of[r["query"]] for r in added.rows[:6])
    assert added.rows[6]["negative"] and added.rows[6]["negative_source"] == "mined"  # no generated one: added
    trip, pairs = stage.st_views(added.rows)
    assert len(trip) == 6 * 2 + 1 and not pairs


def test_false_negative_replaced_by_a_mined_one(embedder):
    rows = [{**_ret(0, RET_FN["user_query"], RET_FN["positive_document"], RET_FN["hard_negative_document"]),
             "sim_pos": 0.3, "sim_neg": 0.9}] + [_ret(i + 1, q, p) for i, (q, p) in enumerate(TOPICAL[1:5])]
    res = filters.apply(rows, _settings(false_negative_action={"retrieval": "mine"}, mine_range_max=10,
                                        mine_relative_margin=0.0), model=embedder)
    r0 = res.rows[0]
    assert r0["negative_source"] == "mined" and r0["negative"] != RET_FN["hard_negative_document"]
    rec = [x for x in res.rejected if x["id"] == "r0"]
    assert rec and rec[0]["action"] == "replaced" and rec[0]["negative"] == RET_FN["hard_negative_document"]
    assert all(r["negative_source"] == "none" for r in res.rows[1:])  # mine_negatives off: only the flagged row


@pytest.mark.parametrize("kw, key", [({"false_negative_action": {"classification": "mine"}}, "false_negative_action"),
                                     ({"false_negative_action": {"retrieval": "toss"}}, "false_negative_action"),
                                     ({"false_negative_action": {"news": "drop"}}, "false_negative_action"),
                                     ({"mine_kinds": ["classification"]}, "mine_kinds"),
                                     ({"min_score": 7}, "min_score"), ({"round_trip_k": 0}, "round_trip_k"),
                                     ({"mine_range_max": 0}, "mine_range_max"),
                                     ({"quality": False, "round_trip": True}, "round_trip")])
def test_bad_filter_settings_name_the_key(kw, key):
    with pytest.raises(ConfigError, match=rf"export\.{key}"):
        from_dict(stage.Config, kw, "export")


def _run(tmp_path, rows=None, **cfg):
    rd = RunDir(tmp_path / "run")
    rd.write_manifest({"run": "t", "stages": {}})
    rows = rows or [Example(id=f"e{i}", kind=k, task="t", topic="x", fields=f).to_dict()
                    for i, (k, f) in enumerate([("sts", STS_NEAR), ("sts", STS_OK), ("retrieval", RET_FN)])]
    (tmp_path / "run" / "score").mkdir(parents=True)
    (tmp_path / "run" / "score" / "examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = SpeedConfig(run=RunConfig(name="t"), stages={"export": from_dict(stage.Config, cfg, "export")},
                         models={"reference_embedder": ModelRef(backend="sentence-transformers", model="all-minilm-l6-v2")})
    ctx = StageContext(name="export", config=config, cfg=config.stages["export"], rundir=rd)
    stage.run(ctx)
    read = lambda name: [json.loads(x) for x in (tmp_path / "run" / "export" / name).read_text().splitlines()]
    return read("data.jsonl"), read("filtered.jsonl")


def test_export_drops_sts_near_paraphrase_triple_by_default(tmp_path):
    kept, filtered = _run(tmp_path)
    assert [r["id"] for r in filtered] == ["e0"] and filtered[0]["reason"] == "false_negative"
    assert filtered[0]["sim_neg"] >= filtered[0]["sim_pos"]
    assert [r["id"] for r in kept] == ["e1", "e2"]  # the retrieval false negative is flagged, not dropped
    assert kept[1]["false_negative"] is True


def test_export_actions_per_kind_and_score_column(tmp_path):
    _, filtered = _run(tmp_path / "a", false_negative_action={"sts": "drop", "retrieval": "drop"})
    assert [r["id"] for r in filtered] == ["e0", "e2"]
    kept, filtered = _run(tmp_path / "b", false_negative_action={})
    assert filtered == [] and len(kept) == 3
    rows = [{**Example(id=f"e{i}", kind="sts", task="t", topic="x", fields=STS_OK).to_dict(),
             "score": s, "scores": {"query_realism": 3, "positive_relevance": 3, "negative_hardness": 3, "validity": 3}}
            for i, s in enumerate([4.0, 2.0])]
    kept, filtered = _run(tmp_path / "c", rows=rows, min_score=3)
    assert [r["id"] for r in kept] == ["e0"] and filtered[0]["reason"] == "low_score"
    import pyarrow.parquet as pq

    t = pq.read_table(tmp_path / "c" / "run" / "export" / "data.parquet").to_pylist()
    assert t[0]["score"] == 4.0 and t[0]["scores"]["validity"] == 3 and t[0]["negative_source"] == "generated"
    card = (tmp_path / "c" / "run" / "export" / "DATACARD.md").read_text()
    assert "| teacher_score | 2 | 1 | low_score: 1 | - |" in card
