"""Generator comparison: diversity and validity signals; two real generators on the same prompts (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from speed.analysis import compare

TASKS = [
    {"kind": "retrieval", "task": "Given a cooking question, retrieve recipes that answer it", "topic": "Food & Drink"},
    {"kind": "classification", "task": "Classify a product review by the product category", "topic": "Shopping"},
    {"kind": "short-short", "task": "Given a city name, retrieve its country", "topic": "Travel"},
]
TOPICS = [{"id": "p0", "text": "Food & Drink"}, {"id": "p1", "text": "Travel"}]


def test_diversity_measures():
    assert compare.distinct_n(["a b c", "a b d"], 1) == pytest.approx(4 / 6)
    assert compare.distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)
    assert compare.distinct_n([], 2) is None
    texts = ["the cat sat on the mat today", "the cat sat on the mat today", "a completely different sentence here"]
    assert compare.near_duplicate_rate(texts) == pytest.approx(1 / 3)
    assert compare.near_duplicate_rate(["one two three four", "five six seven eight"]) == 0.0


def _row(kind, valid, fields=None, parsed=True, lok=None):
    return {"variant": "v", "prompt_id": f"x{id(fields)}", "kind": kind, "task": "t", "topic": "x", "attributes": {},
            "raw": "", "error": None, "parsed_json": parsed, "valid": valid, "reason": None if valid else "missing_key",
            "fields": fields if valid else None, "length_ok": lok or {}, "revised": False, "completion_tokens": 10}


def test_metrics_by_kind_without_embedder():
    rows = [_row("sts", True, {"S1": "a b c", "S2": "a b d", "S3": "x y z"}, lok={"S1": True}),
            _row("sts", False, parsed=False),
            _row("retrieval", True, {"user_query": "q", "positive_document": "p doc", "hard_negative_document": "n doc"},
                 lok={"positive_document": False})]
    m = compare.metrics(rows)
    assert m["sts"]["valid_rate"] == 0.5 and m["sts"]["parse_rate"] == 0.5
    assert m["all"]["prompts"] == 3 and m["all"]["valid_rate"] == pytest.approx(2 / 3)
    assert m["retrieval"]["length_adherence"] == 0.0 and m["sts"]["length_adherence"] == 1.0
    assert m["sts"]["reasons"] == {"missing_key": 1}
    assert m["all"]["mean_margin"] is None  # no reference embedder given


def test_plan_and_spec_parsing():
    prompts = compare.plan(0, 6, TASKS, TOPICS, {"retrieval": 1, "classification": 1, "sts": 1})
    assert len(prompts) == 6 and {p.kind for p in prompts} == {"retrieval", "classification", "sts"}
    vs = compare.variants_from_spec({"variants": {"base": "smollm2-135m-instruct",
                                                  "jr+rev": {"generator": {"model": "smollm2-135m-instruct"},
                                                             "revisor": "qwen2.5-coder-0.5b-instruct"}}})
    assert [v.name for v in vs] == ["base", "jr+rev"] and vs[1].revisor.model == "qwen2.5-coder-0.5b-instruct"
    from speed.errors import InputError

    with pytest.raises(InputError):
        compare.variants_from_spec({"variants": {}})


@pytest.mark.slow
def test_two_real_generators(tmp_path):
    pytest.importorskip("llama_cpp")
    from speed.runtime.config import ModelRef

    prompts = compare.plan(0, 4, TASKS, TOPICS, {"retrieval": 1, "classification": 1, "sts": 1, "short-short": 1})
    variants = [compare.Variant("smollm2-135m", ModelRef(backend="llamacpp", model="smollm2-135m-instruct",
                                                          n_threads=2, n_ctx=2048)),
                compare.Variant("qwen2.5-coder-0.5b", ModelRef(backend="llamacpp", model="qwen2.5-coder-0.5b-instruct",
                                                                n_threads=2, n_ctx=2048))]
    res = compare.run_compare(variants, prompts, tmp_path / "cmp", compare.CompareSettings(max_tokens=200),
                              log=lambda m: None)
    assert set(res["variants"]) == {"smollm2-135m", "qwen2.5-coder-0.5b"}
    rows = [json.loads(line) for line in (tmp_path / "cmp" / "examples.jsonl").read_text().splitlines()]
    assert len(rows) == 8
    for name, v in res["variants"].items():
        mine = [r for r in rows if r["variant"] == name]
        assert all(r["raw"] or r["error"] for r in mine)  # real outputs
        assert v["metrics"]["all"]["valid_rate"] == pytest.approx(sum(r["valid"] for r in mine) / len(mine))
        assert v["metrics"]["all"]["completion_tokens"] == sum(r["completion_tokens"] for r in mine) > 0
    table = (tmp_path / "cmp" / "results.md").read_text()
    assert "smollm2-135m" in table and "qwen2.5-coder-0.5b" in table and "distinct-2" in table
    assert (tmp_path / "cmp" / "compare.png").stat().st_size > 1000
    # a rerun is served by the request cache
    again = compare.run_compare(variants, prompts, tmp_path / "cmp", compare.CompareSettings(max_tokens=200),
                                log=lambda m: None)
    assert again["variants"]["smollm2-135m"]["metrics"] == res["variants"]["smollm2-135m"]["metrics"]
