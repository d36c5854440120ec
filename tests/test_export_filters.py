"""export: likely false negatives of the kinds in ``false_negative_kinds`` (default STS) are filtered out
with their reason; other kinds only with ``drop_false_negatives`` (reference embedder: all-MiniLM-L6-v2)."""

from __future__ import annotations

import json

from speed.runtime.config import ModelRef, RunConfig, SpeedConfig
from speed.runtime.rundir import RunDir, StageContext
from speed.stages import export as stage
from speed.synth.records import Example

STS_NEAR = {"S1": "Science is the systematic study of the natural world.",
            "S2": "Astronomy studies planets and stars.",
            "S3": "Science is the systematic study of the natural world through observation."}
STS_OK = {"S1": "A man is playing a guitar on stage.", "S2": "A man plays the guitar in front of a crowd.",
          "S3": "Stock markets fell sharply on Monday."}
RET_FN = {"user_query": "how to bake sourdough bread",
          "positive_document": "Our bakery sells cakes.",
          "hard_negative_document": "How to bake sourdough bread at home: a step by step guide."}


def _run(tmp_path, **cfg):
    rd = RunDir(tmp_path / "run")
    rd.write_manifest({"run": "t", "stages": {}})
    rows = [Example(id=f"e{i}", kind=k, task="t", topic="x", fields=f).to_dict()
            for i, (k, f) in enumerate([("sts", STS_NEAR), ("sts", STS_OK), ("retrieval", RET_FN)])]
    (tmp_path / "run" / "dedup").mkdir(parents=True)
    (tmp_path / "run" / "dedup" / "examples.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = SpeedConfig(run=RunConfig(name="t"), stages={"export": stage.Config(**cfg)},
                         models={"reference_embedder": ModelRef(backend="sentence-transformers", model="all-minilm-l6-v2")})
    ctx = StageContext(name="export", config=config, cfg=config.stages["export"], rundir=rd)
    stage.run(ctx)
    read = lambda name: [json.loads(x) for x in (tmp_path / "run" / "export" / name).read_text().splitlines()]
    return read("data.jsonl"), read("filtered.jsonl")


def test_sts_near_paraphrase_triple_is_filtered_by_default(tmp_path):
    kept, filtered = _run(tmp_path)
    assert [r["id"] for r in filtered] == ["e0"] and filtered[0]["reason"] == "false_negative"
    assert filtered[0]["sim_neg"] >= filtered[0]["sim_pos"]
    assert [r["id"] for r in kept] == ["e1", "e2"]  # the retrieval false negative is flagged, not dropped
    assert kept[1]["false_negative"] is True


def test_every_kind_with_drop_false_negatives_and_none_without_kinds(tmp_path):
    _, filtered = _run(tmp_path / "a", drop_false_negatives=True)
    assert [r["id"] for r in filtered] == ["e0", "e2"]
    kept, filtered = _run(tmp_path / "b", false_negative_kinds=[])
    assert filtered == [] and len(kept) == 3
