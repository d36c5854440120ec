"""The evaluate stage: the trained embedder against the base on the configured tasks, results.json."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from speed.runtime.config import ModelRef, RunConfig, SpeedConfig
from speed.runtime.rundir import RunDir, StageContext
from speed.stages import evaluate as stage

FIX = Path(__file__).resolve().parent / "fixtures" / "eval"


def test_evaluate_stage_trained_vs_base(tmp_path):
    from speed.models import resolve_model

    base_dir = resolve_model("all-minilm-l6-v2", want="embedder")
    rd = RunDir(tmp_path / "run")
    rd.write_manifest({"run": "t", "stages": {}})
    # a "trained" model: a copy of the base folder (linked), as train-embedder would record it
    (tmp_path / "run" / "train-embedder").mkdir(parents=True)
    os.symlink(base_dir, tmp_path / "run" / "train-embedder" / "model")
    rd.update_stage("train-embedder", status="done", artifacts={"model": {"path": "model"}})
    cfg = stage.Config(tasks=[str(FIX / "valid" / "TinySTS"), str(FIX / "valid" / "TinyPairs")],
                       cache_dir=str(tmp_path / "cache"))
    config = SpeedConfig(run=RunConfig(name="t"), stages={"evaluate": cfg},
                         models={"embedder": ModelRef(backend="sentence-transformers", model="all-minilm-l6-v2",
                                                      instruction=False)})
    stage.preflight(config, cfg)
    ctx = StageContext(name="evaluate", config=config, cfg=cfg, rundir=rd)
    stage.run(ctx)
    body = json.loads((tmp_path / "run" / "evaluate" / "results.json").read_text())
    assert body["is_trained"] is True
    assert body["trained"]["model"].endswith("train-embedder/model") and body["base"]["model"] == "all-minilm-l6-v2"
    assert set(body["delta"]) == {"TinySTS", "TinyPairs", "average"}
    assert abs(body["delta"]["TinySTS"]) < 1e-6  # the same weights
    assert body["base"]["encode"]["encoded"] == 0  # same weights, same identity: all from the cache
    assert {"results.json", "results.txt"} <= set(ctx.outputs)
    assert stage.STAGE.requires == ("train-embedder",) and stage.STAGE.roles == ("embedder",)


def test_decoder_base_is_set_up_as_trained_and_scores_get_intervals(tmp_path):
    """A decoder's base is evaluated as the trainer sets it up (EOS, last-token pooling, instruction), never
    as a mean-pooled language model; scores and the gain carry paired bootstrap intervals."""
    from speed.stages.train_embedder import Config as TrainConfig
    from speed.train.embedder import untrained_embedder

    rd = RunDir(tmp_path / "run")
    rd.write_manifest({"run": "t", "stages": {}})
    # the "trained" model: the untrained decoder itself, so that the gain is exactly zero
    untrained_embedder("smollm2-135m-instruct", tmp_path / "run" / "train-embedder", TrainConfig(max_length=64))
    rd.update_stage("train-embedder", status="done", artifacts={"model": {"path": "model"}})
    cfg = stage.Config(tasks=[str(FIX / "valid" / "TinySTS"), str(FIX / "valid" / "TinyClassification")],
                       cache_dir=str(tmp_path / "cache"), bootstrap=200)
    config = SpeedConfig(run=RunConfig(name="t"), stages={"evaluate": cfg, "train-embedder": TrainConfig(max_length=64)},
                         models={"embedder": ModelRef(backend="sentence-transformers", model="smollm2-135m-instruct")})
    ctx = StageContext(name="evaluate", config=config, cfg=cfg, rundir=rd)
    stage.run(ctx)
    body = json.loads((tmp_path / "run" / "evaluate" / "results.json").read_text())
    assert body["base"]["model"].endswith("evaluate/untrained/model") and body["base"]["instruction"] is True
    pooling = (tmp_path / "run" / "evaluate" / "untrained" / "model" / "1_Pooling" / "config.json").read_text()
    assert '"lasttoken"' in pooling
    iv = body["intervals"]
    assert set(iv) == {"TinySTS", "TinyClassification", "average"}
    for t in ("TinySTS", "TinyClassification"):
        assert iv[t]["base"][0] == pytest.approx(body["base"]["results"][t]["main_score"], abs=1e-4)
        assert iv[t]["gain"] == [0.0, 0.0, 0.0]  # the same weights: every resample gives a zero gain
        assert iv[t]["base"][1] <= iv[t]["base"][0] <= iv[t]["base"][2]
    assert "items" not in body["trained"]["results"]["TinySTS"]
    lines = stage.summary({"counts": ctx.counts}, rd.path)
    assert "gain +0.0000 [+0.0000, +0.0000] (no clear change)" in lines[0]


def test_stage_sections_parse_once_registered(monkeypatch):
    """What the registry lines enable: `evaluate:` and `report:` sections in a config."""
    from speed.runtime.config import build_config
    from speed.errors import ConfigError

    cfg = build_config({"models": {"embedder": "all-minilm-l6-v2"},
                        "evaluate": {"tasks": [str(FIX / "valid" / "TinySTS")], "instruction": "off"},
                        "report": {"prices": None}})
    assert cfg.stage("evaluate").instruction == "off" and cfg.stage("report").prices is None
    import pytest

    with pytest.raises(ConfigError, match="evaluate.instruction"):
        build_config({"evaluate": {"instruction": "maybe"}})
