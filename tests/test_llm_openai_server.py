"""The openai backend against a real OpenAI-compatible server: llama.cpp's llama-server with SmolLM2.

A recording proxy on 127.0.0.1 sits between the backend and the server and keeps the usage field
of every raw response body; the ledger's sums must equal those of the server. The server is the
one ``make setup`` builds, started by speed's own manager (with the repack probe's safe setting).
"""

from __future__ import annotations

import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from conftest import serve_llama

from speed.runtime.config import ModelRef
from speed.llm import LLMClient, Ledger, Request, RequestCache, SamplingParams
from speed.llm.ledger import iter_ledger, summarize, totals
from speed.prompts import example_schema, parse_example


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory):
    yield from serve_llama(ModelRef(backend="llamacpp", model="smollm2-135m-instruct", n_threads=2, slots=2, n_ctx=2048),
                           tmp_path_factory.mktemp("server"))


@pytest.fixture
def recording_proxy(llama_server):
    usages: list[dict] = []

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"]))
            req = urllib.request.Request(llama_server + self.path, data=body,
                                         headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=120) as r:
                data = r.read()
                status = r.status
            usages.append(json.loads(data)["usage"])
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1", usages
    srv.shutdown()
    srv.server_close()


def _direct(url: str, payload: dict) -> dict:
    req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(payload).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def test_usage_matches_server(llama_server, recording_proxy, tmp_path):
    proxy_url, usages = recording_proxy
    ref = ModelRef(backend="openai", model="smollm2", base_url=proxy_url, max_concurrency=2, timeout_s=120,
                   max_retries=1)
    prompts = ["Name a fruit.", "Say hello in French.", "What is 2 plus 2?"]
    reqs = [Request([{"role": "user", "content": p}], SamplingParams(temperature=0.8, max_tokens=24), seed=i, n=2)
            for i, p in enumerate(prompts)]
    ledger = Ledger(tmp_path / "ledger.jsonl")
    client = LLMClient(ref, "teacher", "brainstorm", RequestCache(tmp_path / "cache.sqlite"), ledger)
    out = client.generate(reqs)
    client.close()
    assert [len(r) for r in out] == [2, 2, 2]
    for row in out:
        for c in row:
            assert c.ok and c.text.strip() and c.prompt_tokens > 0 and 0 < c.completion_tokens <= 24
            assert c.finish_reason in ("stop", "length") and c.endpoint == proxy_url
    rows = list(iter_ledger(ledger.path))
    assert len(rows) == 6 == len(usages)
    tot = totals(summarize(rows))
    assert tot["prompt_tokens"] == sum(u["prompt_tokens"] for u in usages)
    assert tot["completion_tokens"] == sum(u["completion_tokens"] for u in usages)
    assert sorted((c.prompt_tokens, c.completion_tokens) for r in out for c in r) == \
        sorted((u["prompt_tokens"], u["completion_tokens"]) for u in usages)
    # the same request sent straight to the server counts the same prompt tokens
    direct = _direct(llama_server, {"model": "smollm2", "messages": reqs[0].messages, "temperature": 0.0,
                                    "max_tokens": 4})
    assert direct["usage"]["prompt_tokens"] == out[0][0].prompt_tokens
    # a rerun is free: all hits, same texts, nothing reaches the server
    client2 = LLMClient(ref, "teacher", "brainstorm", RequestCache(tmp_path / "cache.sqlite"), ledger)
    out2 = client2.generate(reqs)
    client2.close()
    assert len(usages) == 6
    assert [[c.text for c in r] for r in out2] == [[c.text for c in r] for r in out]
    assert totals(summarize(iter_ledger(ledger.path)))["cache_hits"] == 6


def test_json_mode_through_server(llama_server, tmp_path):
    ref = ModelRef(backend="openai", model="smollm2", base_url=llama_server + "/v1", timeout_s=120, json_mode=True,
                   options={"json_format": "json_object"})
    msgs = [{"role": "user", "content": 'Write a JSON object with keys "S1", "S2", "S3": three short sentences '
                                        "about cats."}]
    req = Request(msgs, SamplingParams(temperature=0.7, max_tokens=80), seed=3, json_schema=example_schema("sts"))
    client = LLMClient(ref, "teacher", "seed")
    (c,), = client.generate([req])
    client.close()
    assert c.ok, c.error
    if c.finish_reason == "stop":
        r = parse_example("sts", c.text)
        assert r.reason not in ("no_json", "invalid_json", "missing_key"), (r.reason, c.text)
