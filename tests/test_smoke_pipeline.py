"""configs/smoke.yaml end to end: every SPEED stage on real tiny models, in the default suite.

Teacher Qwen2.5-Coder-0.5B, junior / senior / revisor SmolLM2-135M trained a few LoRA steps each,
all-MiniLM-L6-v2 fine-tuned and evaluated against its untouched self on the built-in tasks. The
assertions are on values: every stage done, trained weights differ from the base, the ledger equals
the cache, the base embedder's scores equal the official all-MiniLM-L6-v2 ones, a rerun costs
nothing.
"""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from conftest import ROOT, run_cli
from speed.stages import STAGE_ORDER

# the official MTEB scores of all-MiniLM-L6-v2 on the built-in tasks (../shared/eval/README.md)
OFFICIAL = {"STSBenchmark": 0.82032, "Banking77Classification": 0.80037}


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("smoke") / "run"
    proc = run_cli("run", str(ROOT / "configs" / "smoke.yaml"), "--run-dir", str(run_dir), timeout=1500)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return run_dir, proc


def test_smoke_every_stage_done_with_a_closing_summary(smoke_run):
    run_dir, proc = smoke_run
    st = json.loads(run_cli("status", str(run_dir), "--json").stdout)["stages"]
    assert [n for n in STAGE_ORDER if st[n]["state"] != "done"] == []
    out = proc.stdout
    assert "== summary of" in out and "teacher" in out and "report" in out
    for name in ("brainstorm", "seed", "judge", "revise-signals"):
        assert st[name]["usage"]["teacher"], name
    for name, role in (("root", "junior"), ("synthesize", "senior"), ("revise", "revisor")):
        assert st[name]["usage"][role], name
    assert (run_dir / "report" / "report.html").stat().st_size > 1000
    assert (run_dir / "export" / "data.jsonl").stat().st_size > 0


def test_smoke_ledger_equals_cache_and_rerun_is_free(smoke_run):
    run_dir, _ = smoke_run
    rows = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    paid = [r for r in rows if not r["cache_hit"]]
    with sqlite3.connect(run_dir / "cache.sqlite") as db:
        cached = db.execute("select count(*) from completions").fetchone()[0]
    assert len(paid) == cached > 0  # every paid sample is in the cache, once
    proc = run_cli("run", str(ROOT / "configs" / "smoke.yaml"), "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr[-2000:]
    again = (run_dir / "ledger.jsonl").read_text().splitlines()
    assert len(again) == len(rows)  # nothing re-run, nothing paid
    assert "skipped" in proc.stdout


def test_smoke_trained_models_differ_from_their_base(smoke_run):
    run_dir, _ = smoke_run
    from safetensors.numpy import load_file

    from speed.models import resolve_model

    base = load_file(str(resolve_model("all-minilm-l6-v2", want="embedder") + "/model.safetensors"))
    tuned = load_file(str(run_dir / "train-embedder" / "model" / "model.safetensors"))
    common = set(base) & set(tuned)
    assert len(common) > 50
    assert max(float(np.abs(base[k] - tuned[k]).max()) for k in common) > 0  # fine-tuning moved weights

    for stage in ("train-junior", "train-senior", "train-revisor"):
        weights = load_file(str(run_dir / stage / "adapter" / "adapter_model.safetensors"))
        lora_b = [v for k, v in weights.items() if "lora_B" in k]
        assert lora_b and any(np.abs(v).max() > 0 for v in lora_b), stage  # LoRA B starts at zero
        assert (run_dir / stage / "adapter.gguf").stat().st_size > 0, stage


def test_smoke_base_scores_are_the_official_ones_and_trained_differ(smoke_run):
    run_dir, _ = smoke_run
    body = json.loads((run_dir / "evaluate" / "results.json").read_text())
    assert body["is_trained"] is True
    base = {t: r["main_score"] for t, r in body["base"]["results"].items()}
    trained = {t: r["main_score"] for t, r in body["trained"]["results"].items()}
    for task, ref in OFFICIAL.items():
        assert base[task] == pytest.approx(ref, abs=2e-4), task
    assert set(trained) == set(base) == set(OFFICIAL)
    assert body["delta"]["average"] == pytest.approx(body["trained"]["average"] - body["base"]["average"], abs=1e-6)
