"""The openai backend against a fault-injecting OpenAI-shaped server on 127.0.0.1.

Each item's prompt picks a script of behaviours for its successive attempts: 429 with Retry-After,
500, a hang past the timeout, a dropped connection, a truncated body, invalid JSON, a 400. Every
item must come back exactly once, answered or failed after the retry budget, and the ledger must
count the failures and retries.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from speed.runtime.config import ModelRef
from speed.llm import LLMClient, Ledger, Request, RequestCache, SamplingParams
from speed.llm.ledger import iter_ledger, summarize, totals

KEY = "sk-test-0123456789-secret"
MAX_RETRIES = 3
SCRIPTS = {
    "ok": ["ok"],
    "rate": ["429", "ok"],
    "err500": ["500", "500", "ok"],
    "hang": ["hang", "ok"],
    "drop": ["drop", "ok"],
    "trunc": ["truncate", "ok"],
    "badjson": ["badjson", "ok"],
    "mixed": ["503", "drop", "truncate", "ok"],  # succeeds on the last allowed try
    "dead": ["500"] * 10,  # fails after the budget
    "bad": ["400"],  # not retryable
}


class _State:
    def __init__(self):
        self.lock = threading.Lock()
        self.attempts: dict[str, list[float]] = {}
        self.per_port: dict[int, int] = {}
        self.auth_ok = True


def _handler(state: _State, port_of):
    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):  # quiet
            pass

        def _send(self, code, body: bytes, headers=None, length=None):
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) if length is None else length))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if self.headers.get("Authorization") != f"Bearer {KEY}":
                state.auth_ok = False
            item = body["messages"][-1]["content"]
            kind = item.split(":")[0]
            with state.lock:
                tries = state.attempts.setdefault(item, [])
                tries.append(time.monotonic())
                k = len(tries) - 1
                state.per_port[port_of()] = state.per_port.get(port_of(), 0) + 1
            script = SCRIPTS[kind]
            action = script[min(k, len(script) - 1)]
            ok = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": f"answer to {item}"},
                               "finish_reason": "stop"}],
                  "usage": {"prompt_tokens": len(item), "completion_tokens": 3, "total_tokens": len(item) + 3}}
            if action == "ok":
                self._send(200, json.dumps(ok).encode())
            elif action == "429":
                self._send(429, b'{"error": {"message": "slow down"}}', {"Retry-After": "1"})
            elif action in ("500", "503", "400"):
                self._send(int(action), b'{"error": {"message": "server says no"}}')
            elif action == "hang":
                time.sleep(2.0)
                try:
                    self._send(200, json.dumps(ok).encode())
                except OSError:
                    pass
            elif action == "drop":
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
            elif action == "truncate":
                data = json.dumps(ok).encode()
                self._send(200, data[: len(data) // 2], length=len(data))
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
            elif action == "badjson":
                self._send(200, json.dumps(ok).encode()[:-20])

    return H


@pytest.fixture
def fault_servers():
    state = _State()
    servers = []
    for _ in range(2):
        holder = {}
        srv = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state, lambda h=holder: h["port"]))
        holder["port"] = srv.server_address[1]
        srv.daemon_threads = True
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
    yield state, [f"http://127.0.0.1:{s.server_address[1]}/v1" for s in servers]
    for s in servers:
        s.shutdown()
        s.server_close()


def test_faults_retried_counted_none_lost(fault_servers, tmp_path, monkeypatch):
    state, urls = fault_servers
    monkeypatch.setenv("SPEED_TEST_KEY", KEY)
    ref = ModelRef(backend="openai", model="fake-model", base_url=urls, api_key_env="SPEED_TEST_KEY",
                   max_concurrency=8, timeout_s=0.6, max_retries=MAX_RETRIES,
                   options={"backoff_base_s": 0.05, "backoff_max_s": 0.2, "circuit_cooldown_s": 0.2})
    items = [f"{kind}:{i}" for i in range(3) for kind in SCRIPTS]
    reqs = [Request([{"role": "user", "content": it}], SamplingParams(temperature=0.0, max_tokens=4), seed=i)
            for i, it in enumerate(items)]
    ledger = Ledger(tmp_path / "ledger.jsonl")
    cache = RequestCache(tmp_path / "cache.sqlite")
    client = LLMClient(ref, "teacher", "judge", cache, ledger)
    t0 = time.monotonic()
    out = client.generate(reqs)
    elapsed = time.monotonic() - t0
    client.close()
    assert elapsed < 20
    assert state.auth_ok
    assert len(out) == len(items) and all(len(row) == 1 for row in out)
    for item, (c,) in zip(items, out):
        kind = item.split(":")[0]
        seen = len(state.attempts[item])
        assert c.attempts == seen, (item, c)
        if kind == "dead":
            assert c.error and "500" in c.error and seen == MAX_RETRIES + 1
        elif kind == "bad":
            assert c.error and "400" in c.error and seen == 1
        else:
            assert c.error is None and c.text == f"answer to {item}", (item, c)  # no mix-ups
            assert seen == len(SCRIPTS[kind]) and c.prompt_tokens == len(item) and c.completion_tokens == 3
    # Retry-After: 1 was honoured (the backoff alone would have waited <= 0.2 s)
    for i in range(3):
        t = state.attempts[f"rate:{i}"]
        assert t[1] - t[0] >= 0.95
    # the load was spread over both endpoints
    assert len(state.per_port) == 2 and min(state.per_port.values()) >= 5
    rows = list(iter_ledger(ledger.path))
    assert len(rows) == len(items)
    tot = totals(summarize(rows))
    assert tot["errors"] == 6 and tot["calls"] == len(items) and tot["cache_hits"] == 0
    assert tot["retries"] == sum(len(v) - 1 for v in state.attempts.values())
    assert tot["prompt_tokens"] == sum(len(it) for it in items if it.split(":")[0] not in ("dead", "bad"))
    # the key never lands on disk
    for path in (ledger.path, cache.path):
        assert KEY not in path.read_bytes().decode("utf-8", "replace")
    # a rerun: successes are hits, only the failures are asked again
    before = {k: len(v) for k, v in state.attempts.items()}
    client2 = LLMClient(ref, "teacher", "judge", cache, ledger)
    out2 = client2.generate(reqs)
    client2.close()
    assert [r[0].text for r in out2 if r[0].ok] == [r[0].text for r in out if r[0].ok]
    asked = {k for k, v in state.attempts.items() if len(v) > before[k]}
    assert asked == {it for it in items if it.split(":")[0] in ("dead", "bad")}


def test_missing_key_env_is_a_user_error(monkeypatch):
    from speed.errors import ModelError
    from speed.llm.backends import make_backend

    monkeypatch.delenv("SPEED_NO_SUCH_KEY", raising=False)
    with pytest.raises(ModelError, match="SPEED_NO_SUCH_KEY"):
        make_backend(ModelRef(backend="openai", model="m", base_url="http://127.0.0.1:9/v1",
                              api_key_env="SPEED_NO_SUCH_KEY"))


def test_retry_after_parsing():
    from speed.llm.backends.openai_backend import retry_after_s

    assert retry_after_s({"retry-after": "2"}) == 2.0
    assert retry_after_s({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_s({}) is None
    assert retry_after_s({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_s({"retry-after": "soon"}) is None
