"""The Batch API path of the openai backend (``batch: true`` on a model): half the price, no hurry.

Instead of one live call per sample, ``BatchRunner.run(lines, keep)`` writes the samples still
without an answer as Batch API input lines (``custom_id`` = the sample's cache key, ``body`` = the
exact body a live call sends), splits them at the provider's limits (``options.batch_max_requests``,
``options.batch_max_bytes``), uploads each part (``POST /files``, purpose ``batch``), creates a batch
(``POST /batches``) and records its id in the run's journal (``RUN_DIR/batches.jsonl``) before it
waits. It then polls every batch (``options.batch_poll_s``) with a progress line, and hands every
answer (and every rejected line, with its reason) to ``keep``: the client's one parse, cache and
ledger path, which marks the ledger row with the batch id (priced at the batch rate).

Resumable at every point:

- killed while batches are in flight, a rerun finds them in the journal and collects them; a batch
  created just before the kill, before its id was written, is found by its ``metadata``
  (``speed_chunk``: a hash of its request keys) in the provider's batch list. Nothing is submitted
  twice.
- collected answers are cached: a rerun pays nothing.
- an expired or cancelled batch hands back what it answered; only the requests without an answer
  are submitted again (up to ``options.batch_max_rounds`` batches per request and run; after that
  they are reported failed).
- a request line the provider rejects (its error file) comes back failed with the reason: counted
  in the ledger as a failed call, never cached, never silently dropped.
- a whole batch refused (wrong key, over quota, over a size limit; at upload, at creation or at
  validation) stops the stage with one line naming the cause (exit 2); the journal stays
  consistent, so the rerun resubmits only what has no batch.

Journal lines: ``{"event": "submitted", "batch", "file", "chunk", "keys", "stage", "role", "model",
"at"}`` and ``{"event": "collected", "batch", "status", "answered", "failed", "unanswered", "at"}``.
They hold request keys and ids, never prompts or secrets.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..errors import ModelError
from ..io import stable_hash
from .backends.base import Completion, error_text
from .ledger import append_lines, iter_ledger

OPENAI_MAX_REQUESTS = 50_000  # OpenAI's limits per batch (requests, input file bytes)
OPENAI_MAX_BYTES = 200 * 1024 * 1024
DEFAULT_POLL_S = 30.0
DEFAULT_WINDOW = "24h"
DEFAULT_MAX_ROUNDS = 3
ENDPOINT = "/v1/chat/completions"
TERMINAL = {"completed", "expired", "cancelled", "failed"}
UNANSWERED_CODES = {"batch_expired", "batch_cancelled"}  # not the request's fault: ask it again


@dataclass
class BatchLine:
    """One sample to ask: its cache key (the batch ``custom_id``) and the request body."""

    key: str
    body: dict


@dataclass
class _Tracked:
    batch: str
    keys: list[str]
    submitted_at: float


class BatchJournal:
    """``RUN_DIR/batches.jsonl``: which batches were submitted (with their request keys) and collected."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _append(self, row: dict) -> None:
        append_lines(self.path, json.dumps({**row, "at": time.time()}, sort_keys=True) + "\n")

    def submitted(self, batch: str, file: str | None, chunk: str, keys: Sequence[str], **where: Any) -> None:
        self._append({"event": "submitted", "batch": batch, "file": file, "chunk": chunk, "keys": list(keys), **where})

    def collected(self, batch: str, status: str, answered: int, failed: int, unanswered: int) -> None:
        self._append({"event": "collected", "batch": batch, "status": status, "answered": answered,
                      "failed": failed, "unanswered": unanswered})

    def rows(self) -> Iterable[dict]:
        return iter_ledger(self.path)  # the same torn-line-tolerant JSONL reader

    def open_batches(self) -> dict[str, dict]:
        """The submitted batches not collected yet, by id (in submission order)."""
        subs: dict[str, dict] = {}
        done: set[str] = set()
        for row in self.rows():
            if row.get("event") == "submitted" and row.get("batch"):
                subs[row["batch"]] = row
            elif row.get("event") == "collected":
                done.add(row.get("batch"))
        return {b: r for b, r in subs.items() if b not in done}

    def known(self) -> set[str]:
        return {r["batch"] for r in self.rows() if r.get("batch")}


def split(lines: Sequence[tuple[str, bytes]], max_requests: int, max_bytes: int
          ) -> tuple[list[list[tuple[str, bytes]]], list[str]]:
    """Encoded input lines ``(key, line)`` in parts of at most ``max_requests`` lines and
    ``max_bytes`` bytes, in order; and the keys of lines that alone exceed ``max_bytes``."""
    parts: list[list[tuple[str, bytes]]] = []
    too_big: list[str] = []
    cur: list[tuple[str, bytes]] = []
    size = 0
    for key, line in lines:
        if len(line) > max_bytes:
            too_big.append(key)
            continue
        if cur and (len(cur) >= max_requests or size + len(line) > max_bytes):
            parts.append(cur)
            cur, size = [], 0
        cur.append((key, line))
        size += len(line)
    if cur:
        parts.append(cur)
    return parts, too_big


def encode_line(line: BatchLine) -> bytes:
    return (json.dumps({"custom_id": line.key, "method": "POST", "url": ENDPOINT, "body": line.body},
                       ensure_ascii=False) + "\n").encode("utf-8")  # the body as a live call sends it


def result_of(row: dict, batch: str, endpoint: str | None) -> tuple[str | None, Completion | None]:
    """One line of a batch's output or error file -> (custom_id, Completion); ``None`` for the
    Completion when the line says the request got no answer (expired, cancelled)."""
    key = row.get("custom_id")
    err = row.get("error")
    resp = row.get("response") or {}
    if err:
        code = str(err.get("code") or "error")
        if code in UNANSWERED_CODES:
            return key, None
        return key, Completion(error=f"batch {batch}: {code}: {' '.join(str(err.get('message') or '').split())}"[:300],
                               endpoint=endpoint, batch_id=batch)
    status = int(resp.get("status_code") or 0)
    body = resp.get("body") or {}
    if status != 200:
        msg = (body.get("error") or {}).get("message") if isinstance(body, dict) else body
        return key, Completion(error=f"batch {batch}: HTTP {status}: {' '.join(str(msg or '').split())}"[:300],
                               endpoint=endpoint, batch_id=batch)
    try:
        choice = body["choices"][0]
        text = choice["message"]["content"]
        if text is None:
            raise ValueError("the response has no message content")
        usage = body.get("usage") or {}
        return key, Completion(text=text, finish_reason=choice.get("finish_reason"),
                               prompt_tokens=int(usage.get("prompt_tokens") or 0),
                               completion_tokens=int(usage.get("completion_tokens") or 0),
                               endpoint=endpoint, batch_id=batch)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        return key, Completion(error=f"batch {batch}: unreadable response: {error_text(exc, 200)}",
                               endpoint=endpoint, batch_id=batch)


class BatchRunner:
    """One model's Batch API traffic for one stage (see the module docstring)."""

    def __init__(self, ref, journal: str | Path, stage: str, role: str, show_progress: bool = True,
                 sleep: Callable[[float], None] = time.sleep):
        import openai

        self.ref = ref
        self.stage, self.role = stage, role
        self.journal = BatchJournal(journal)
        self.show_progress = show_progress
        self._sleep = sleep
        opts = ref.options or {}
        self.max_requests = int(opts.get("batch_max_requests", OPENAI_MAX_REQUESTS))
        self.max_bytes = int(opts.get("batch_max_bytes", OPENAI_MAX_BYTES))
        self.poll_s = float(opts.get("batch_poll_s", DEFAULT_POLL_S))
        self.window = str(opts.get("batch_completion_window", DEFAULT_WINDOW))
        self.max_rounds = int(opts.get("batch_max_rounds", DEFAULT_MAX_ROUNDS))
        urls = ref.base_urls
        if not urls:
            raise ModelError("the openai backend needs a base_url (or a list of them)")
        self.url = urls[0]  # a batch goes to one provider: the first base_url
        key = ref.api_key()
        if ref.api_key_env and key is None:
            raise ModelError(f"the environment variable {ref.api_key_env} (named by api_key_env) is not set")
        self._key = key
        self._openai = openai
        self.api = openai.OpenAI(base_url=self.url, api_key=key or "EMPTY", max_retries=int(ref.max_retries),
                                 timeout=ref.timeout_s)
        self.submissions = 0  # batches this runner created

    # -- errors -------------------------------------------------------------------------------------

    def _scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key else text

    def _refused(self, what: str, exc: BaseException) -> ModelError:
        """A call that creates or reads a batch failed after the client's retries: one line, with a hint."""
        status = getattr(exc, "status_code", None)
        body = getattr(exc, "body", None)
        msg = (body.get("message") if isinstance(body, dict) else None) or str(exc)
        msg = self._scrub(" ".join(str(msg).split()))[:240]
        hints = {401: "check the key in the variable named by api_key_env",
                 403: "check the key's permissions for the Batch API",
                 404: "check base_url: does the provider offer the Batch API (files and batches endpoints)?",
                 413: "over the provider's size limit: lower options.batch_max_bytes",
                 429: "over the provider's quota or enqueued-token limit: wait, raise the limit, or lower "
                      "options.batch_max_requests"}
        hint = hints.get(status, "over a provider limit? lower options.batch_max_requests / batch_max_bytes"
                         if status == 400 else "see the provider's status page")
        head = f"HTTP {status}: " if status else ""
        return ModelError(f"{self.ref.model} at {self.url}: {what} failed: {head}{msg} ({hint}; a rerun collects "
                          "the batches already submitted and resubmits only the rest)")

    # -- submit ---------------------------------------------------------------------------------------

    def _unrecorded(self, chunk: str) -> str | None:
        """A batch with this chunk's metadata that the provider has and the journal lacks (created
        just before a kill): its id, so that it is collected instead of submitted again."""
        try:
            known = self.journal.known()
            for b in self.api.batches.list(limit=100):
                meta = getattr(b, "metadata", None) or {}
                if meta.get("speed_chunk") == chunk and b.id not in known:
                    return b.id
        except Exception:  # a provider without batch listing: nothing to find
            return None
        return None

    def _submit(self, part: list[tuple[str, bytes]]) -> _Tracked:
        keys = [k for k, _ in part]
        chunk = stable_hash(sorted(keys))
        found = self._unrecorded(chunk)
        if found is not None:
            self.journal.submitted(found, None, chunk, keys, stage=self.stage, role=self.role, model=self.ref.model,
                                   adopted=True)
            self._say(f"batch {found} ({len(keys)} requests) was created before the last stop: collecting it")
            return _Tracked(found, keys, time.time())
        data = b"".join(line for _, line in part)
        try:
            f = self.api.files.create(file=(f"speed-{self.stage}-{chunk[:12]}.jsonl", data), purpose="batch")
        except self._openai.OpenAIError as exc:
            raise self._refused(f"uploading a batch input file ({len(keys)} requests, {len(data):,} bytes)", exc) from None
        try:
            b = self.api.batches.create(input_file_id=f.id, endpoint=ENDPOINT, completion_window=self.window,
                                        metadata={"speed_chunk": chunk, "speed_stage": self.stage})
        except self._openai.OpenAIError as exc:
            raise self._refused(f"creating a batch ({len(keys)} requests)", exc) from None
        self.journal.submitted(b.id, f.id, chunk, keys, stage=self.stage, role=self.role, model=self.ref.model)
        self.submissions += 1
        self._say(f"submitted batch {b.id}: {len(keys)} requests, {len(data):,} bytes "
                  f"(window {self.window}; status checked every {self.poll_s:g} s)")
        return _Tracked(b.id, keys, time.time())

    def _say(self, text: str) -> None:
        if self.show_progress:
            print(f"[{self.stage}] {self.role} {self.ref.model}: {text}", flush=True)

    # -- collect --------------------------------------------------------------------------------------

    def _file_rows(self, file_id: str | None) -> list[dict]:
        if not file_id:
            return []
        try:
            raw = self.api.files.content(file_id).read()
        except self._openai.NotFoundError:
            return []  # gone (providers delete files after a while): its requests count as unanswered
        except self._openai.OpenAIError as exc:
            raise self._refused(f"downloading batch file {file_id}", exc) from None
        rows = []
        for line in raw.decode("utf-8", errors="replace").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(row, dict):
                rows.append(row)
        return rows

    def _collect(self, t: _Tracked, b, wanted: set[str]) -> tuple[list[tuple[str, Completion]], list[str]]:
        """A finished batch's answers and rejections for the keys still wanted, and its unanswered keys."""
        got: dict[str, Completion | None] = {}
        for row in self._file_rows(getattr(b, "output_file_id", None)) + self._file_rows(getattr(b, "error_file_id", None)):
            key, comp = result_of(row, t.batch, self.url)
            if key is not None and (key not in got or got[key] is None):
                if comp is not None and comp.error:
                    comp.error = self._scrub(comp.error)
                got[key] = comp
        pairs = [(k, c) for k, c in got.items() if c is not None and k in wanted]
        unanswered = [k for k in t.keys if k in wanted and got.get(k) is None]
        failed = sum(1 for _, c in pairs if c.error)
        self.journal.collected(t.batch, b.status, len(pairs) - failed, failed, len(unanswered))
        if failed:
            first = next(c.error for _, c in pairs if c.error)
            self._say(f"batch {t.batch}: {failed} request(s) rejected by the provider, counted failed (first: {first})")
        return pairs, unanswered

    def _batch_refusal(self, b) -> ModelError:
        errs = getattr(getattr(b, "errors", None), "data", None) or []
        why = "; ".join(f"{getattr(e, 'code', None) or 'error'}: {' '.join(str(getattr(e, 'message', '')).split())}"
                        for e in errs[:3]) or "no reason given"
        return ModelError(f"{self.ref.model} at {self.url}: batch {b.id} was refused: {self._scrub(why)[:300]} "
                          "(over a provider limit? lower options.batch_max_requests / batch_max_bytes; a rerun "
                          "resubmits only the requests without an answer)")

    # -- the loop -------------------------------------------------------------------------------------

    def run(self, lines: Sequence[BatchLine], keep: Callable[[list[tuple[str, Completion]]], None]) -> None:
        """Ask every line through the Batch API; ``keep(pairs)`` receives ``(key, Completion)`` for
        each answer or failure as its batch is collected. Every line gets exactly one Completion."""
        wanted = {ln.key: ln for ln in lines}
        if not wanted:
            return
        tracked: list[_Tracked] = []
        covered: set[str] = set()
        for bid, rec in self.journal.open_batches().items():  # in flight before the last stop: collect, not resubmit
            keys = [k for k in rec.get("keys") or [] if k in wanted]
            if keys:
                tracked.append(_Tracked(bid, list(rec.get("keys") or []), float(rec.get("at") or time.time())))
                covered.update(keys)
        if tracked:
            self._say(f"collecting {len(tracked)} batch(es) submitted before the last stop "
                      f"({len(covered)} of {len(wanted)} requests)")
        rounds: dict[str, int] = {k: 1 for k in covered}
        bar = None
        if self.show_progress:
            from ..progress import progress

            bar = progress(total=len(wanted), desc=f"{self.stage} ({self.role}, batch)", unit="req")
        t0 = time.monotonic()
        done_keys: set[str] = set()

        def deliver(pairs: list[tuple[str, Completion]]) -> None:
            pairs = [(k, c) for k, c in pairs if k not in done_keys]
            if pairs:
                done_keys.update(k for k, _ in pairs)
                keep(pairs)
                if bar is not None:
                    bar.update(len(pairs))

        def submit(keys: list[str]) -> None:
            parts, too_big = split([(k, encode_line(wanted[k])) for k in keys], self.max_requests, self.max_bytes)
            deliver([(k, Completion(error=f"the request is over options.batch_max_bytes ({self.max_bytes:,} bytes)",
                                    endpoint=self.url)) for k in too_big])
            for part in parts:
                tracked.append(self._submit(part))
                for k, _ in part:
                    rounds[k] = rounds.get(k, 0) + 1

        try:
            submit([k for k in wanted if k not in covered])
            while tracked:
                counts = [0, 0, 0]  # provider's completed / failed / total over the batches in flight
                progressed = False
                for t in list(tracked):
                    try:
                        b = self.api.batches.retrieve(t.batch)
                    except self._openai.OpenAIError as exc:
                        raise self._refused(f"checking batch {t.batch}", exc) from None
                    rc = getattr(b, "request_counts", None)
                    if rc is not None:
                        counts[0] += int(getattr(rc, "completed", 0) or 0)
                        counts[1] += int(getattr(rc, "failed", 0) or 0)
                        counts[2] += int(getattr(rc, "total", 0) or 0)
                    if b.status not in TERMINAL:
                        continue
                    tracked.remove(t)
                    progressed = True
                    if b.status == "failed" and not getattr(b, "output_file_id", None):
                        self.journal.collected(t.batch, "failed", 0, 0, len(t.keys))
                        raise self._batch_refusal(b)
                    pairs, unanswered = self._collect(t, b, set(wanted) - done_keys)
                    deliver(pairs)
                    unanswered = [k for k in unanswered if k not in done_keys]
                    if unanswered:
                        again = [k for k in unanswered if rounds.get(k, 1) < self.max_rounds]
                        deliver([(k, Completion(error=f"batch {t.batch} {b.status}: no answer after "
                                                      f"{rounds.get(k, 1)} batch(es) (options.batch_max_rounds)",
                                                endpoint=self.url, batch_id=t.batch))
                                 for k in unanswered if k not in again])
                        if again:
                            self._say(f"batch {t.batch} {b.status} with {len(unanswered)} request(s) unanswered: "
                                      f"resubmitting those {len(again)}")
                            submit(again)
                if bar is not None:
                    bar.set_postfix_str(f"provider done {counts[0]} failed {counts[1]} of {counts[2]} in "
                                        f"{len(tracked)} batch(es), {time.monotonic() - t0:.0f} s")
                if tracked and not progressed:
                    self._sleep(self.poll_s)
        finally:
            if bar is not None:
                bar.close()
        left = [k for k in wanted if k not in done_keys]  # cannot happen: every key is delivered or resubmitted
        deliver([(k, Completion(error="no batch answered this request", endpoint=self.url)) for k in left])

    def close(self) -> None:
        try:
            self.api.close()
        except Exception:  # pragma: no cover
            pass
