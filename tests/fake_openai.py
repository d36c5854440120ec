"""Small OpenAI-compatible chat servers on 127.0.0.1 for pipeline-level tests.

``FakeOpenAI(answer)`` answers ``POST /v1/chat/completions`` with ``answer(prompt) -> text`` and
records every request it served (prompt, Authorization header). ``FaultProxy(upstream, fail)``
forwards to another server, except for the requests ``fail(n)`` picks (n = 0, 1, 2... in arrival
order), which get HTTP 500 without reaching the upstream. Both count what they did, so a test can
compare the server side with the ledger.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


def brainstorm_answer(prompt: str) -> str:
    """A valid brainstorm answer naming the prompt's topic (distinct per prompt)."""
    m = re.search(r"for the topic: (.+)", prompt)
    topic = m.group(1).strip() if m else "something"
    h = hashlib.sha256(prompt.encode()).hexdigest()[:8]
    return json.dumps([f"Given a question about {topic}, find passages that answer it (variant {h})",
                       f"Classify notes about {topic} by their purpose (variant {h})"])


def garbage_answer(prompt: str) -> str:
    return "I am sorry, as a language model I cannot help with that. ~~~ lorem ipsum"


class _Server:
    def __init__(self, handler_cls):
        self.lock = threading.Lock()
        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), handler_cls)
        self.srv.daemon_threads = True
        self.thread = threading.Thread(target=self.srv.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.srv.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.srv.shutdown()
        self.srv.server_close()


def send_json(h: BaseHTTPRequestHandler, code: int, body: bytes) -> None:
    h.send_response(code)
    h.send_header("Content-Type", "application/json")
    h.send_header("Content-Length", str(len(body)))
    h.end_headers()
    h.wfile.write(body)


def chat_completion(model: str, text: str, prompt_tokens: int, completion_tokens: int) -> dict:
    """An OpenAI chat-completion response body with one choice."""
    return {"id": "x", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


class FakeOpenAI(_Server):
    """``answer(prompt)`` gives the reply text; or ``answer_request(body)`` from the whole request
    (messages, seed, ...). ``delay_s``: how long each request takes. ``hold_from=n``: request n (in
    arrival order, from 0) and every later one wait, unanswered, until ``release()``; ``held`` is
    set when the first of them arrives."""

    def __init__(self, answer: Callable[[str], str] = brainstorm_answer,
                 answer_request: Callable[[dict], str] | None = None, delay_s: float = 0.0,
                 hold_from: int | None = None):
        self.answer = answer
        self.answer_request = answer_request
        self.delay_s = delay_s
        self.served: list[str] = []  # the last user message of every request answered
        self.auth: list[str | None] = []  # the Authorization header of every request
        self.received = 0  # requests that arrived (answered or not)
        self.hold_from = hold_from
        self.held = threading.Event()
        self._go = threading.Event()
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = body["messages"][-1]["content"]
                with outer.lock:
                    n = outer.received
                    outer.received += 1
                if outer.hold_from is not None and n >= outer.hold_from:
                    outer.held.set()
                    outer._go.wait()
                if outer.delay_s:
                    time.sleep(outer.delay_s)
                text = outer.answer_request(body) if outer.answer_request else outer.answer(prompt)
                with outer.lock:
                    outer.served.append(prompt)
                    outer.auth.append(self.headers.get("Authorization"))
                out = chat_completion(body["model"], text, len(prompt.split()), len(text.split()))
                send_json(self, 200, json.dumps(out).encode())

        super().__init__(H)

    def release(self) -> None:
        """Answer the held requests, and hold no more."""
        self.hold_from = None
        self._go.set()


class FaultProxy(_Server):
    def __init__(self, upstream: str, fail: Callable[[int], bool]):
        self.upstream = upstream.rstrip("/")
        self.failed = 0
        self.forwarded = 0
        self.auth: list[str | None] = []
        self._n = 0
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                data = self.rfile.read(int(self.headers["Content-Length"]))
                with outer.lock:
                    n = outer._n
                    outer._n += 1
                    outer.auth.append(self.headers.get("Authorization"))
                if fail(n):
                    with outer.lock:
                        outer.failed += 1
                    send_json(self, 500, b'{"error": {"message": "injected failure"}}')
                    return
                path = self.path[len("/v1"):] if self.path.startswith("/v1") else self.path
                headers = {"Content-Type": "application/json"}
                if self.headers.get("Authorization"):
                    headers["Authorization"] = self.headers["Authorization"]
                req = urllib.request.Request(outer.upstream + path, data=data, headers=headers)
                with urllib.request.urlopen(req, timeout=60) as r:
                    body, status = r.read(), r.status
                with outer.lock:
                    outer.forwarded += 1
                send_json(self, status, body)

        super().__init__(H)
