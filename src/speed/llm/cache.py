"""The persistent request cache: SQLite (WAL), one row per generated sample.

The key is a hash of the model identity (resolved weights + adapter sha256, backend-independent),
the messages, the sampling parameters, the output constraint, the per-item seed and the sample
index (see ``speed.llm.client.cache_key``). Only successful completions are stored. A connection
per thread keeps it safe under the thread pools the backends use; WAL mode, a busy timeout and
``BEGIN IMMEDIATE`` writes keep it safe when several processes on one machine write it at once
(SQLite's WAL needs a local filesystem: under the Ray executor the workers call one host process
that owns it, see ``LLMClient.shared``). Pickled, a cache travels as its path.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterable, Sequence

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    value TEXT NOT NULL,
    created REAL NOT NULL
)
"""


def _wal(conn: sqlite3.Connection) -> None:
    """WAL mode, set once per file (it persists): switching needs a lock that SQLite may refuse at
    once, without its busy handler, while other processes open the same new file."""
    if str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
        conn.execute("PRAGMA journal_mode=WAL")


def _locked_retry(step, timeout_s: float = 60.0):
    """``step()``, tried again for up to ``timeout_s`` while SQLite says the database is locked or busy."""
    deadline = time.monotonic() + timeout_s
    delay = 0.01
    while True:
        try:
            return step()
        except sqlite3.OperationalError as exc:
            if not any(w in str(exc).lower() for w in ("locked", "busy")) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(0.5, delay * 2)


class RequestCache:
    """``get_many(keys) -> {key: dict}``, ``put_many([(key, model, dict)])``; safe across threads."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._conns: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        conn = self._conn()
        _locked_retry(lambda: conn.execute(_SCHEMA))

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA busy_timeout=60000")  # before anything that may wait on another process
            _locked_retry(lambda: _wal(conn))
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._conns.append(conn)
        return conn

    def __reduce__(self):
        return RequestCache, (str(self.path.resolve()),)

    def put_many_and_record(self, items, ledger, recs) -> None:
        """The answers' ledger lines, then their cache rows (the ledger first: a kill between the two
        can only make it count a request that is asked again, never miss one that was paid)."""
        ledger.record_many(recs)
        self.put_many(items)

    def get_many(self, keys: Sequence[str]) -> dict[str, dict]:
        out: dict[str, dict] = {}
        conn = self._conn()
        keys = list(dict.fromkeys(keys))
        for i in range(0, len(keys), 500):
            chunk = keys[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for key, value in conn.execute(f"SELECT key, value FROM completions WHERE key IN ({marks})", chunk):
                try:
                    out[key] = json.loads(value)
                except json.JSONDecodeError:  # pragma: no cover - a corrupted row is a miss
                    continue
        return out

    def get(self, key: str) -> dict | None:
        return self.get_many([key]).get(key)

    def put_many(self, items: Iterable[tuple[str, str, dict]]) -> int:
        rows = [(k, m, json.dumps(v, sort_keys=True, ensure_ascii=False), time.time()) for k, m, v in items]
        if not rows:
            return 0
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.executemany("INSERT OR REPLACE INTO completions (key, model, value, created) VALUES (?, ?, ?, ?)",
                             rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return len(rows)

    def __len__(self) -> int:
        return int(self._conn().execute("SELECT COUNT(*) FROM completions").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            for conn in self._conns:
                try:
                    conn.close()
                except sqlite3.Error:  # pragma: no cover
                    pass
            self._conns.clear()
        self._local = threading.local()

    def __enter__(self) -> "RequestCache":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ------------------------------------------------------------------------------------------------
# model identity and keys

_HASH_MEMO: dict[tuple[str, int, int], str] = {}
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")


def _file_sha(path: Path) -> str:
    """sha256 of a file, memoised per process and in $SPEED_HOME/file-hashes.json by (path, size, mtime)."""
    from ..io import atomic_write_json, sha256_file
    from ..paths import speed_home

    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _HASH_MEMO:
        return _HASH_MEMO[key]
    memo_path = speed_home() / "file-hashes.json"
    memo: dict = {}
    try:
        memo = json.loads(memo_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        memo = {}
    mkey = f"{key[0]}|{key[1]}|{key[2]}"
    digest = memo.get(mkey) if isinstance(memo, dict) else None
    if not digest:
        digest = sha256_file(path)
        memo = memo if isinstance(memo, dict) else {}
        memo[mkey] = digest
        try:
            atomic_write_json(memo_path, memo)
        except Exception:  # pragma: no cover - a read-only home only costs a re-hash next time
            pass
    _HASH_MEMO[key] = digest
    return digest


def path_identity(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a folder's weight files (names and their sha256)."""
    from ..io import stable_hash

    p = Path(path)
    if p.is_file():
        return _file_sha(p)
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in _WEIGHT_SUFFIXES)
    if not files:  # no weights: hash the config-ish files instead
        files = sorted(f for f in p.rglob("*.json") if f.is_file())
    return stable_hash([[str(f.relative_to(p)), _file_sha(f)] for f in files])


def adapter_sha256(adapter: str | None) -> str | None:
    """sha256 identity of a LoRA adapter (a GGUF file, or a PEFT folder's weights)."""
    if not adapter:
        return None
    p = Path(adapter).expanduser()
    if not p.exists():
        from ..errors import ModelError

        raise ModelError(f"adapter {adapter!r} does not exist")
    return path_identity(p)


def model_identity(ref) -> str:
    """The backend-independent identity of ``ref``'s base model (what the cache keys on).

    An offline model is its pinned GGUF sha256 (the same for its GGUF and its converted folder); a
    local file or folder is the sha256 of its weights; a served model (openai backend) is its name,
    unless ``options.model_identity`` says more; a hub id is the id and ``options.revision``.
    """
    from ..models import get_offline

    opts = getattr(ref, "options", None) or {}
    if opts.get("model_identity"):
        return str(opts["model_identity"])
    off = get_offline(ref.model)
    if off is not None and off.sha256:
        return f"sha256:{off.sha256}"
    if ref.backend == "openai":
        return f"served:{ref.model}"
    p = Path(ref.model).expanduser()
    if p.exists():
        return f"sha256:{path_identity(p)}"
    return f"hub:{ref.model}@{opts.get('revision', 'main')}"
