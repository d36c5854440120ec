"""The managed llama-server engine on a real model (SmolLM2-135M) through the real CLI.

- a server killed by SIGSEGV mid-stage stops the run with one line naming the model and the signal;
  the rerun pays no finished sample again and, with the deterministic setting (one slot, no prompt
  cache), exports exactly what an uninterrupted run exports;
- a run SIGKILLed mid-stage with 4 batched slots leaves no llama-server behind (PR_SET_PDEATHSIG),
  and neither does a run that ends or fails; the rerun has the same sample ids as an uninterrupted
  run, none lost, duplicated or paid twice (texts may differ: with several slots a sample depends on
  its batch-mates, see the README).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from conftest import run_cli
from speed.errors import SpeedError
from speed.llm.ledger import iter_ledger

pytest.importorskip("llama_cpp")


def _binary_or_skip() -> None:
    from speed.llm.llama_server import find_binary

    try:
        find_binary()
    except SpeedError as exc:
        pytest.skip(str(exc))


GEN = "{{backend: llamacpp, model: smollm2-135m-instruct, n_threads: 2, {setting}}}"
SETTINGS = {"batched": "slots: 4", "deterministic": "slots: 1, options: {cache_prompt: false}"}
CONFIG = """
run: {{name: srv, seed: 3, until: export,
      skip: [seed, train-junior, root, judge, revise-signals, train-senior, train-revisor]}}
models:
  teacher: {gen}
  senior: {gen}
  revisor: {gen}
topics: {{count: 2}}
brainstorm: {{max_tokens: 64, kinds: [retrieval]}}
synthesize: {{count: 12, shard_size: 12, max_tokens: 160, proportions: {{sts: 1}}}}
revise: {{max_tokens: 96, shard_size: 6}}
export: {{quality: false}}
"""
ENV = {"SPEED_PROGRESS": "0"}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _config(tmp: Path, setting: str) -> Path:
    cfg = tmp / "srv.yaml"
    cfg.write_text(CONFIG.format(gen=GEN.format(setting=SETTINGS[setting])))
    return cfg


def _paid(run_dir: Path, stage: str) -> list[dict]:
    path = run_dir / "ledger.jsonl"
    if not path.exists():
        return []
    return [r for r in iter_ledger(path) if r["stage"] == stage and not r["cache_hit"] and not r["error"]]


def _servers_of(proc: subprocess.Popen) -> list[psutil.Process]:
    try:
        kids = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []
    return [k for k in kids if k.name().startswith("llama-server")]


def _gone(pids: set[int]) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            pass
    return True


def _wait_gone(pids: set[int], seconds: float = 20) -> bool:
    deadline = time.time() + seconds
    while not _gone(pids) and time.time() < deadline:
        time.sleep(0.1)
    return _gone(pids)


def _start_and_wait(cfg: Path, run_dir: Path, paid_at_least: int) -> tuple[subprocess.Popen, set[int]]:
    """Start ``speed run`` and return once synthesize has ``paid_at_least`` answers, with the server pids."""
    proc = subprocess.Popen([sys.executable, "-m", "speed", "run", str(cfg), "--run-dir", str(run_dir)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, **ENV})
    pids: set[int] = set()
    t0 = time.time()
    while time.time() - t0 < 600:
        servers = _servers_of(proc)
        pids |= {s.pid for s in servers}
        if len(_paid(run_dir, "synthesize")) >= paid_at_least and servers:
            return proc, pids
        if proc.poll() is not None:
            pytest.fail("the run ended before the kill: " + proc.stderr.read().decode()[-2000:])
        time.sleep(0.05)
    proc.kill()
    pytest.fail("synthesize did not get going in 600 s")


def _uninterrupted(tmp: Path, setting: str) -> Path:
    _binary_or_skip()
    run_dir = tmp / "run"
    out = open(tmp / "stdout.txt", "w")
    proc = subprocess.Popen([sys.executable, "-m", "speed", "run", str(_config(tmp, setting)), "--run-dir",
                             str(run_dir)], stdout=out, stderr=subprocess.PIPE, env={**os.environ, **ENV})
    pids: set[int] = set()
    while proc.poll() is None:  # collect the servers it starts, to check none outlives the run
        pids |= {s.pid for s in _servers_of(proc)}
        time.sleep(0.05)
    err = proc.stderr.read().decode()
    out.close()
    assert proc.returncode == 0, err[-3000:]
    assert pids and _gone(pids), "a llama-server outlived the run that started it"
    # the line that says which engine and how many slots each model got
    slots = "4 slots" if setting == "batched" else "1 slot "
    assert f"[synthesize] senior smollm2-135m-instruct on llama-server, {slots}" in (tmp / "stdout.txt").read_text()
    return run_dir


@pytest.fixture(scope="module")
def uninterrupted_deterministic(tmp_path_factory) -> Path:
    return _uninterrupted(tmp_path_factory.mktemp("full-deterministic"), "deterministic")


@pytest.fixture(scope="module")
def uninterrupted_batched(tmp_path_factory) -> Path:
    return _uninterrupted(tmp_path_factory.mktemp("full-batched"), "batched")


def _sample_ids(run_dir: Path) -> list[str]:
    rows = _lines(run_dir / "synthesize" / "examples.jsonl") + _lines(run_dir / "synthesize" / "rejected.jsonl")
    return sorted(r["id"] for r in rows)


def test_server_killed_by_sigsegv_mid_stage_is_one_line_and_the_rerun_pays_nothing_twice(
        tmp_path, uninterrupted_deterministic):
    cfg, run_dir = _config(tmp_path, "deterministic"), tmp_path / "run"
    proc, pids = _start_and_wait(cfg, run_dir, paid_at_least=3)
    server = max(_servers_of(proc), key=lambda p: p.create_time())
    os.kill(server.pid, signal.SIGSEGV)
    rc = proc.wait(timeout=300)
    err = proc.stderr.read().decode()
    assert rc == 2, err[-3000:]
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("speed: error: ") and "SIGSEGV" in last and "smollm2-135m-instruct" in last, last
    assert "rerun" in last
    assert _gone(pids | {server.pid})
    before = len(_paid(run_dir, "synthesize"))
    assert 3 <= before < 12

    again = run_cli("run", str(cfg), "--run-dir", str(run_dir), env=ENV, timeout=1200)
    assert again.returncode == 0, again.stderr[-3000:]
    # every synthesize sample is paid exactly once over both runs; the finished ones came back as hits
    assert len(_paid(run_dir, "synthesize")) == 12
    hits = [r for r in iter_ledger(run_dir / "ledger.jsonl") if r["stage"] == "synthesize" and r["cache_hit"]]
    assert len(hits) == before
    assert _sample_ids(run_dir) == _sample_ids(uninterrupted_deterministic)
    assert _lines(run_dir / "synthesize" / "examples.jsonl") == \
        _lines(uninterrupted_deterministic / "synthesize" / "examples.jsonl")
    assert _lines(run_dir / "export" / "data.jsonl") == _lines(uninterrupted_deterministic / "export" / "data.jsonl")


def test_sigkilled_batched_run_leaves_no_server_and_resumes_with_every_sample_once(tmp_path, uninterrupted_batched):
    cfg, run_dir = _config(tmp_path, "batched"), tmp_path / "run"
    proc, pids = _start_and_wait(cfg, run_dir, paid_at_least=2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _wait_gone(pids), "llama-server outlived a SIGKILLed run"
    again = run_cli("run", str(cfg), "--run-dir", str(run_dir), env=ENV, timeout=1200)
    assert again.returncode == 0, again.stderr[-3000:]
    ids = _sample_ids(run_dir)
    assert ids == _sample_ids(uninterrupted_batched) and len(ids) == len(set(ids)) == 12  # none lost or doubled
    assert len(_paid(run_dir, "synthesize")) == 12  # none paid twice
    exported = [r["id"] for r in _lines(run_dir / "export" / "data.jsonl")]
    assert len(exported) == len(set(exported))


def test_sigterm_mid_batch_exits_at_once_without_waiting_for_requests_in_flight(tmp_path, uninterrupted_batched):
    """SIGTERM (a scheduler's stop, `kill`): the run ends with 143 and one line at once -- queued requests are
    cancelled, those in flight are not waited for (their server is stopped) -- and no server is left."""
    cfg, run_dir = _config(tmp_path, "batched"), tmp_path / "run"
    proc, pids = _start_and_wait(cfg, run_dir, paid_at_least=2)
    t0 = time.time()
    os.kill(proc.pid, signal.SIGTERM)
    rc = proc.wait(timeout=60)
    took = time.time() - t0
    err = proc.stderr.read().decode()
    assert rc == 143 and "terminated; rerun the same command to resume" in err and "Traceback" not in err, err[-2000:]
    assert took < 15, f"SIGTERM took {took:.0f} s"
    assert _wait_gone(pids), "llama-server outlived a SIGTERMed run"
    again = run_cli("run", str(cfg), "--run-dir", str(run_dir), env=ENV, timeout=1200)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _sample_ids(run_dir) == _sample_ids(uninterrupted_batched)
    assert len(_paid(run_dir, "synthesize")) == 12
