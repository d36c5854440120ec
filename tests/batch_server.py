"""A local OpenAI Batch API on 127.0.0.1 for tests: files and batches endpoints in front of a real model.

``BatchServer(upstream)`` implements ``POST /v1/files`` (multipart upload), ``GET
/v1/files/{id}/content``, ``POST /v1/batches``, ``GET /v1/batches/{id}``, ``GET /v1/batches``
(newest first), ``POST /v1/batches/{id}/cancel``, and live ``POST /v1/chat/completions``. A worker
thread runs each batch's lines in order by posting their bodies to ``upstream`` (a llama-server or
another OpenAI-compatible chat server) and writes OpenAI-shaped output and error files.

Faults a test can ask for: ``key`` (a wrong Authorization gets 401), ``quota`` (batch creation gets
429 insufficient_quota), ``max_requests`` (a larger batch fails validation: status ``failed`` with
errors), ``max_bytes`` (a larger input file is refused at creation: 400), ``expire_after=n`` (the
batch running when the n-th request would start expires there: the rest of its lines get
``batch_expired``; once), ``reject(body) -> reason or None`` (that line gets a 400 in the error
file), ``hold()`` / ``release()`` (batches stay in_progress, unanswered, until released).
``log`` counts what it did: every batch created (id, custom_ids), every status check.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable


class BatchServer:
    def __init__(self, upstream: str, key: str | None = None, max_requests: int | None = None,
                 max_bytes: int | None = None, expire_after: int | None = None,
                 reject: Callable[[dict], str | None] | None = None, quota: bool = False):
        self.upstream = upstream.rstrip("/")
        self.key, self.max_requests, self.max_bytes = key, max_requests, max_bytes
        self.expire_after, self.reject, self.quota = expire_after, reject, quota
        self.files: dict[str, bytes] = {}
        self.batches: dict[str, dict] = {}
        self.created: list[dict] = []  # every batch created: {"id", "keys"}
        self.polls = 0  # GET /batches/{id}
        self.live = 0  # live chat completions served
        self.answered = 0  # batch lines answered by the upstream model
        self.lock = threading.Lock()
        self._queue: list[str] = []
        self._wake = threading.Condition(self.lock)
        self._go = threading.Event()
        self._go.set()
        self._stop = False
        self._n = 0
        outer = self

        class H(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _send(self, code: int, obj, raw: bytes | None = None):
                body = raw if raw is not None else json.dumps(obj).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _authorized(self) -> bool:
                if outer.key is not None and self.headers.get("Authorization") != f"Bearer {outer.key}":
                    self._send(401, {"error": {"message": "Incorrect API key provided.", "type": "invalid_request_error",
                                               "code": "invalid_api_key"}})
                    return False
                return True

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self):
                if not self._authorized():
                    return
                parts = self.path.split("?")[0].strip("/").split("/")  # v1/...
                if parts[1:2] == ["files"] and len(parts) == 4 and parts[3] == "content":
                    data = outer.files.get(parts[2])
                    return self._send(200, None, data) if data is not None else self._send(404, {"error": {
                        "message": "No such file", "code": "not_found"}})
                if parts[1:2] == ["batches"] and len(parts) == 3:
                    with outer.lock:
                        outer.polls += 1
                        b = outer.batches.get(parts[2])
                        b = json.loads(json.dumps(b)) if b else None
                    return self._send(200, b) if b else self._send(404, {"error": {"message": "No such batch"}})
                if parts[1:] == ["batches"]:
                    with outer.lock:
                        data = sorted(outer.batches.values(), key=lambda b: -b["created_at_ns"])
                        data = json.loads(json.dumps(data))
                    return self._send(200, {"object": "list", "data": data, "has_more": False,
                                            "first_id": data[0]["id"] if data else None,
                                            "last_id": data[-1]["id"] if data else None})
                self._send(404, {"error": {"message": f"no route {self.path}"}})

            def do_POST(self):
                if not self._authorized():
                    self._body()
                    return
                path = self.path.split("?")[0]
                raw = self._body()
                if path == "/v1/chat/completions":
                    code, body = outer.ask(json.loads(raw))
                    with outer.lock:
                        outer.live += 1
                    return self._send(code, body)
                if path == "/v1/files":
                    msg = BytesParser(policy=email_policy).parsebytes(
                        b"Content-Type: " + self.headers["Content-Type"].encode() + b"\r\n\r\n" + raw)
                    data = None
                    for part in msg.iter_parts():
                        if part.get_param("name", header="content-disposition") == "file":
                            data = part.get_payload(decode=True)
                    if data is None:
                        return self._send(400, {"error": {"message": "no file part"}})
                    fid = outer._id("file")
                    with outer.lock:
                        outer.files[fid] = data
                    return self._send(200, {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                                            "filename": "input.jsonl", "purpose": "batch", "status": "processed"})
                if path == "/v1/batches":
                    req = json.loads(raw)
                    return self._send(*outer.create(req))
                if path.startswith("/v1/batches/") and path.endswith("/cancel"):
                    bid = path.split("/")[3]
                    with outer.lock:
                        b = outer.batches.get(bid)
                        if b and b["status"] in ("validating", "in_progress"):
                            b["status"] = "cancelling"
                        b = json.loads(json.dumps(b)) if b else None
                    return self._send(200, b) if b else self._send(404, {"error": {"message": "No such batch"}})
                self._send(404, {"error": {"message": f"no route {self.path}"}})

        self.srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.srv.daemon_threads = True
        self._threads = [threading.Thread(target=self.srv.serve_forever, daemon=True),
                         threading.Thread(target=self._work, daemon=True)]

    # -- plumbing ---------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.srv.server_address[1]}/v1"

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        with self.lock:
            self._stop = True
            self._wake.notify_all()
        self._go.set()
        self.srv.shutdown()
        self.srv.server_close()

    def _id(self, prefix: str) -> str:
        with self.lock:
            self._n += 1
            return f"{prefix}-{self._n:04d}"

    def hold(self) -> None:
        self._go.clear()

    def release(self) -> None:
        self._go.set()

    def ask(self, body: dict) -> tuple[int, dict]:
        """One chat request through the upstream model: (status, response body)."""
        req = urllib.request.Request(self.upstream + "/chat/completions", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=300) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as exc:
            try:
                return exc.code, json.loads(exc.read())
            except Exception:
                return exc.code, {"error": {"message": str(exc)}}

    # -- batches ------------------------------------------------------------------------------------------
    def create(self, req: dict) -> tuple[int, dict]:
        if self.quota:
            return 429, {"error": {"message": "You exceeded your current quota, please check your plan and billing "
                                              "details.", "type": "insufficient_quota", "code": "insufficient_quota"}}
        data = self.files.get(req.get("input_file_id"))
        if data is None:
            return 400, {"error": {"message": f"input file {req.get('input_file_id')} not found"}}
        if self.max_bytes is not None and len(data) > self.max_bytes:
            return 400, {"error": {"message": f"The batch input file is larger than the {self.max_bytes} byte limit.",
                                   "code": "invalid_request_error"}}
        lines = [json.loads(x) for x in data.decode().splitlines() if x.strip()]
        bid = self._id("batch")
        now = time.time()
        b = {"id": bid, "object": "batch", "endpoint": req.get("endpoint"), "errors": None,
             "input_file_id": req["input_file_id"], "completion_window": req.get("completion_window"),
             "status": "validating", "output_file_id": None, "error_file_id": None, "created_at": int(now),
             "created_at_ns": time.monotonic_ns(), "in_progress_at": None, "expires_at": int(now) + 86400,
             "completed_at": None, "failed_at": None, "expired_at": None,
             "request_counts": {"total": len(lines), "completed": 0, "failed": 0}, "metadata": req.get("metadata")}
        with self.lock:
            self.created.append({"id": bid, "keys": [x["custom_id"] for x in lines]})
            if self.max_requests is not None and len(lines) > self.max_requests:
                b.update(status="failed", failed_at=int(now), errors={"object": "list", "data": [{
                    "code": "batch_too_large", "message": f"The batch has {len(lines)} requests; the limit is "
                                                          f"{self.max_requests}.", "param": None, "line": None}]})
            else:
                self._queue.append(bid)
                self._wake.notify_all()
            self.batches[bid] = b
        return 200, json.loads(json.dumps(b))

    def _work(self) -> None:
        while True:
            with self.lock:
                while not self._queue and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
                bid = self._queue.pop(0)
                b = self.batches[bid]
                b.update(status="in_progress", in_progress_at=int(time.time()))
                lines = [json.loads(x) for x in self.files[b["input_file_id"]].decode().splitlines() if x.strip()]
            out, err = [], []
            final = "completed"
            for i, line in enumerate(lines):
                self._go.wait()
                with self.lock:
                    if self._stop:
                        return
                    cancel = b["status"] == "cancelling"
                    expire = self.expire_after is not None and self.answered >= self.expire_after
                if cancel or expire:
                    final = "cancelled" if cancel else "expired"
                    code = "batch_cancelled" if cancel else "batch_expired"
                    for rest in lines[i:]:
                        err.append({"id": self._id("req"), "custom_id": rest["custom_id"], "response": None,
                                    "error": {"code": code, "message": "This request could not be executed before "
                                                                       "the completion window expired." if expire else
                                                                       "The batch was cancelled."}})
                    if expire:
                        self.expire_after = None  # once
                    break
                reason = self.reject(line["body"]) if self.reject else None
                if reason:
                    err.append({"id": self._id("req"), "custom_id": line["custom_id"], "error": None,
                                "response": {"status_code": 400, "request_id": "r", "body": {
                                    "error": {"message": reason, "type": "invalid_request_error"}}}})
                    with self.lock:
                        b["request_counts"]["failed"] += 1
                    continue
                code, body = self.ask(line["body"])
                row = {"id": self._id("req"), "custom_id": line["custom_id"], "error": None,
                       "response": {"status_code": code, "request_id": "r", "body": body}}
                (out if code == 200 else err).append(row)
                with self.lock:
                    self.answered += code == 200
                    b["request_counts"]["completed" if code == 200 else "failed"] += 1
            with self.lock:
                for name, rows in (("output_file_id", out), ("error_file_id", err)):
                    if rows:
                        self._n += 1
                        fid = f"file-{self._n:04d}"
                        self.files[fid] = "".join(json.dumps(r) + "\n" for r in rows).encode()
                        b[name] = fid
                b["status"] = final
                b[{"completed": "completed_at", "expired": "expired_at", "cancelled": "cancelled_at"}[final]] = \
                    int(time.time())
