"""End to end with the real all-MiniLM-L6-v2: every task type on tiny folders, the cache, the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from speed.evaluate import EmbeddingCache, Encoder, evaluate_model, format_table, load_tasks
from speed.evaluate.encoder import with_instruction

FIX = Path(__file__).resolve().parent / "fixtures" / "eval"
BUILTIN = Path(__file__).resolve().parents[1] / "src" / "speed" / "data" / "eval"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("embcache")


def test_every_type_on_tiny_folders_then_all_from_cache(cache_dir):
    first = evaluate_model("all-minilm-l6-v2", [FIX / "valid"], instruction="off", cache_dir=cache_dir)
    res = first["results"]
    assert set(res) == {"TinySTS", "TinyClassification", "TinyPairs", "TinyRetrieval", "TinyReranking",
                        "TinyClustering"}
    assert res["TinySTS"]["metric"] == "cosine_spearman" and res["TinySTS"]["main_score"] > 0.8
    assert res["TinyRetrieval"]["main_score"] > 0.9 and res["TinyRetrieval"]["evaluated_queries"] == 3
    assert res["TinyPairs"]["main_score"] > 0.9
    assert res["TinyClassification"]["main_score"] > 0.6
    assert res["TinyReranking"]["main_score"] > 0.9
    assert 0.0 <= res["TinyClustering"]["main_score"] <= 1.0
    assert first["instruction"] is False and first["encode"]["encoded"] > 0
    second = evaluate_model("all-minilm-l6-v2", [FIX / "valid"], instruction="off", cache_dir=cache_dir)
    assert second["encode"]["encoded"] == 0 and second["encode"]["cached"] == first["encode"]["unique"]
    for name, r in first["results"].items():
        assert second["results"][name]["main_score"] == pytest.approx(r["main_score"], abs=1e-9), name
    table = format_table(second)
    assert "TinyRetrieval" in table and "ndcg_at_10" in table


def test_cached_vectors_equal_fresh_encoding(cache_dir):
    from sentence_transformers import SentenceTransformer

    enc = Encoder("all-minilm-l6-v2", cache=EmbeddingCache(cache_dir))
    texts = ["A man is playing a guitar.", "The plane is landing.", "A man is playing a guitar."]
    cached = enc.encode(texts)
    assert enc._st is None  # everything came from the cache: the model was never loaded
    fresh = SentenceTransformer(enc.path, device="cpu").encode(texts[:2], convert_to_numpy=True)
    assert np.allclose(cached[:2], fresh, atol=1e-5) and np.array_equal(cached[0], cached[2])


def test_instruction_goes_to_queries_only(cache_dir):
    tasks = {t.name: t for t in load_tasks([FIX / "valid"])}
    enc = Encoder("all-minilm-l6-v2", cache=EmbeddingCache(cache_dir))
    from speed.evaluate.runner import evaluate_task

    before = enc.stats.encoded
    r = evaluate_task(enc, tasks["TinyRetrieval"], instruction=True)
    # only the 3 judged queries are new (with the instruction); the 6 documents come from the cache
    assert enc.stats.encoded - before == 3
    assert r["instruction"] == "Given a question, retrieve passages that answer it"
    assert with_instruction("q", "do x") == "Instruct: do x\nQuery: q"


def test_auto_instruction_rules():
    from speed.evaluate.runner import resolve_instruction

    assert resolve_instruction("auto", "all-minilm-l6-v2") is False
    assert resolve_instruction("auto", "intfloat/e5-mistral-7b-instruct") is True
    assert resolve_instruction("auto", "all-minilm-l6-v2", configured=True) is True
    assert resolve_instruction("on", "all-minilm-l6-v2") is True


def test_model_identity_changes_with_the_weights(tmp_path, cache_dir):
    from speed.evaluate.cache import model_identity

    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "model.safetensors").write_bytes(b"abc")
    c = EmbeddingCache(cache_dir)
    a = model_identity(tmp_path, c)
    (tmp_path / "model.safetensors").write_bytes(b"abd")
    assert model_identity(tmp_path, c) != a


def test_builtin_stsbenchmark_reproduces_the_official_score(tmp_path):
    """The built-in STSBenchmark (1,379 pairs) through the CLI; MTEB's all-MiniLM-L6-v2 score is 0.8203.

    Uses the persistent cache under $SPEED_HOME, so later runs do not re-encode."""
    out = tmp_path / "res.json"
    proc = subprocess.run([sys.executable, "-m", "speed.cli.eval_commands", "eval", "--model", "all-minilm-l6-v2",
                           "--tasks", str(BUILTIN / "STSBenchmark"), "--instruction", "off", "--output", str(out)],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    body = json.loads(out.read_text())
    assert body["model"] == "all-minilm-l6-v2"
    r = body["results"]["STSBenchmark"]
    assert r["metric"] == "cosine_spearman"
    assert abs(r["main_score"] - 0.8203) < 0.005, r["main_score"]
    assert "STSBenchmark" in proc.stdout and "0.82" in proc.stdout
