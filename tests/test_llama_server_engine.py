"""The managed llama-server engine on a real model (SmolLM2-135M) through the real CLI.

- a server killed by SIGSEGV mid-stage stops the run with one line naming the model and the signal;
  the rerun pays no finished sample again and exports what an uninterrupted run exports;
- a run SIGKILLed mid-stage leaves no llama-server behind (PR_SET_PDEATHSIG), and neither does a
  run that ends or fails; the rerun exports the same examples (same ids), each sample paid once.
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


GEN = "{{backend: llamacpp, model: smollm2-135m-instruct, n_threads: 2, slots: {slots}}}"
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
SLOTS = 4
ENV = {"SPEED_PROGRESS": "0"}


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _config(tmp: Path) -> Path:
    cfg = tmp / "srv.yaml"
    cfg.write_text(CONFIG.format(gen=GEN.format(slots=SLOTS)))
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


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    _binary_or_skip()
    tmp = tmp_path_factory.mktemp("full")
    run_dir = tmp / "run"
    out = open(tmp / "stdout.txt", "w")
    proc = subprocess.Popen([sys.executable, "-m", "speed", "run", str(_config(tmp)), "--run-dir", str(run_dir)],
                            stdout=out, stderr=subprocess.PIPE, env={**os.environ, **ENV})
    pids: set[int] = set()
    while proc.poll() is None:  # collect the servers it starts, to check none outlives the run
        pids |= {s.pid for s in _servers_of(proc)}
        time.sleep(0.05)
    err = proc.stderr.read().decode()
    assert proc.returncode == 0, err[-3000:]
    assert pids and _gone(pids), "a llama-server outlived the run that started it"
    out.close()
    # the line that says which engine and how many slots each model got
    assert "[synthesize] senior smollm2-135m-instruct on llama-server, 4 slots" in (tmp / "stdout.txt").read_text()
    return run_dir


def test_server_killed_by_sigsegv_mid_stage_is_one_line_and_the_rerun_pays_nothing_twice(tmp_path, uninterrupted):
    cfg, run_dir = _config(tmp_path), tmp_path / "run"
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
    assert _lines(run_dir / "export" / "data.jsonl") == _lines(uninterrupted / "export" / "data.jsonl")


def test_sigkilled_run_leaves_no_server_and_resumes_to_the_same_export(tmp_path, uninterrupted):
    cfg, run_dir = _config(tmp_path), tmp_path / "run"
    proc, pids = _start_and_wait(cfg, run_dir, paid_at_least=2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 20
    while not _gone(pids) and time.time() < deadline:
        time.sleep(0.1)
    assert _gone(pids), "llama-server outlived a SIGKILLed run"
    again = run_cli("run", str(cfg), "--run-dir", str(run_dir), env=ENV, timeout=1200)
    assert again.returncode == 0, again.stderr[-3000:]
    a, b = _lines(uninterrupted / "export" / "data.jsonl"), _lines(run_dir / "export" / "data.jsonl")
    assert [r["id"] for r in a] == [r["id"] for r in b] and len({r["id"] for r in b}) == len(b)
    assert a == b
    assert len(_paid(run_dir, "synthesize")) == 12  # none lost, none paid twice
