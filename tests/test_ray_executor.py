"""The Ray executor (run.executor: ray) against the local one: same rows, resumable across each other.

Fast tests (default suite) run synthesize and revise on a pool of two OpenAI-shaped servers on
127.0.0.1 (deterministic answers, a delay per request), through a local Ray cluster of 2 CPU
workers; the slow one runs them on SmolLM2-135M through llama.cpp inside the workers.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import run_cli
from fake_openai import FakeOpenAI
from test_data_pipeline import _lines, _shards_done, _stage_status
from test_data_stages_unit import reply
from speed.runtime.config import ModelRef, build_config, load_config
from speed.errors import ConfigError
from speed.llm import LLMClient, Ledger, RequestCache
from speed.llm.client import endpoint_share
from speed.llm.ledger import UsageRecord, iter_ledger

SKIP = "[seed, train-junior, root, judge, revise-signals, train-senior, train-revisor]"
OUTPUTS = ("synthesize/examples.jsonl", "synthesize/rejected.jsonl", "revise/examples.jsonl", "revise/failures.jsonl")
GEN = ("synthesize", "revise")


# -- no Ray needed ------------------------------------------------------------------------------

def test_executor_ray_without_ray_is_one_line_exit_2(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("run: {name: r, executor: ray, until: topics}\ntopics: {count: 2}\n")
    code = ("import sys; sys.modules['ray'] = None; from speed.cli.main import main; "
            f"sys.exit(main(['run', {str(cfg)!r}, '--run-dir', {str(tmp_path / 'run')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("speed: error: run.executor: ray needs the Python package 'ray'")
    assert "pip install 'speed[ray]'" in lines[0]
    assert not (tmp_path / "run").exists()  # nothing written


@pytest.mark.parametrize("run, message", [
    ({"ray_workers": 0}, "run.ray_workers = 0 is not allowed: null or >= 1"),
    ({"ray_cpus_per_worker": 0}, "run.ray_cpus_per_worker = 0.0 is not allowed: must be > 0"),
    ({"ray_gpus_per_worker": -1}, "run.ray_gpus_per_worker = -1.0 is not allowed: must be >= 0"),
    ({"ray_object_store_mb": 10}, "run.ray_object_store_mb = 10 is not allowed: must be >= 80"),
    ({"ray_address": " "}, "run.ray_address = ' ' is not allowed: null (start a local Ray)"),
    ({"ray_max_restarts": -1}, "run.ray_max_restarts = -1 is not allowed: must be >= 0"),
])
def test_ray_keys_are_validated(run, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        build_config({"run": {"name": "r", **run}})


def test_endpoint_share_is_disjoint_when_there_are_enough_urls():
    urls = [f"u{i}" for i in range(5)]
    assert endpoint_share(urls, 0, 2) == ["u0", "u2", "u4"]
    assert endpoint_share(urls, 1, 2) == ["u1", "u3"]
    assert endpoint_share(urls[:2], 2, 3) == ["u0"]  # more workers than URLs: one each, round-robin
    assert endpoint_share(urls[:2], 1, 3) == ["u1"]
    assert endpoint_share(urls, 0, 1) == urls


def test_client_pickles_without_its_backend_and_adopts_the_worker_share(tmp_path):
    ref = ModelRef(backend="openai", model="m", base_url=["http://a/v1", "http://b/v1", "http://c/v1"])
    client = LLMClient(ref, "senior", "synthesize", RequestCache(tmp_path / "c.sqlite"), Ledger(tmp_path / "l.jsonl"))
    client._backend = object()  # a loaded model that cannot travel
    plain = pickle.loads(pickle.dumps(client))
    assert plain._backend is None and plain.ref.base_urls == ref.base_urls and plain.show_progress
    assert isinstance(plain.cache, RequestCache) and plain.cache.path == (tmp_path / "c.sqlite").resolve()
    assert plain.ledger.path == (tmp_path / "l.jsonl").resolve()
    # what an executor hosts for the workers (pickled to the host process), and the handles it passes
    seen = [(name, str(obj.path)) for name, obj in pickle.loads(pickle.dumps(client.shared())).items()]
    inworker = pickle.loads(pickle.dumps(client))
    inworker.attach({"cache": "C", "ledger": "L"}, 1, 2)
    assert inworker.ref.base_url == "http://b/v1" and not inworker.show_progress
    assert (inworker.cache, inworker.ledger) == ("C", "L")
    assert seen == [("cache", str((tmp_path / "c.sqlite").resolve())), ("ledger", str((tmp_path / "l.jsonl").resolve()))]
    assert inworker.model_id == client.model_id  # the cache key does not depend on the endpoint


def _hammer(args):
    path, worker, batches = args
    cache, ledger = RequestCache(Path(path) / "cache.sqlite"), Ledger(Path(path) / "ledger.jsonl")
    for b in range(batches):
        keys = [f"{worker}-{b}-{j}" for j in range(5)]
        cache.put_many([(k, "m", {"text": k * 50}) for k in keys])
        ledger.record_many(UsageRecord(stage="s", role="r", model="m", endpoint=k * 40) for k in keys)
    cache.close()
    return worker


def test_cache_and_ledger_take_several_writer_processes(tmp_path):
    """4 processes write the one SQLite cache and the one ledger at once: nothing lost, no torn line."""
    n_proc, batches = 4, 40
    with multiprocessing.get_context("spawn").Pool(n_proc) as pool:
        assert sorted(pool.map(_hammer, [(str(tmp_path), w, batches) for w in range(n_proc)])) == list(range(n_proc))
    keys = [f"{w}-{b}-{j}" for w in range(n_proc) for b in range(batches) for j in range(5)]
    with RequestCache(tmp_path / "cache.sqlite") as cache:
        assert len(cache) == len(keys)
        got = cache.get_many(keys)
        assert all(got[k] == {"text": k * 50} for k in keys)
    raw = (tmp_path / "ledger.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in raw]  # every line parses: none interleaved
    assert len(rows) == len(keys) and sorted(r["endpoint"] for r in rows) == sorted(k * 40 for k in keys)


# -- a pool of OpenAI-shaped servers on loopback --------------------------------------------------

def _pool_answer(body: dict) -> str:
    """Deterministic in (messages, seed): every fourth sample is not an example."""
    digest = hashlib.sha256(json.dumps([body["messages"], body.get("seed")]).encode()).digest()
    if "Brainstorm" in body["messages"][-1]["content"]:  # reply() hashes with Python's hash()
        return json.dumps([f"Find documents about subject {digest[2]} angle {j}" for j in range(3)])
    return reply(body["messages"], 1 if digest[0] % 4 == 0 else 2 + digest[1])


class _Pool:
    """Two OpenAI-shaped servers on loopback answering ``_pool_answer``, counting what they served."""

    def __init__(self, delay_s: float):
        self.servers = [FakeOpenAI(answer_request=_pool_answer, delay_s=delay_s).__enter__() for _ in range(2)]
        self.urls = [s.url for s in self.servers]

    def total(self) -> int:
        return sum(len(s.served) for s in self.servers)

    def close(self) -> None:
        for s in self.servers:
            s.__exit__(None, None, None)


@pytest.fixture
def pool():
    p = _Pool(delay_s=0.2)
    yield p
    p.close()


@pytest.fixture
def ray_shutdown():
    pytest.importorskip("ray")
    yield
    from speed.executors.ray_executor import shutdown

    shutdown()


def _pool_config(tmp_path, urls, count=16) -> Path:
    gen = f"{{backend: openai, model: fake, base_url: {json.dumps(urls)}, max_concurrency: 1}}"
    cfg = tmp_path / "pool.yaml"
    cfg.write_text(f"""
run: {{name: pool, seed: 4, until: revise, skip: {SKIP}, ray_workers: 2, ray_object_store_mb: 200}}
models: {{teacher: {gen}, senior: {gen}, revisor: {gen}}}
topics: {{count: 2}}
brainstorm: {{kinds: [retrieval]}}
synthesize: {{count: {count}, shard_size: 2, proportions: {{sts: 1, retrieval: 1}}}}
revise: {{shard_size: 2}}
""")
    return cfg


def _run(cfg, run_dir, executor="local"):
    """``speed run`` in this process (the Ray driver is this process when executor is ray)."""
    from speed.runtime.pipeline import Pipeline

    config = load_config(cfg, [f"run.executor={executor}"])
    return Pipeline(config, run_dir).run(log=lambda *a: None)


def _paid(run_dir, stages=GEN) -> int:
    return sum(1 for r in iter_ledger(run_dir / "ledger.jsonl") if r["stage"] in stages and not r["cache_hit"])


def _assert_same_outputs(a: Path, b: Path) -> None:
    for f in OUTPUTS:
        assert _lines(a / f) == _lines(b / f), f


def _prepared(tmp_path, cfg, name="base") -> Path:
    base = tmp_path / name
    proc = run_cli("run", str(cfg), "--run-dir", str(base), "--until", "brainstorm")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return base


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL a driver; then end, by pid, what it started that outlives it (Ray's agents)."""
    import psutil

    children = psutil.Process(proc.pid).children(recursive=True)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    _, alive = psutil.wait_procs(children, timeout=10)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=10)


def _start(cfg, run_dir, executor) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "speed", "run", str(cfg), "--run-dir", str(run_dir),
                             "--set", f"run.executor={executor}"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, env={**os.environ, "SPEED_PROGRESS": "0"})


def _kill_when(proc, run_dir, stage, at_least, timeout=600) -> int:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if _stage_status(run_dir, stage) == "running" and _shards_done(run_dir, stage) >= at_least:
            break
        if proc.poll() is not None:
            pytest.fail("the run ended before it could be killed: " + proc.stderr.read().decode()[-3000:])
        time.sleep(0.02)
    else:
        pytest.fail(f"{stage} did not reach {at_least} shards in {timeout}s")
    _kill_tree(proc)
    return _shards_done(run_dir, stage)


def test_ray_on_an_endpoint_pool_matches_local_even_when_a_worker_dies(tmp_path, pool, ray_shutdown):
    """2 Ray workers, each on its own endpoint of the pool; one worker process is SIGKILLed after 2
    shards: Ray restarts it and retries its shard. Same rows as local, every call paid once."""
    import psutil

    cfg = _pool_config(tmp_path, pool.urls)
    base = _prepared(tmp_path, cfg)
    local, ray_dir = _copy(base, tmp_path / "local"), _copy(base, tmp_path / "ray")
    _run(cfg, local, "local")
    hits_local = pool.total()
    killed = []

    def kill_a_worker():
        t0 = time.time()
        while time.time() - t0 < 300 and _shards_done(ray_dir, "synthesize") < 2:
            time.sleep(0.02)
        for p in psutil.Process().children(recursive=True):
            try:
                if "ray::_Worker" in " ".join(p.cmdline()):
                    p.kill()
                    killed.append(p.pid)
                    return
            except psutil.NoSuchProcess:
                continue

    t = threading.Thread(target=kill_a_worker)
    t.start()
    _run(cfg, ray_dir, "ray")
    t.join()
    assert killed, "no worker process was found to kill"

    _assert_same_outputs(local, ray_dir)
    syn = _lines(ray_dir / "synthesize" / "examples.jsonl")
    assert len(syn) + len(_lines(ray_dir / "synthesize" / "rejected.jsonl")) == 16
    assert 0 < len(syn) < 16 and len(_lines(ray_dir / "revise" / "examples.jsonl")) == len(syn)
    # each call paid once and recorded once; every answer is kept as it arrives, so the only request
    # asked again is the one the killed worker had in flight (max_concurrency 1)
    assert _paid(ray_dir) == _paid(local) == 16 + len(syn)
    assert _paid(ray_dir) <= pool.total() - hits_local <= _paid(ray_dir) + 1
    # each worker used its own endpoint (the ledger names the worker); the local run used both
    rows = [r for r in iter_ledger(ray_dir / "ledger.jsonl") if r["stage"] == "synthesize"]
    assert {r["worker"] for r in rows} == {0, 1}
    assert all(r["endpoint"] == pool.urls[r["worker"]] for r in rows)
    local_rows = [r for r in iter_ledger(local / "ledger.jsonl") if r["stage"] == "synthesize"]
    assert {r["worker"] for r in local_rows} == {None} and {r["endpoint"] for r in local_rows} == set(pool.urls)
    manifest = json.loads((ray_dir / "manifest.json").read_text())
    assert manifest["stages"]["synthesize"]["counts"] == json.loads((local / "manifest.json").read_text()
                                                                   )["stages"]["synthesize"]["counts"]
    assert manifest["stages"]["synthesize"]["usage"]["senior"]["fake"]["calls"] == 16


def test_ray_killed_resumes_under_local_and_local_killed_resumes_under_ray(tmp_path, pool, ray_shutdown):
    """SIGKILL a Ray driver in synthesize; resume locally and SIGKILL that in revise; finish under Ray.
    The result equals an uninterrupted local run, and no request was paid twice."""
    cfg = _pool_config(tmp_path, pool.urls)
    base = _prepared(tmp_path, cfg)
    full, killed = _copy(base, tmp_path / "full"), _copy(base, tmp_path / "killed")
    _run(cfg, full, "local")
    hits0 = pool.total()

    done = _kill_when(_start(cfg, killed, "ray"), killed, "synthesize", at_least=2)
    assert 2 <= done < 8, done
    in_flight = 2  # each worker's one request in flight (max_concurrency 1) is asked again
    assert _paid(killed) <= pool.total() - hits0 <= _paid(killed) + in_flight

    proc = _start(cfg, killed, "local")
    done = _kill_when(proc, killed, "revise", at_least=1)
    n_revise_shards = (len(_lines(killed / "synthesize" / "examples.jsonl")) + 1) // 2
    assert 1 <= done < n_revise_shards

    _run(cfg, killed, "ray")
    _assert_same_outputs(full, killed)
    rows = _lines(killed / "revise" / "examples.jsonl")
    assert len({r["id"] for r in rows}) == len(rows)  # nothing duplicated
    # every request paid exactly once across the three runs, and the ledger says so
    assert _paid(killed) == _paid(full)
    assert _paid(killed) <= pool.total() - hits0 <= _paid(killed) + in_flight + 1  # + the local run's one


# -- a real small model: llama.cpp inside the workers ------------------------------------------------

def _smollm_config(tmp_path) -> Path:
    # one slot, no prompt cache: samples that depend on their seed alone, whichever process runs them
    gen = "{backend: llamacpp, model: smollm2-135m-instruct, n_threads: 1, slots: 1, options: {cache_prompt: false}}"
    cfg = tmp_path / "smol.yaml"
    cfg.write_text(f"""
run: {{name: smol, seed: 3, until: revise, skip: {SKIP}, ray_workers: 2, ray_object_store_mb: 200}}
models:
  teacher: {gen}
  senior: {{backend: llamacpp, model: smollm2-135m-instruct, n_threads: 1, json_mode: true, slots: 1,
           options: {{cache_prompt: false}}}}
  revisor: {gen}
topics: {{count: 2}}
brainstorm: {{max_tokens: 64, kinds: [retrieval]}}
synthesize: {{count: 8, shard_size: 2, max_tokens: 96, proportions: {{sts: 1}}}}
revise: {{max_tokens: 96, shard_size: 2}}
""")
    return cfg


@pytest.mark.slow
def test_ray_llamacpp_matches_local_and_a_killed_ray_run_resumes_locally(tmp_path, ray_shutdown):
    """SmolLM2-135M (llama.cpp, 1 thread) in 2 Ray workers: the same rows as the local executor; a Ray
    driver SIGKILLed in synthesize resumes under the local executor with nothing lost or paid twice."""
    cfg = _smollm_config(tmp_path)
    base = _prepared(tmp_path, cfg)
    local, ray_dir, killed = (_copy(base, tmp_path / n) for n in ("local", "ray", "killed"))
    _run(cfg, local, "local")
    assert _lines(local / "synthesize" / "examples.jsonl"), "no valid example to revise"
    _run(cfg, ray_dir, "ray")
    from speed.executors.ray_executor import shutdown

    shutdown()
    _assert_same_outputs(local, ray_dir)
    assert _paid(ray_dir) == _paid(local)

    done = _kill_when(_start(cfg, killed, "ray"), killed, "synthesize", at_least=1)
    assert 1 <= done < 4, done
    again = run_cli("run", str(cfg), "--run-dir", str(killed), env={"SPEED_PROGRESS": "0"}, timeout=1800)
    assert again.returncode == 0, again.stderr[-3000:]
    _assert_same_outputs(local, killed)
    rows = _lines(killed / "synthesize" / "examples.jsonl") + _lines(killed / "synthesize" / "rejected.jsonl")
    assert len(rows) == 8 and len({r["id"] for r in rows}) == 8
    assert _paid(killed) == _paid(local)
