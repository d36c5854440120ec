"""The openai endpoint pool: circuit breaker, per-endpoint ledger records, and a real stage over a
pool of two loopback servers where one fails half its requests. Also: the API key reaches the
server but no file the project writes."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from conftest import run_cli, wait_for
from fake_openai import FakeOpenAI, FaultProxy
from speed.runtime.config import ModelRef, build_config
from speed.errors import ConfigError
from speed.llm import LLMClient, Ledger, Request, RequestCache, SamplingParams
from speed.llm.backends.openai_backend import _Endpoints
from speed.llm.ledger import by_endpoint, iter_ledger, summarize, totals

KEY = "sk-test-SECRET-7f3a9c1e5b-do-not-write"
TOPICS = ["Gardening", "Astronomy", "Beekeeping", "Sailing", "Chess openings", "Bread baking"]


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


# -- the breaker itself ----------------------------------------------------------------------------

def _take(ep, want: int) -> None:
    """Acquire until endpoint ``want`` comes up (the others answer fine meanwhile)."""
    for _ in range(10):
        i = ep.acquire()
        if i == want:
            return
        ep.release(i)
    raise AssertionError(f"endpoint {want} never chosen")


def test_breaker_opens_after_n_failures_then_half_open_trial():
    clock = FakeClock()
    ep = _Endpoints(["a", "b"], failures=3, cooldown_s=10, clock=clock)
    for k in range(3):  # a fails three times in a row (b's answers in between do not reset a)
        _take(ep, 0)
        ep.release(0, failed=True)
        assert ep.state()["a"]["open"] == (k == 2)
    assert ep.consecutive[0] == 3 and ep.trips[0] == 1
    assert [ep.acquire() for _ in range(4)] == [1, 1, 1, 1]  # a is out: everything goes to b
    for _ in range(4):
        ep.release(1)
    clock.t += 9.9
    assert ep.acquire() == 1
    ep.release(1)
    clock.t += 0.1  # cooldown over: a is half-open and gets one trial
    _take(ep, 0)
    assert [ep.acquire() for _ in range(3)] == [1, 1, 1]  # no second trial while the first is in flight
    for _ in range(3):
        ep.release(1)
    ep.release(0, failed=True)  # the trial failed: out for another cooldown
    assert ep.trips[0] == 2 and ep.state()["a"]["open"]
    assert ep.acquire() == 1
    ep.release(1)
    clock.t += 10.0
    _take(ep, 0)
    ep.release(0)  # the trial answered: a is back in rotation
    assert not ep.state()["a"]["open"] and ep.consecutive[0] == 0
    assert sorted(ep.acquire() for _ in range(2)) == [0, 1]
    assert ep.state()["a"] == {"answered": 1, "failed": 4, "trips": 2, "open": False}


def test_breaker_all_out_waits_for_the_earliest_instead_of_failing():
    ep = _Endpoints(["a", "b"], failures=1, cooldown_s=0.4)
    i = ep.acquire()
    ep.release(i, failed=True)  # first one out (until t0 + 0.4)
    time.sleep(0.15)
    j = ep.acquire()
    assert j != i
    ep.release(j, failed=True)  # second out too, until later
    t0 = time.monotonic()
    k = ep.acquire()  # blocks until the first one's cooldown ends
    waited = time.monotonic() - t0
    assert k == i and 0.15 <= waited <= 0.45, waited


def test_breaker_off_and_a_success_resets_the_count():
    ep = _Endpoints(["a"], failures=0, cooldown_s=1)
    for _ in range(20):
        ep.release(ep.acquire(), failed=True)
    assert not ep.state()["a"]["open"] and ep.state()["a"]["failed"] == 20
    ep = _Endpoints(["a"], failures=2, cooldown_s=1)
    for failed in (True, False, True, False, True):
        ep.release(ep.acquire(), failed=failed)
    assert ep.trips == [0] and ep.consecutive == [1]


def test_breaker_keys_are_validated():
    def ref(**opts):
        return build_config({"models": {"teacher": {"backend": "openai", "model": "m", "base_url": "http://x/v1",
                                                    "options": opts}}})

    assert ref(circuit_failures=2, circuit_cooldown_s=0.5).models["teacher"].options["circuit_failures"] == 2
    with pytest.raises(ConfigError, match=r"models\.teacher\.options\.circuit_failures = -1 is not allowed"):
        ref(circuit_failures=-1)
    with pytest.raises(ConfigError, match=r"options\.circuit_cooldown_s = 'soon' is not allowed"):
        ref(circuit_cooldown_s="soon")
    with pytest.raises(ConfigError, match=r"options\.json_format"):
        ref(json_format="xml")


def test_dead_endpoint_is_taken_out_and_recorded(tmp_path):
    """One endpoint refuses connections: after circuit_failures tries it gets no more requests;
    every request is answered by the other, and the ledger names the dead one's failures."""
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    with FakeOpenAI(lambda p: f"echo {p}") as good:
        ref = ModelRef(backend="openai", model="fake", base_url=[dead, good.url], max_concurrency=1,
                       timeout_s=5, max_retries=3,
                       options={"backoff_base_s": 0.0, "circuit_failures": 2, "circuit_cooldown_s": 60})
        ledger = Ledger(tmp_path / "ledger.jsonl")
        client = LLMClient(ref, "teacher", "brainstorm", None, ledger)
        reqs = [Request([{"role": "user", "content": f"q{i}"}], SamplingParams(max_tokens=16), seed=i)
                for i in range(12)]
        out = client.generate(reqs)
        state = client.backend.endpoints.state()
        client.close()
    assert [r[0].text for r in out] == [f"echo q{i}" for i in range(12)]
    assert sorted(good.served) == sorted(f"q{i}" for i in range(12))  # each once
    assert state[dead] == {"answered": 0, "failed": 2, "trips": 1, "open": True}
    rows = list(iter_ledger(ledger.path))
    assert all(r["endpoint"] == good.url and not r["error"] for r in rows)
    assert by_endpoint(rows) == {good.url: {"answered": 12, "failures": 0}, dead: {"answered": 0, "failures": 2}}
    assert totals(summarize(rows))["retries"] == 2


def test_each_answer_is_cached_and_recorded_as_it_arrives(tmp_path):
    """12 requests, 2 in flight at a time; the server holds request 5 on. While the client waits for
    it, the 5 answers it has are already in the cache and the ledger (the batch of 4 x
    max_concurrency = 8 they belong to is not finished): a kill now would re-ask only what is in
    flight. Released, every request is answered once."""
    with FakeOpenAI(lambda p: f"echo {p}", hold_from=5) as srv:
        ref = ModelRef(backend="openai", model="fake", base_url=srv.url, max_concurrency=2, timeout_s=30)
        cache, ledger = RequestCache(tmp_path / "cache.sqlite"), Ledger(tmp_path / "ledger.jsonl")
        client = LLMClient(ref, "teacher", "brainstorm", cache, ledger, show_progress=False)
        reqs = [Request([{"role": "user", "content": f"q{i}"}], SamplingParams(max_tokens=16), seed=i)
                for i in range(12)]
        out: list = []
        t = threading.Thread(target=lambda: out.extend(client.generate(reqs)))
        t.start()
        try:
            assert srv.held.wait(30)
            assert wait_for(lambda: srv.received == 7, timeout=30)  # both slots are now held
            assert wait_for(lambda: len(cache) == 5, timeout=30)
            time.sleep(0.3)  # nothing more arrives while the server holds
            assert len(cache) == 5 and srv.received == 7
            rows = list(iter_ledger(ledger.path))
            assert len(rows) == 5 and not any(r["cache_hit"] or r["error"] for r in rows)
            assert sorted(cache.get_many([client.key(r, 0) for r in reqs])) == sorted(
                client.key(reqs[i], 0) for i in range(12) if f"q{i}" in srv.served)
        finally:
            srv.release()
            t.join(60)
        client.close()
    assert [r[0].text for r in out] == [f"echo q{i}" for i in range(12)]
    assert sorted(srv.served) == sorted(f"q{i}" for i in range(12)) and srv.received == 12
    assert len(cache) == 12 and len(list(iter_ledger(ledger.path))) == 12


# -- a real stage over the pool --------------------------------------------------------------------

def _config(tmp_path, urls, extra="") -> str:
    (tmp_path / "topics.txt").write_text("\n".join(TOPICS) + "\n")
    cfg = tmp_path / "pool.yaml"
    cfg.write_text(f"""
run: {{name: pool, seed: 1, until: brainstorm}}
models:
  teacher:
    backend: openai
    model: fake-teacher
    base_url: {json.dumps(urls)}
    api_key_env: SPEED_FAKE_KEY
    max_concurrency: 4
    timeout_s: 10
    max_retries: 8
    options: {{backoff_base_s: 0.01, backoff_max_s: 0.05{extra}}}
topics: {{source: 'paths:{tmp_path / "topics.txt"}', count: {len(TOPICS)}}}
brainstorm: {{shard_size: 8}}
""")
    return str(cfg)


def test_brainstorm_over_a_pool_with_a_flaky_endpoint(tmp_path):
    """Endpoint B fails every other request it gets (HTTP 500). Every brainstorm request is
    answered exactly once, the server-side counts equal the ledger's, and B's failures are in the
    ledger."""
    with FakeOpenAI() as a, FaultProxy(a.url, fail=lambda n: n % 2 == 0) as b:
        run_dir = tmp_path / "run"
        proc = run_cli("run", _config(tmp_path, [a.url, b.url]), "--run-dir", str(run_dir),
                       env={"SPEED_FAKE_KEY": KEY})
        assert proc.returncode == 0, proc.stderr[-2000:]
        served = list(a.served)
        via_b, failed_b = b.forwarded, b.failed
    n = len(TOPICS) * 4  # four asymmetric kinds per topic
    rows = [r for r in iter_ledger(run_dir / "ledger.jsonl") if r["stage"] == "brainstorm"]
    assert len(rows) == n and not any(r["error"] or r["cache_hit"] for r in rows)
    # each prompt answered exactly once: no duplicate upstream answers, none lost
    counts = Counter(served)
    assert len(counts) == n and set(counts.values()) == {1}
    assert failed_b >= 1 and via_b >= 1
    ends = by_endpoint(rows)
    assert ends == {a.url: {"answered": n - via_b, "failures": 0}, b.url: {"answered": via_b, "failures": failed_b}}
    assert sum(r["attempts"] - 1 for r in rows) == failed_b
    tasks = [json.loads(line) for line in (run_dir / "brainstorm" / "tasks.jsonl").read_text().splitlines()]
    assert len(tasks) == n and len({(t["topic"], t["kind"]) for t in tasks}) == n
    assert all(t["topic"] in t["task"] for t in tasks)
    # analysis still reads the ledger: speed cost and speed status
    cost = run_cli("cost", str(run_dir), "--json")
    assert cost.returncode == 0, cost.stderr
    st = json.loads(run_cli("status", str(run_dir), "--json").stdout)
    usage = st["stages"]["brainstorm"]["usage"]["teacher"]["fake-teacher"]
    assert usage["calls"] == n and usage["retries"] == failed_b and usage["errors"] == 0


def test_api_key_reaches_the_server_and_no_file(tmp_path):
    """A distinctive key in the environment: every request carries it, no file under the run
    directory (manifest, ledger, cache, config, stage outputs, the report) and no output of
    run/status/cost/report/--dry-run contains it."""
    with FakeOpenAI() as a, FaultProxy(a.url, fail=lambda n: n % 3 == 0) as b:
        run_dir = tmp_path / "run"
        cfg = _config(tmp_path, [a.url, b.url])
        proc = run_cli("run", cfg, "--run-dir", str(run_dir), env={"SPEED_FAKE_KEY": KEY})
        assert proc.returncode == 0, proc.stderr[-2000:]
        auth = list(a.auth) + list(b.auth)
    assert auth and set(auth) == {f"Bearer {KEY}"}
    outputs = [proc.stdout, proc.stderr]
    for args in (("status", str(run_dir)), ("status", str(run_dir), "--json"), ("cost", str(run_dir)),
                 ("run", cfg, "--run-dir", str(run_dir), "--dry-run", "--json"), ("report", str(run_dir))):
        p = run_cli(*args, env={"SPEED_FAKE_KEY": KEY})
        assert p.returncode == 0, (args, p.stderr)
        outputs += [p.stdout, p.stderr]
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    assert {"manifest.json", "ledger.jsonl", "cache.sqlite", "config.yaml", "tasks.jsonl", "report.html",
            "report.md"} <= {p.name for p in files}
    for path in files:
        data = path.read_bytes()
        assert KEY.encode() not in data and b"SECRET-7f3a" not in data, path
    for text in outputs:
        assert KEY not in text
    assert "SPEED_FAKE_KEY" in (run_dir / "config.yaml").read_text()  # the variable's name only


def test_wrong_key_stops_the_stage_with_one_line(tmp_path):
    """A server that answers 401 (and echoes the key): one line naming the endpoint, exit 2, and the
    key in no file."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = json.dumps({"error": {"message": f"invalid key {self.headers.get('Authorization')}"}}).encode()
            self.send_response(401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{srv.server_address[1]}/v1"
        run_dir = tmp_path / "run"
        proc = run_cli("run", _config(tmp_path, [url]), "--run-dir", str(run_dir), env={"SPEED_FAKE_KEY": KEY})
    finally:
        srv.shutdown()
        srv.server_close()
    assert proc.returncode == 2
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert url in err[0] and "HTTP 401" in err[0] and "api_key_env" in err[0]
    assert KEY not in proc.stderr + proc.stdout
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path


def _cached(path: Path) -> int:
    """Rows in a run's request cache (0 while the file does not exist yet)."""
    if not path.exists():
        return 0
    with RequestCache(path) as cache:
        return len(cache)


def test_sigkill_mid_shard_re_asks_only_the_requests_in_flight(tmp_path):
    """brainstorm (24 requests, shards of 12, 2 in flight) is SIGKILLed while the server holds its
    8th request on: the 7 answers it had are cached and recorded; the rerun asks again only the
    requests that were in flight, ends with the same tasks as an uninterrupted run, and the
    ledger counts each request paid once."""
    import os
    import signal
    import subprocess
    import sys

    n = len(TOPICS) * 4
    with FakeOpenAI(hold_from=7) as srv:
        cfg = _config(tmp_path, [srv.url])
        text = Path(cfg).read_text().replace("max_concurrency: 4", "max_concurrency: 2")
        Path(cfg).write_text(text.replace("timeout_s: 10", "timeout_s: 120").replace("shard_size: 8", "shard_size: 12"))
        killed = tmp_path / "killed"
        proc = subprocess.Popen([sys.executable, "-m", "speed", "run", cfg, "--run-dir", str(killed)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={**os.environ, "SPEED_FAKE_KEY": KEY, "SPEED_PROGRESS": "0"})
        try:
            assert srv.held.wait(120), proc.stderr.read().decode()[-2000:] if proc.poll() is not None else "no hold"
            assert wait_for(lambda: srv.received == 9, timeout=30)  # both slots held
            assert wait_for(lambda: len(list(iter_ledger(killed / "ledger.jsonl"))) == 7, timeout=30)
            # the ledger row is written before the cache row (see LLMClient._commit): wait for both
            assert wait_for(lambda: _cached(killed / "cache.sqlite") == 7, timeout=30)
        finally:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            proc.stderr.close()
        in_flight = srv.received - len(srv.served)
        assert in_flight == 2
        srv.release()  # the held requests are answered into closed connections (the server counts them)
        assert wait_for(lambda: len(srv.served) == 9, timeout=30)
        before = list(srv.served)
        again = run_cli("run", cfg, "--run-dir", str(killed), env={"SPEED_FAKE_KEY": KEY})
        assert again.returncode == 0, again.stderr[-2000:]
        rerun = srv.served[len(before):]
        full = tmp_path / "full"
        assert run_cli("run", cfg, "--run-dir", str(full), env={"SPEED_FAKE_KEY": KEY}).returncode == 0
    # asked again: exactly the two that were in flight, never one of the 7 answers that had arrived
    asked_twice = [p for p, c in Counter(before + rerun).items() if c > 1]
    assert len(before) == 9 and len(rerun) == n - 7 and len(asked_twice) == 2
    assert set(asked_twice) == set(before[7:])
    rows = [r for r in iter_ledger(killed / "ledger.jsonl") if r["stage"] == "brainstorm"]
    assert sum(not r["cache_hit"] for r in rows) == n and sum(r["cache_hit"] for r in rows) == 7
    assert (killed / "brainstorm" / "tasks.jsonl").read_text() == (full / "brainstorm" / "tasks.jsonl").read_text()
