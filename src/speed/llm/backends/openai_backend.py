"""Any OpenAI-compatible chat endpoint (vLLM, SGLang, llama.cpp server, OpenAI...), via ``openai``.

Config: ``model`` (the served model name), ``base_url`` (one URL or a list: load is spread over
them, least-outstanding first, round-robin on ties), ``api_key_env`` (NAME of the env var holding
the key; the key is never logged or written), ``max_concurrency`` (requests in flight),
``timeout_s`` (per request), ``max_retries``, ``json_mode``. ``options``: ``backoff_base_s``
(0.5), ``backoff_max_s`` (30), ``max_retry_after_s`` (120, the cap on a server's Retry-After), ``json_format`` ("json_schema", the OpenAI form, or "json_object"
for servers such as llama.cpp's that take ``{"type": "json_object", "schema": ...}``),
``extra_body`` (dict merged into each request).

The openai client's own retries are off; this backend retries 408/409/429/5xx, timeouts, dropped
connections and unreadable bodies with exponential backoff and full jitter, honouring
``Retry-After`` / ``retry-after-ms``, and counts every try in ``Completion.attempts``. Other errors
(400, 401, 404...) fail at once.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from typing import Any, Sequence

from ...errors import ModelError
from .base import BackendRequest, Completion, error_text

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class _Endpoints:
    """Pick the endpoint with the fewest requests in flight (round-robin among equals)."""

    def __init__(self, urls: list[str]):
        self.urls = urls
        self.outstanding = [0] * len(urls)
        self._rr = 0
        self._lock = threading.Lock()

    def acquire(self) -> int:
        with self._lock:
            n = len(self.urls)
            order = [(self._rr + k) % n for k in range(n)]
            best = min(order, key=lambda i: self.outstanding[i])
            self.outstanding[best] += 1
            self._rr = (best + 1) % n
            return best

    def release(self, i: int) -> None:
        with self._lock:
            self.outstanding[i] -= 1


def retry_after_s(headers: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    if headers is None:
        return None
    try:
        ms = headers.get("retry-after-ms")
        if ms is not None:
            return max(0.0, float(ms) / 1000.0)
        ra = headers.get("retry-after")
        if ra is None:
            return None
        try:
            return max(0.0, float(ra))
        except ValueError:
            when = parsedate_to_datetime(ra)
            return max(0.0, when.timestamp() - time.time())
    except Exception:
        return None


class OpenAIBackend:
    name = "openai"

    def __init__(self, ref):
        import openai  # a core dependency; imported here to keep `import speed` light
        self.ref = ref
        self._openai = openai
        urls = ref.base_urls
        if not urls:
            raise ModelError("the openai backend needs a base_url (or a list of them)")
        key = ref.api_key()
        if ref.api_key_env and key is None:
            raise ModelError(f"the environment variable {ref.api_key_env} (named by api_key_env) is not set")
        opts = ref.options or {}
        self.backoff_base = float(opts.get("backoff_base_s", 0.5))
        self.backoff_max = float(opts.get("backoff_max_s", 30.0))
        self.max_retry_after = float(opts.get("max_retry_after_s", 120.0))
        self.json_format = str(opts.get("json_format", "json_schema"))
        self.extra_body = dict(opts.get("extra_body") or {})
        self.max_retries = int(ref.max_retries)
        self.preferred_batch = 4 * max(1, ref.max_concurrency)
        self.endpoints = _Endpoints(list(urls))
        self.clients = [openai.OpenAI(base_url=u, api_key=key or "EMPTY", max_retries=0, timeout=ref.timeout_s)
                        for u in urls]
        self._pool = ThreadPoolExecutor(max_workers=max(1, ref.max_concurrency), thread_name_prefix="speed-openai")
        self._rng = random.Random()

    # -- one request ------------------------------------------------------------------------------

    def _params(self, req: BackendRequest, seed: int | None) -> dict[str, Any]:
        s = req.sampling
        p: dict[str, Any] = dict(model=self.ref.model, messages=req.messages, temperature=s.temperature,
                                 top_p=s.top_p, max_tokens=s.max_tokens, n=1)
        if s.stop:
            p["stop"] = list(s.stop)
        if seed is not None:
            p["seed"] = seed
        if req.json_schema is not None:
            if self.json_format == "json_object":
                p["response_format"] = {"type": "json_object", "schema": req.json_schema}
            else:
                p["response_format"] = {"type": "json_schema",
                                        "json_schema": {"name": "output", "schema": req.json_schema}}
        if self.extra_body:
            p["extra_body"] = self.extra_body
        return p

    def _classify(self, exc: BaseException) -> tuple[bool, float | None, str]:
        """(retryable, server-requested wait, one-line description)."""
        o = self._openai
        if isinstance(exc, o.APIStatusError):
            status = getattr(exc, "status_code", None)
            headers = getattr(getattr(exc, "response", None), "headers", None)
            return (status in RETRY_STATUS or (status or 0) >= 500), retry_after_s(headers), f"HTTP {status}: " + \
                error_text(exc, 200)
        if isinstance(exc, o.APITimeoutError):
            return True, None, f"timeout after {self.ref.timeout_s:g}s"
        if isinstance(exc, o.APIConnectionError):
            return True, None, error_text(exc.__cause__ or exc, 200)
        if isinstance(exc, (o.APIResponseValidationError, ValueError, KeyError, IndexError, TypeError)):
            return True, None, "unreadable response: " + error_text(exc, 200)
        return False, None, error_text(exc)

    def _one(self, req: BackendRequest, index: int, seed: int | None) -> Completion:
        params = self._params(req, seed)
        t0 = time.monotonic()
        last = ""
        for attempt in range(1, self.max_retries + 2):
            ep = self.endpoints.acquire()
            url = self.endpoints.urls[ep]
            try:
                resp = self.clients[ep].chat.completions.create(**params)
                choice = resp.choices[0]
                usage = resp.usage
                text = choice.message.content
                if text is None:
                    raise ValueError("the response has no message content")
                return Completion(text=text, finish_reason=choice.finish_reason,
                                  prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
                                  completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
                                  latency_s=time.monotonic() - t0, endpoint=url, attempts=attempt, index=index)
            except Exception as exc:  # noqa: BLE001 - classified below
                retryable, wait, last = self._classify(exc)
                if not retryable or attempt > self.max_retries:
                    return Completion(error=last, latency_s=time.monotonic() - t0, endpoint=url, attempts=attempt,
                                      index=index)
            finally:
                self.endpoints.release(ep)
            backoff = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
            delay = self._rng.uniform(0, backoff)  # full jitter
            if wait is not None:  # the server said when: wait that long (capped), plus a little jitter
                delay = min(wait, self.max_retry_after) + self._rng.uniform(0, 0.1 * max(self.backoff_base, 0.01))
            time.sleep(delay)
        return Completion(error=last or "no attempt made", index=index)  # pragma: no cover

    # -- batches ----------------------------------------------------------------------------------

    def generate(self, requests: Sequence[BackendRequest]) -> list[list[Completion]]:
        futures = [[self._pool.submit(self._one, req, i, seed) for i, seed in zip(req.indices, req.seeds())]
                   for req in requests]
        return [[f.result() for f in row] for row in futures]

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        for c in self.clients:
            try:
                c.close()
            except Exception:  # pragma: no cover
                pass
