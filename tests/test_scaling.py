"""Scaling-law fits recover known parameters; the experiment writes its CSV, skips done sizes, plots."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from speed.analysis import scaling

FIX = Path(__file__).resolve().parent / "fixtures" / "eval"
SIZES = [32 * 2 ** i for i in range(10)]


def test_loglinear_fit_recovers_parameters():
    rng = np.random.default_rng(0)
    y = scaling.loglinear(np.array(SIZES, float), 0.30, 0.05) + rng.normal(0, 0.002, len(SIZES))
    fit = scaling.fit_law("loglinear", SIZES, y, n_boot=200, target=0.9)
    assert fit.params["a"] == pytest.approx(0.30, abs=0.01)
    assert fit.params["b"] == pytest.approx(0.05, abs=0.002)
    lo, hi = fit.ci["b"]
    assert lo <= 0.05 <= hi and lo < hi
    assert fit.r2 > 0.99 and fit.rmse < 0.005
    assert fit.size_for_target == pytest.approx(math.exp((0.9 - fit.params["a"]) / fit.params["b"]))
    assert fit.size_for_target_ci[0] <= fit.size_for_target <= fit.size_for_target_ci[1]


def test_saturating_fit_recovers_parameters():
    rng = np.random.default_rng(1)
    y = scaling.saturating(np.array(SIZES, float), 0.85, 1.2, 0.5) + rng.normal(0, 0.001, len(SIZES))
    fit = scaling.fit_law("saturating", SIZES, y, n_boot=100, target=0.84)
    assert fit.params["c"] == pytest.approx(0.85, abs=0.01)
    assert fit.params["alpha"] == pytest.approx(0.5, abs=0.08)
    assert fit.params["k"] == pytest.approx(1.2, rel=0.35)
    assert fit.ci["c"][0] <= 0.85 <= fit.ci["c"][1]
    assert fit.r2 > 0.995
    truth = (1.2 / (0.85 - 0.84)) ** (1 / 0.5)
    assert fit.size_for_target == pytest.approx(truth, rel=0.5)
    assert scaling.size_for("saturating", [0.85, 1.2, 0.5], 0.9) == math.inf  # beyond the asymptote


def test_too_few_points_is_a_clear_error():
    from speed.errors import SpeedError

    with pytest.raises(SpeedError, match="at least 3 distinct sizes"):
        scaling.fit_law("saturating", [10, 20], [0.1, 0.2])
    fits = scaling.fit_all([10, 20], [0.1, 0.2], n_boot=10)
    assert "error" in fits["saturating"] and isinstance(fits["loglinear"], scaling.Fit)


def test_doubling_sizes():
    assert scaling.doubling_sizes(300, 32) == [32, 64, 128, 256, 300]
    assert scaling.doubling_sizes(64, 32) == [32, 64]


def _rows(n):
    return [{"id": f"e{i}", "kind": "sts", "task": "t", "query": f"sentence number {i}", "positive": f"number {i}",
             "negative": f"something else {i}"} for i in range(n)]


def test_run_scaling_csv_rerun_and_plot(tmp_path):
    calls = []

    def fake_train(base, rows, out_dir, cfg, seed, instruction):
        calls.append(len(rows))
        return {"model": "all-minilm-l6-v2"}  # the base model stands in for the trained one (the fit is what's tested)

    kw = dict(task_dirs=[FIX / "valid" / "TinySTS"], cache_dir=tmp_path / "cache", n_boot=20, target=0.95,
              trainer=fake_train, log=lambda m: None)
    doc = scaling.run_scaling(_rows(64), "all-minilm-l6-v2", tmp_path / "sc", [8, 16, 32, 64], **kw)
    assert calls == [8, 16, 32, 64]
    with open(tmp_path / "sc" / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["size"]) for r in rows] == [8, 16, 32, 64]
    assert set(doc["fits"]) == {"loglinear", "saturating"}
    assert (tmp_path / "sc" / "scaling.png").stat().st_size > 1000
    assert json.loads((tmp_path / "sc" / "fit.json").read_text())["points"][0]["size"] == 8
    calls.clear()
    scaling.run_scaling(_rows(64), "all-minilm-l6-v2", tmp_path / "sc", [8, 16, 32, 64, 48], **kw)
    assert calls == [48]  # done sizes are skipped
    from speed.errors import InputError

    with pytest.raises(InputError, match="outside 1..64"):
        scaling.run_scaling(_rows(64), "all-minilm-l6-v2", tmp_path / "sc", [128], **kw)


@pytest.mark.slow
def test_speed_scaling_cli_trains_four_sizes(tmp_path):
    from speed.runtime.rundir import RunDir

    rd = RunDir(tmp_path / "run")
    rd.write_manifest({"run": "scaling", "stages": {}})
    (tmp_path / "run" / "export").mkdir(parents=True)
    (tmp_path / "run" / "export" / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _rows(64)))
    # the sizes and the target come from the run's config (its `scaling` section)
    (tmp_path / "run" / "config.yaml").write_text("run: {name: scaling}\nscaling: {sizes: [8, 16, 32, 64], target_score: 0.9}\n")
    proc = subprocess.run([sys.executable, "-m", "speed.cli.eval_commands", "scaling", str(tmp_path / "run"), "--tasks", str(FIX / "valid" / "TinySTS"),
                           str(FIX / "valid" / "TinyClassification"), str(FIX / "valid" / "TinyPairs"),
                           "--boot", "50", "--batch-size", "8", "--lr", "5e-4", "--cache-dir", str(tmp_path / "c")],
                          capture_output=True, text=True, timeout=3000)
    assert proc.returncode == 0, proc.stderr[-3000:]
    fit = json.loads((tmp_path / "run" / "scaling" / "fit.json").read_text())
    assert [p["size"] for p in fit["points"]] == [8, 16, 32, 64]
    assert fit["target"] == 0.9
    assert len({p["score"] for p in fit["points"]}) > 1  # the models were really trained (they differ)
    for law in ("loglinear", "saturating"):
        f = fit["fits"][law]
        assert "params" in f and set(f["ci95"]) == set(f["params"]) and "r2" in f
    assert (tmp_path / "run" / "scaling" / "scaling.png").stat().st_size > 1000
    assert "score = a + b ln N" in proc.stdout and "score = c - k N^-alpha" in proc.stdout
