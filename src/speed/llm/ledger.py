"""The usage ledger: one JSON line per model request, kept in ``RUN_DIR/ledger.jsonl``.

Every request a stage makes (cache hits included, flagged as such) is recorded with its stage,
role, model identity, prompt and completion tokens, latency and error. The manifest sums it per
stage and role; the cost report reads it. Appends are flushed line by line, so a killed process
loses at most the line it was writing (a torn last line is ignored when reading). Each batch of
lines is appended under an exclusive ``flock`` with one ``O_APPEND`` write, so that several
processes appending at once never interleave their lines. Pickled, a ledger travels as its path.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Iterator


@dataclass
class UsageRecord:
    stage: str
    role: str
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    cache_hit: bool = False
    error: str | None = None
    endpoint: str | None = None
    adapter_sha256: str | None = None
    n: int = 1
    attempts: int = 1  # tries it took (1 + retries); a failed request counts every try
    endpoint_failures: dict[str, int] | None = None  # failed tries per endpoint URL (openai pool), if any
    worker: int | None = None  # the executor worker (Ray rank) that made the request; None: the driver
    batch: str | None = None  # the Batch API batch that answered it (priced at the batch rate); None: live
    at: float = field(default_factory=time.time)

    def to_dict(self) -> dict:
        return asdict(self)


class Ledger:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()

    def __reduce__(self):
        return Ledger, (str(self.path.resolve()),)

    def record(self, rec: UsageRecord) -> None:
        self.record_many([rec])

    def record_many(self, recs: Iterable[UsageRecord]) -> None:
        lines = "".join(json.dumps(r.to_dict(), sort_keys=True) + "\n" for r in recs)
        if lines:
            with self._lock:
                append_lines(self.path, lines)

    def __iter__(self) -> Iterator[dict]:
        return iter_ledger(self.path)


def append_lines(path: str | os.PathLike, lines: str) -> None:
    """Append ``lines`` to ``path`` in one ``O_APPEND`` write under an exclusive ``flock`` (other
    processes' lines never interleave), fsynced; a full or read-only disk is a one-line error."""
    from ..io import is_write_error, write_error

    path = Path(path)
    data = lines.encode("utf-8")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # other processes wait: their lines never interleave with ours
            except OSError:  # a filesystem without locks: still one O_APPEND write per batch
                pass
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)  # releases the lock
    except OSError as exc:
        if is_write_error(exc):
            raise write_error(exc, path) from None
        raise


def iter_ledger(path: str | os.PathLike, start: int = 0) -> Iterator[dict]:
    """The ledger's rows, from byte ``start`` on (e.g. the size it had when a stage attempt began)."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb") as fh:
        fh.seek(start)
        for raw in fh:
            try:
                row = json.loads(raw.decode("utf-8", errors="replace"))  # a garbled line fails to parse
            except json.JSONDecodeError:
                continue  # a line torn by a kill
            if isinstance(row, dict):
                yield row


def _empty() -> dict:
    return {"requests": 0, "calls": 0, "cache_hits": 0, "errors": 0, "retries": 0,
            "prompt_tokens": 0, "completion_tokens": 0, "latency_s": 0.0}


def summarize(rows: Iterable[dict], stage: str | None = None) -> dict:
    """Sum ledger rows into ``{role: {model: totals}}`` (for one stage when ``stage`` is given).

    ``calls`` counts requests that reached a model (not cache hits); tokens count those calls only,
    so that the cost is what was actually paid; ``cached_*_tokens`` count what hits saved;
    ``retries`` counts the extra tries (rate limits, server errors, timeouts) the calls needed.
    """
    out: dict[str, dict[str, dict]] = {}
    for row in rows:
        if stage is not None and row.get("stage") != stage:
            continue
        t = out.setdefault(row.get("role", "?"), {}).setdefault(row.get("model", "?"), _empty())
        t["requests"] += 1
        if row.get("cache_hit"):
            t["cache_hits"] += 1
            t["cached_prompt_tokens"] = t.get("cached_prompt_tokens", 0) + int(row.get("prompt_tokens", 0))
            t["cached_completion_tokens"] = t.get("cached_completion_tokens", 0) + int(row.get("completion_tokens", 0))
            continue
        if row.get("error"):
            t["errors"] += 1
        t["calls"] += 1
        t["batch_calls"] = t.get("batch_calls", 0) + bool(row.get("batch"))
        t["retries"] += max(0, int(row.get("attempts", 1) or 1) - 1)
        t["prompt_tokens"] += int(row.get("prompt_tokens", 0))
        t["completion_tokens"] += int(row.get("completion_tokens", 0))
        t["latency_s"] = round(t["latency_s"] + float(row.get("latency_s", 0.0)), 3)
    return out


def by_endpoint(rows: Iterable[dict], stage: str | None = None) -> dict[str, dict]:
    """Per endpoint URL: requests it ``answered`` and the ``failures`` (failed tries) it caused.

    Only requests that reached a model count (not cache hits); a request answered by one endpoint
    after failing on another counts as answered there and as a failure on the other.
    """
    out: dict[str, dict] = {}
    for row in rows:
        if row.get("cache_hit") or (stage is not None and row.get("stage") != stage):
            continue
        ep = row.get("endpoint")
        if ep and not row.get("error"):
            out.setdefault(ep, {"answered": 0, "failures": 0})["answered"] += 1
        for url, n in (row.get("endpoint_failures") or {}).items():
            out.setdefault(url, {"answered": 0, "failures": 0})["failures"] += int(n)
    return out


def totals(summary: dict) -> dict:
    tot = _empty()
    for models in summary.values():
        for t in models.values():
            for k in tot:
                tot[k] += t.get(k, 0)
    tot["latency_s"] = round(tot["latency_s"], 3)
    return tot
