"""The official MTEB scores of all-MiniLM-L6-v2 (mteb 1.12.75), reproduced on ../shared/eval (slow)."""

from __future__ import annotations

import pytest

OFFICIAL = {"STSBenchmark": 0.8203, "SICK-R": 0.7758, "Banking77Classification": 0.8004,
            "AmazonCounterfactualClassification": 0.6364, "SciFact": 0.6451}


@pytest.mark.slow
def test_official_scores_reproduced(shared_eval, tmp_path):
    from speed.evaluate import evaluate_model

    res = evaluate_model("all-minilm-l6-v2", [shared_eval / name for name in OFFICIAL], instruction="off",
                         cache_dir=tmp_path / "cache")
    got = {k: v["main_score"] for k, v in res["results"].items()}
    table = "\n".join(f"{k}: ours {got[k]:.4f} official {v:.4f} diff {got[k] - v:+.4f}" for k, v in OFFICIAL.items())
    for name, official in OFFICIAL.items():
        assert abs(got[name] - official) < 0.005, table
