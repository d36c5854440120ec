"""Any OpenAI-compatible chat endpoint (vLLM, SGLang, llama.cpp server, OpenAI...), via ``openai``.

Config: ``model`` (the served model name), ``base_url`` (one URL or a list: load is spread over
them, least-outstanding first, round-robin on ties), ``api_key_env`` (NAME of the env var holding
the key; the key is never logged or written), ``max_concurrency`` (requests in flight),
``timeout_s`` (per request), ``max_retries``, ``json_mode``. ``options``: ``backoff_base_s``
(0.5), ``backoff_max_s`` (30), ``max_retry_after_s`` (120, the cap on a server's Retry-After), ``json_format`` ("json_schema", the OpenAI form, or "json_object"
for servers such as llama.cpp's that take ``{"type": "json_object", "schema": ...}``),
``extra_body`` (dict merged into each request), ``circuit_failures`` (5) and ``circuit_cooldown_s``
(30): an endpoint that fails that many tries in a row is out of rotation for the cooldown, then
gets one trial request (see ``_Endpoints``). The config checks these keys' types and ranges.

The openai client's own retries are off; this backend retries 408/409/429/5xx, timeouts, dropped
connections and unreadable bodies with exponential backoff and full jitter, honouring
``Retry-After`` / ``retry-after-ms``, and counts every try in ``Completion.attempts`` and the
failed ones per endpoint in ``Completion.endpoint_failures``. A 400 fails that request at once;
401/403/404 (wrong key, URL or model name) stop the stage with a one-line ModelError.

``as_completed`` hands each completion back as soon as it arrives (the client caches and records
it then), keeping ``4 x max_concurrency`` samples queued, so a killed run re-asks only the
requests that were still in flight.
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from email.utils import parsedate_to_datetime
from typing import Any, Iterator, Sequence

from ...errors import ModelError
from .base import BackendRequest, Completion, error_text

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
FATAL_STATUS = {401, 403, 404}  # a wrong key, URL or model name: fail the stage with one line
DEFAULT_CIRCUIT_FAILURES = 5  # consecutive failed attempts that take an endpoint out of rotation
DEFAULT_CIRCUIT_COOLDOWN_S = 30.0  # how long it stays out before one trial request

# options this backend reads: key -> (check, what is allowed)
OPTIONS: dict[str, tuple[Any, str]] = {
    "backoff_base_s": (lambda v: _num(v) and v >= 0, "a number >= 0 (seconds)"),
    "backoff_max_s": (lambda v: _num(v) and v >= 0, "a number >= 0 (seconds)"),
    "max_retry_after_s": (lambda v: _num(v) and v >= 0, "a number >= 0 (seconds)"),
    "circuit_failures": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0,
                         "an integer >= 0 (consecutive failures that take an endpoint out; 0 = never)"),
    "circuit_cooldown_s": (lambda v: _num(v) and v > 0, "a number > 0 (seconds an endpoint stays out)"),
    "json_format": (lambda v: v in ("json_schema", "json_object"), "json_schema or json_object"),
    "extra_body": (lambda v: isinstance(v, dict), "a mapping merged into each request body"),
    # batch: true (speed.llm.batch): the provider's limits per batch, polling, the completion window
    "batch_max_requests": (lambda v: _int(v) and v >= 1, "an integer >= 1 (requests per batch; OpenAI: 50000)"),
    "batch_max_bytes": (lambda v: _int(v) and v >= 1024,
                        "an integer >= 1024 (bytes per batch input file; OpenAI: 209715200)"),
    "batch_poll_s": (lambda v: _num(v) and v > 0, "a number > 0 (seconds between status checks)"),
    "batch_completion_window": (lambda v: isinstance(v, str) and bool(v), "the provider's window, e.g. 24h"),
    "batch_max_rounds": (lambda v: _int(v) and v >= 1,
                         "an integer >= 1 (submissions of a request whose batch expired unanswered)"),
}


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_options(options: dict[str, Any], where: str) -> None:
    """Type- and range-check the options this backend reads (others, e.g. cache_salt, pass through)."""
    from ...runtime.configschema import check

    for key, (ok, allowed) in OPTIONS.items():
        if key in options:
            check(bool(ok(options[key])), f"{where}.options.{key}", options[key], allowed)


class _Endpoints:
    """Pick the endpoint with the fewest requests in flight (round-robin among equals), with a breaker.

    Circuit breaker per endpoint: after ``failures`` consecutive failed attempts (connection errors,
    timeouts, 408/409/425/429/5xx, unreadable bodies) the endpoint is taken out of rotation for
    ``cooldown_s`` seconds; then it is half-open: one trial request goes to it, and it is back in
    rotation if that succeeds, out for another cooldown if not. When every endpoint is out,
    ``acquire`` waits for the earliest to come back instead of failing. ``failures=0`` turns the
    breaker off. ``clock`` and ``sleep`` are injectable for tests.
    """

    def __init__(self, urls: list[str], failures: int = 5, cooldown_s: float = 30.0, clock=time.monotonic):
        self.urls = urls
        self.outstanding = [0] * len(urls)
        self.threshold = int(failures)
        self.cooldown_s = float(cooldown_s)
        self.consecutive = [0] * len(urls)
        self.open_until: list[float | None] = [None] * len(urls)  # None: closed
        self.probing = [False] * len(urls)  # a half-open trial request is in flight
        self.trips = [0] * len(urls)  # times the breaker opened, per endpoint
        self.failed = [0] * len(urls)  # failed attempts, per endpoint
        self.answered = [0] * len(urls)
        self._clock = clock
        self._rr = 0
        self._cond = threading.Condition()

    def _available(self, i: int, now: float) -> bool:
        until = self.open_until[i]
        if until is None:
            return True
        return until <= now and not self.probing[i]  # half-open: one trial at a time

    def acquire(self) -> int:
        with self._cond:
            while True:
                now = self._clock()
                n = len(self.urls)
                order = [(self._rr + k) % n for k in range(n)]
                ready = [i for i in order if self._available(i, now)]
                if ready:
                    best = min(ready, key=lambda i: self.outstanding[i])
                    if self.open_until[best] is not None:
                        self.probing[best] = True
                    self.outstanding[best] += 1
                    self._rr = (best + 1) % n
                    return best
                # every endpoint is out: wait for the earliest cooldown to end (or a trial to finish)
                waits = [u - now for i, u in enumerate(self.open_until) if u is not None and not self.probing[i]]
                self._cond.wait(timeout=max(0.001, min(waits)) if waits else None)

    def release(self, i: int, failed: bool = False) -> None:
        """Return endpoint ``i``; ``failed`` when the attempt failed in a way that blames the endpoint."""
        with self._cond:
            self.outstanding[i] -= 1
            if failed:
                self.failed[i] += 1
                self.consecutive[i] += 1
                if self.threshold > 0 and (self.probing[i] or self.consecutive[i] >= self.threshold):
                    if self.open_until[i] is None or self.probing[i] or self.open_until[i] <= self._clock():
                        self.trips[i] += 1
                    self.open_until[i] = self._clock() + self.cooldown_s
            else:
                self.answered[i] += 1
                self.consecutive[i] = 0
                self.open_until[i] = None
            self.probing[i] = False
            self._cond.notify_all()

    def state(self) -> dict[str, dict]:
        """Per endpoint: answered and failed attempts, breaker trips, and whether it is out now."""
        with self._cond:
            now = self._clock()
            return {u: {"answered": self.answered[i], "failed": self.failed[i], "trips": self.trips[i],
                        "open": self.open_until[i] is not None and self.open_until[i] > now}
                    for i, u in enumerate(self.urls)}


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


def chat_params(ref, req: BackendRequest, seed: int | None, merged: bool = False) -> dict[str, Any]:
    """The chat-completions parameters of one sample of ``req``: the openai client's keyword
    arguments (``extra_body`` apart), or with ``merged`` the request body itself, ``extra_body``
    merged in (what a Batch API input line carries, so that a batch asks exactly what a live call asks)."""
    opts = ref.options or {}
    s = req.sampling
    p: dict[str, Any] = dict(model=ref.model, messages=req.messages, temperature=s.temperature,
                             top_p=s.top_p, max_tokens=s.max_tokens, n=1)
    if s.stop:
        p["stop"] = list(s.stop)
    if seed is not None:
        p["seed"] = seed
    if req.json_schema is not None:
        if str(opts.get("json_format", "json_schema")) == "json_object":
            p["response_format"] = {"type": "json_object", "schema": req.json_schema}
        else:
            p["response_format"] = {"type": "json_schema", "json_schema": {"name": "output", "schema": req.json_schema}}
    extra = dict(opts.get("extra_body") or {})
    if extra:
        if merged:
            p.update(extra)
        else:
            p["extra_body"] = extra
    return p


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
        self._key = key
        opts = ref.options or {}
        self.backoff_base = float(opts.get("backoff_base_s", 0.5))
        self.backoff_max = float(opts.get("backoff_max_s", 30.0))
        self.max_retry_after = float(opts.get("max_retry_after_s", 120.0))
        self.json_format = str(opts.get("json_format", "json_schema"))
        self.extra_body = dict(opts.get("extra_body") or {})
        self.max_retries = int(ref.max_retries)
        self.preferred_batch = 4 * max(1, ref.max_concurrency)
        self.endpoints = _Endpoints(list(urls), failures=int(opts.get("circuit_failures", DEFAULT_CIRCUIT_FAILURES)),
                                    cooldown_s=float(opts.get("circuit_cooldown_s", DEFAULT_CIRCUIT_COOLDOWN_S)))
        self.clients = [openai.OpenAI(base_url=u, api_key=key or "EMPTY", max_retries=0, timeout=ref.timeout_s)
                        for u in urls]
        self._pool = ThreadPoolExecutor(max_workers=max(1, ref.max_concurrency), thread_name_prefix="speed-openai")
        self._closing = threading.Event()  # set by close(): requests still in flight give up instead of retrying
        self._rng = random.Random()

    # -- one request ------------------------------------------------------------------------------

    def _params(self, req: BackendRequest, seed: int | None) -> dict[str, Any]:
        return chat_params(self.ref, req, seed)

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
        failures: dict[str, int] = {}  # failed attempts per endpoint, recorded in the ledger
        for attempt in range(1, self.max_retries + 2):
            ep = self.endpoints.acquire()
            url = self.endpoints.urls[ep]
            blame = False
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
                                  latency_s=time.monotonic() - t0, endpoint=url, attempts=attempt, index=index,
                                  endpoint_failures=failures or None)
            except Exception as exc:  # noqa: BLE001 - classified below
                retryable, wait, last = self._classify(exc)
                if self._key:
                    last = last.replace(self._key, "***")  # a server that echoes the key: keep it off disk
                status = getattr(exc, "status_code", None)
                self._on_failure(exc, status, last)  # a subclass may stop the stage here (a dead local server)
                if status in FATAL_STATUS:  # every request would fail the same way: stop the stage
                    hint = ("check the key in the variable named by api_key_env" if status in (401, 403)
                            else "check base_url and the served model name")
                    raise ModelError(f"{self.ref.model} at {url}: {last} ({hint})")
                blame = retryable  # the endpoint is down or overloaded (a 400 is the request's fault)
                if retryable:
                    failures[url] = failures.get(url, 0) + 1
                if not retryable or attempt > self.max_retries:
                    return Completion(error=last, latency_s=time.monotonic() - t0, endpoint=url, attempts=attempt,
                                      index=index, endpoint_failures=failures or None)
            finally:
                self.endpoints.release(ep, failed=blame)
            if self._closing.is_set():  # interrupted (a kill, Ctrl-C): no retry; nobody reads this any more
                return Completion(error="interrupted", index=index)
            backoff = min(self.backoff_max, self.backoff_base * (2 ** (attempt - 1)))
            delay = self._rng.uniform(0, backoff)  # full jitter
            if wait is not None:  # the server said when: wait that long (capped), plus a little jitter
                delay = min(wait, self.max_retry_after) + self._rng.uniform(0, 0.1 * max(self.backoff_base, 0.01))
            time.sleep(delay)
        return Completion(error=last or "no attempt made", index=index)  # pragma: no cover

    def _on_failure(self, exc: BaseException, status: int | None, text: str) -> None:
        """Called on every failed try before the retry decision; raise a ModelError to stop the stage."""

    # -- batches ----------------------------------------------------------------------------------

    def as_completed(self, requests: Sequence[BackendRequest]) -> Iterator[list[tuple[int, int, Completion]]]:
        """The completions as they arrive, in groups of those that finished together:
        ``(request position, position in its indices, completion)``. At most ``preferred_batch``
        samples are queued or in flight at a time. A ModelError (wrong key, URL or model) is
        raised after the group it ends, with the completions that did arrive yielded first."""
        jobs = iter([(pos, k, req, i, seed) for pos, req in enumerate(requests)
                     for k, (i, seed) in enumerate(zip(req.indices, req.seeds()))])
        pending: dict[Future, tuple[int, int]] = {}

        def submit_next() -> None:
            job = next(jobs, None)
            if job is not None:
                pos, k, req, i, seed = job
                pending[self._pool.submit(self._one, req, i, seed)] = (pos, k)

        for _ in range(self.preferred_batch):
            submit_next()
        try:
            while pending:
                done, _ = wait(list(pending), return_when=FIRST_COMPLETED)
                group, fatal = [], None
                for f in sorted(done, key=lambda f: pending[f]):
                    pos, k = pending.pop(f)
                    if f.exception() is not None:
                        fatal = fatal or f.exception()
                        continue
                    group.append((pos, k, f.result()))
                    if fatal is None:
                        submit_next()
                if group:
                    yield group
                if fatal is not None:
                    raise fatal
        finally:
            for f in pending:
                f.cancel()

    def generate(self, requests: Sequence[BackendRequest]) -> list[list[Completion]]:
        out: list[list[Completion | None]] = [[None] * len(r.indices) for r in requests]
        for group in self.as_completed(requests):
            for pos, k, c in group:
                out[pos][k] = c
        return out  # type: ignore[return-value]

    def close(self) -> None:
        # an interrupted stage leaves requests in flight: queued ones are cancelled and running ones are not
        # waited for (a local server is stopped next, which ends them; they give up instead of retrying)
        self._closing.set()
        self._pool.shutdown(wait=False, cancel_futures=True)
        for c in self.clients:
            try:
                c.close()
            except Exception:  # pragma: no cover
                pass
