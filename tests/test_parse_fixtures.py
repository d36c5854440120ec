"""Real outputs of the small local models (zero-shot, temperature 1.0) parse to the expected outcome.

``fixtures/model_outputs.jsonl`` was collected with ``scripts/collect_fixtures.py`` (SmolLM2-135M and
Qwen2.5-Coder-0.5B through llama.cpp on our synthesis prompts); the ``expected`` outcome of each
line was decided by reading the raw text, not by running the parser.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from speed.prompts import TASK_KINDS, parse_example

ROWS = [json.loads(line) for line in (Path(__file__).parent / "fixtures" / "model_outputs.jsonl").read_text(
    encoding="utf-8").splitlines() if line.strip()]


def test_fixture_coverage():
    assert len(ROWS) >= 40
    assert {r["model"] for r in ROWS} == {"smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"}
    assert set(TASK_KINDS) <= {r["kind"] for r in ROWS}
    rejected = [r for r in ROWS if r["expected"] != "accepted"]
    borderline = [r for r in ROWS if r["expected"] == "accepted" and (r.get("finish_reason") == "length" or
                                                                      "```" in r["raw"])]
    assert len(rejected) + len(borderline) >= 30
    assert len(Counter(r["expected"] for r in rejected)) >= 4


@pytest.mark.parametrize("row", ROWS, ids=[f"{i}-{r['model'][:5]}-{r['kind']}" for i, r in enumerate(ROWS)])
def test_real_output_outcome(row):
    r = parse_example(row["kind"], row["raw"], row["attributes"])
    got = "accepted" if r.ok else r.reason
    assert got == row["expected"], (r.detail, row["raw"][:300])
    assert r.raw == row["raw"]
    if r.ok:
        assert r.length_ok is not None
