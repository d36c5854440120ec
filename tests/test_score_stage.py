"""The optional ``score`` stage: the teacher's 1-5 rubric per example (or a seeded sample), counted, cached,
and used by the export's ``min_score`` (teacher: a scripted OpenAI-compatible server on loopback)."""

from __future__ import annotations

import json

from fake_openai import FakeOpenAI
from speed.llm.ledger import iter_ledger
from speed.runtime.config import ModelRef, RunConfig, SpeedConfig
from speed.runtime.configschema import from_dict
from speed.runtime.rundir import RunDir, StageContext
from speed.stages import score as stage
from speed.synth.records import Example


def _answer(prompt: str) -> str:
    if "unparseable" in prompt:
        return "I cannot rate this."
    v = 1 if "bad query" in prompt else 4
    return json.dumps({"query_realism": v, "positive_relevance": v, "negative_hardness": v, "validity": 5})


def _rows():
    return [Example(id=f"e{i}", kind="retrieval", task="Find answers", topic="x",
                    fields={"user_query": q, "positive_document": "doc", "hard_negative_document": "neg"}).to_dict()
            for i, q in enumerate(["good query one", "bad query two", "unparseable three", "good query four"])]


def _run(tmp_path, url, **cfg):
    rd = RunDir(tmp_path / "run")
    if not (tmp_path / "run" / "manifest.json").exists():
        rd.write_manifest({"run": "t", "stages": {}})
        (tmp_path / "run" / "dedup").mkdir(parents=True)
        (tmp_path / "run" / "dedup" / "examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows()))
    config = SpeedConfig(run=RunConfig(name="t"), stages={"score": from_dict(stage.Config, cfg, "score")},
                         models={"teacher": ModelRef(backend="openai", model="fake", base_url=url, max_retries=0)})
    ctx = StageContext(name="score", config=config, cfg=config.stages["score"], rundir=rd)
    stage.run(ctx)
    out = [json.loads(x) for x in (tmp_path / "run" / "score" / "examples.jsonl").read_text().splitlines()]
    return out, ctx.counts


def test_scores_every_example_counts_and_caches(tmp_path):
    with FakeOpenAI(_answer) as server:
        out, counts = _run(tmp_path, server.url, enabled=True)
        assert [r["id"] for r in out] == ["e0", "e1", "e2", "e3"]
        assert [r["score"] for r in out] == [4.25, 2.0, None, 4.25]
        assert out[0]["scores"] == {"query_realism": 4, "positive_relevance": 4, "negative_hardness": 4, "validity": 5}
        assert out[2]["score_reason"] not in (None, "not_sampled")
        unscored = [json.loads(x) for x in (tmp_path / "run" / "score" / "unscored.jsonl").read_text().splitlines()]
        assert unscored[0]["id"] == "e2" and unscored[0]["raw"] == "I cannot rate this."
        assert counts["scored"] == 3 and counts["mean_score"] == round((4.25 + 2 + 4.25) / 3, 4)
        assert len(server.served) == 4
        ledger = [r for r in iter_ledger(tmp_path / "run" / "ledger.jsonl") if r["stage"] == "score"]
        assert len(ledger) == 4 and all(r["role"] == "teacher" for r in ledger)
        again, _ = _run(tmp_path, server.url, enabled=True)  # a rerun pays nothing
        assert again == out and len(server.served) == 4


def test_off_by_default_and_a_seeded_sample(tmp_path):
    with FakeOpenAI(_answer) as server:
        out, counts = _run(tmp_path / "off", server.url)
        assert len(server.served) == 0 and all(r["score"] is None and r["score_reason"] == "not_sampled" for r in out)
        assert counts["enabled"] is False
        out, _ = _run(tmp_path / "s", server.url, enabled=True, sample=2)
        assert len(server.served) == 2 and sum(r["score_reason"] != "not_sampled" for r in out) == 2
        again, _ = _run(tmp_path / "s2", server.url, enabled=True, sample=2)
        assert [r["score_reason"] == "not_sampled" for r in again] == [r["score_reason"] == "not_sampled" for r in out]
