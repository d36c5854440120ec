"""Atomic file writes and line-checked JSONL reading."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import InputError, SpeedError

# a full disk, a quota, a read-only or unwritable place: the user's to fix, not a bug
DISK_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EROFS, errno.EPERM)


def write_error(exc: OSError, path: str | os.PathLike | None = None) -> SpeedError:
    """The one-line SpeedError for an OSError met while writing ``path`` (or the error's own filename)."""
    where = path if path is not None else (exc.filename or "a file")
    return SpeedError(f"cannot write {where}: {exc.strerror or exc} (check permissions and free space)")


def is_write_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in DISK_ERRNOS


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, mode: str = "w"):
    """Write to a temp file beside ``path`` and rename it into place only on success.

    A crash or an exception leaves the previous file (or no file) untouched.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(exc, path) from None
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if is_write_error(exc):
            raise write_error(exc, path) from None
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_writer(path) as fh:
        fh.write(text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False) + "\n")


def atomic_write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> int:
    """Write rows (dicts or dataclasses with ``to_dict``) as JSONL, atomically; return the count."""
    n = 0
    with atomic_writer(path) as fh:
        for row in rows:
            if hasattr(row, "to_dict"):
                row = row.to_dict()
            fh.write(json.dumps(row, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    return n


def read_jsonl_numbered(path: str | os.PathLike) -> Iterator[tuple[int, dict]]:
    """Yield (line number, dict) per non-empty line; a broken line is an InputError naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(f"{path}:{lineno}: not UTF-8 text (a JSONL file has one JSON object per line)") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path}:{lineno}: not valid JSON ({exc.msg})") from None
            if not isinstance(row, dict):
                raise InputError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def read_jsonl(path: str | os.PathLike) -> Iterator[dict]:
    """Yield one dict per non-empty line (see ``read_jsonl_numbered``)."""
    for _, row in read_jsonl_numbered(path):
        yield row


def count_lines(path: str | os.PathLike) -> int:
    with open(path, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def stable_hash(obj: Any) -> str:
    """sha256 of a canonical JSON rendering (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()


def now() -> str:
    """The time now, UTC, as the run directory records it (2026-01-31T12:00:00Z)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
