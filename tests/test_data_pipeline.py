"""The data stages end to end on real small models (llama.cpp on this CPU), and kill-and-resume."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import pytest

from conftest import ROOT, run_cli
from speed.errors import SpeedError
from speed.llm.ledger import iter_ledger
from speed.runtime.rundir import RunDir

KINDS = {"retrieval", "classification", "sts", "short-short", "long-long"}
EVEN = "{retrieval: 1, classification: 1, sts: 1, short-short: 1, long-long: 1}"
# the llama-server setting whose samples depend on their seed alone (README: "Does batching change a sample?")
DETERMINISTIC = "slots: 1, options: {cache_prompt: false}"


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_untrained_generators_topics_to_export(tmp_path):
    """configs/untrained.yaml: qwen2.5-coder-1.5b teacher, qwen2.5-coder-0.5b junior/senior/revisor."""
    run_dir = tmp_path / "run"
    sets = ["topics.count=2", "seed.count=5", "root.count=3", "root.candidates_per_prompt=2",
            "synthesize.count=10", f"synthesize.proportions={EVEN}", f"seed.proportions={EVEN}",
            "synthesize.max_tokens=320", "revise.max_tokens=400"]
    args = ["run", str(ROOT / "configs" / "untrained.yaml"), "--run-dir", str(run_dir)]
    for s in sets:
        args += ["--set", s]
    proc = run_cli(*args, timeout=3600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    st = json.loads(run_cli("status", str(run_dir), "--json").stdout)
    for name in ("topics", "brainstorm", "seed", "root", "judge", "revise-signals", "synthesize", "revise",
                 "dedup", "export"):
        assert st["stages"][name]["state"] == "done", name
    for name in ("brainstorm", "seed", "judge", "revise-signals"):
        assert st["stages"][name]["usage"]["teacher"], name
    assert st["stages"]["synthesize"]["usage"]["senior"]
    assert st["stages"]["export"]["rows"]["data.parquet"] > 0

    from datasets import load_dataset

    ds = load_dataset("parquet", data_files=str(run_dir / "export" / "data.parquet"), split="train")
    assert set(ds.column_names) >= {"kind", "task", "query", "positive", "negative", "topic", "model", "revised"}
    assert set(ds["kind"]) == KINDS, Counter(ds["kind"])
    assert all(q and p for q, p in zip(ds["query"], ds["positive"]))
    card = (run_dir / "export" / "DATACARD.md").read_text()
    assert "## Funnel" in card and "teacher" in card


def _stage_status(run_dir, name):
    try:
        return RunDir(run_dir).read_manifest()["stages"].get(name, {}).get("status")
    except SpeedError:
        return None


def _shards_done(run_dir, name):
    return len(list((run_dir / name / "shards").glob("*.done"))) if (run_dir / name / "shards").exists() else 0


def test_kill_in_synthesize_then_rerun_matches_uninterrupted_run(tmp_path):
    """SIGKILL in the middle of synthesize; the rerun's export equals an uninterrupted run's, and the
    calls made before the kill are cache hits."""
    cfg = tmp_path / "kill.yaml"
    cfg.write_text(f"""
run: {{name: kill, seed: 3, until: export,
      skip: [seed, train-junior, root, judge, revise-signals, train-senior, train-revisor]}}
models:
  teacher: {{backend: llamacpp, model: smollm2-135m-instruct, n_threads: 2, {DETERMINISTIC}}}
  senior: {{backend: llamacpp, model: smollm2-135m-instruct, n_threads: 2, {DETERMINISTIC}}}
  revisor: {{backend: llamacpp, model: smollm2-135m-instruct, n_threads: 2, {DETERMINISTIC}}}
topics: {{count: 2}}
brainstorm: {{max_tokens: 64, kinds: [retrieval]}}
synthesize: {{count: 8, shard_size: 2, max_tokens: 96, proportions: {{sts: 1}}}}
revise: {{max_tokens: 96, shard_size: 4}}
export: {{quality: false}}
""")
    full, killed = tmp_path / "full", tmp_path / "killed"
    env = {"SPEED_PROGRESS": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "speed", "run", str(cfg), "--run-dir", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **env})
    t0 = time.time()
    while time.time() - t0 < 900:
        if _stage_status(killed, "synthesize") == "running" and _shards_done(killed, "synthesize") >= 2:
            break
        if proc.poll() is not None:
            pytest.fail("the run ended before it could be killed: " + proc.stderr.read().decode()[-2000:])
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = _shards_done(killed, "synthesize")
    assert 2 <= done_before < 4, done_before
    paid_before = sum(1 for r in iter_ledger(killed / "ledger.jsonl") if r["stage"] == "synthesize" and not r["cache_hit"])
    assert paid_before >= 2 * 2

    again = run_cli("run", str(cfg), "--run-dir", str(killed), env=env, timeout=1800)
    assert again.returncode == 0, again.stderr[-3000:]
    uninterrupted = run_cli("run", str(cfg), "--run-dir", str(full), env=env, timeout=1800)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]

    a, b = _lines(full / "export" / "data.jsonl"), _lines(killed / "export" / "data.jsonl")
    assert a == b and len({r["id"] for r in b}) == len(b)
    syn_full, syn_killed = _lines(full / "synthesize" / "examples.jsonl"), _lines(killed / "synthesize" / "examples.jsonl")
    assert syn_full == syn_killed
    rej = _lines(killed / "synthesize" / "rejected.jsonl")
    assert len(syn_killed) + len(rej) == 8  # nothing missing, nothing duplicated
    # every synthesize request is paid once; what was paid before the kill came back as cache hits
    ledger = [r for r in iter_ledger(killed / "ledger.jsonl") if r["stage"] == "synthesize"]
    paid = sum(not r["cache_hit"] for r in ledger)
    assert paid == 8, paid
    # shards done before the kill are not re-requested at all; a shard killed after its answers were
    # cached (but before its marker) comes back as cache hits
    assert sum(r["cache_hit"] for r in ledger) <= 2
    # the brainstorm calls of the killed run were not repeated either
    bs = [r for r in iter_ledger(killed / "ledger.jsonl") if r["stage"] == "brainstorm"]
    assert sum(not r["cache_hit"] for r in bs) == 2


@pytest.mark.slow
def test_kill_in_score_with_every_filter_on_then_rerun_matches_uninterrupted_run(tmp_path):
    """Every export filter on and the teacher's score stage: SIGKILL while score is running; the rerun's
    export (rows, filtered rows, per-filter funnel) equals an uninterrupted run's and no teacher call is
    paid twice."""
    cfg = tmp_path / "filters.yaml"
    cfg.write_text(f"""
run: {{name: filters, seed: 5, until: export,
      skip: [seed, train-junior, root, judge, revise-signals, train-senior, train-revisor]}}
models:
  teacher: {{backend: llamacpp, model: smollm2-135m-instruct, n_threads: 2, {DETERMINISTIC}}}
  senior: {{backend: llamacpp, model: qwen2.5-coder-0.5b-instruct, n_threads: 2, {DETERMINISTIC}}}
  revisor: {{backend: llamacpp, model: smollm2-135m-instruct, n_threads: 2, {DETERMINISTIC}}}
topics: {{count: 2}}
brainstorm: {{max_tokens: 96, kinds: [retrieval]}}
synthesize: {{count: 12, shard_size: 4, max_tokens: 256, proportions: {{retrieval: 1, sts: 1}}}}
revise: {{max_tokens: 160, shard_size: 4}}
score: {{enabled: true, shard_size: 2, max_tokens: 64}}
export: {{min_score: 2, false_negative_rule: percpos, false_negative_action: {{retrieval: mine, sts: strip}},
         round_trip: true, round_trip_k: 3, mine_negatives: add, mine_relative_margin: 0.0}}
""")
    full, killed = tmp_path / "full", tmp_path / "killed"
    env = {"SPEED_PROGRESS": "0"}
    proc = subprocess.Popen([sys.executable, "-m", "speed", "run", str(cfg), "--run-dir", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **env})
    t0 = time.time()
    while not (_stage_status(killed, "score") == "running" and _shards_done(killed, "score") >= 1):
        if proc.poll() is not None:
            pytest.fail("the run ended before it could be killed: " + proc.stderr.read().decode()[-2000:])
        if time.time() - t0 > 2400:
            proc.kill()
            pytest.fail("the run did not reach the score stage within 40 minutes")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    scored_before = sum(1 for r in iter_ledger(killed / "ledger.jsonl") if r["stage"] == "score" and not r["cache_hit"])
    assert scored_before >= 2
    assert len(_lines(killed / "dedup" / "examples.jsonl")) >= 4  # enough rows for the filters to act on

    again = run_cli("run", str(cfg), "--run-dir", str(killed), env=env, timeout=1800)
    assert again.returncode == 0, again.stderr[-3000:]
    uninterrupted = run_cli("run", str(cfg), "--run-dir", str(full), env=env, timeout=1800)
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]

    for name in ("data.jsonl", "filtered.jsonl", "st_triplets.jsonl"):
        assert _lines(full / "export" / name) == _lines(killed / "export" / name), name
    funnel = RunDir(killed).read_manifest()["stages"]["export"]["counts"]["filters"]
    assert funnel == RunDir(full).read_manifest()["stages"]["export"]["counts"]["filters"]
    assert [f["filter"] for f in funnel] == ["teacher_score", "false_negative", "round_trip", "mined_negatives"]
    unique = len(_lines(killed / "dedup" / "examples.jsonl"))
    assert funnel[0]["in"] == unique
    # the score stage asked the teacher once per unique example, in all (the calls before the kill are not repaid)
    ledger = [r for r in iter_ledger(killed / "ledger.jsonl") if r["stage"] == "score"]
    assert sum(not r["cache_hit"] for r in ledger) == unique
    rows = _lines(killed / "export" / "data.jsonl")
    assert all(r["mined_negative"] not in (r["positive"], r["query"]) for r in rows if r["mined_negative"])
