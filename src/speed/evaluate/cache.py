"""A persistent embedding cache: one SQLite file, keyed by (model identity, exact text).

The model identity is a digest of the model folder's weights and sentence-transformers
configuration (so a retrained model never reads a stale vector); the text is the exact string
that was encoded, instruction included. A re-evaluation, or the same corpus under several query
sets, encodes nothing twice. Vectors are stored as float32 blobs.

Default location: ``$SPEED_HOME/embcache/embeddings.sqlite``.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import threading
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from ..errors import SpeedError
from ..paths import speed_home

SCHEMA = """
CREATE TABLE IF NOT EXISTS emb (model TEXT NOT NULL, text_sha TEXT NOT NULL, dim INTEGER NOT NULL,
                                vec BLOB NOT NULL, PRIMARY KEY (model, text_sha)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS weights (path TEXT NOT NULL, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
                                    sha256 TEXT NOT NULL, PRIMARY KEY (path, size, mtime_ns));
"""

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".onnx", ".gguf")
_CHUNK = 500


def default_cache_path() -> Path:
    return speed_home() / "embcache" / "embeddings.sqlite"


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class EmbeddingCache:
    """``get_many(model, texts) -> {text: vector}``; ``put_many(model, texts, matrix)``."""

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = Path(path) if path is not None else default_cache_path()
        if self.path.is_dir() or (not self.path.suffix and not self.path.exists()):
            self.path = self.path / "embeddings.sqlite"
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(str(self.path), timeout=60, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            self._db.commit()
        except (OSError, sqlite3.Error) as exc:
            raise SpeedError(f"cannot open the embedding cache {self.path}: {exc} "
                             "(check permissions and free space, or pass --cache-dir)") from None
        self.hits = 0
        self.misses = 0

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- vectors ---------------------------------------------------------------------------------
    def get_many(self, model: str, texts: Sequence[str]) -> dict[str, np.ndarray]:
        keys = {text_key(t): t for t in texts}
        out: dict[str, np.ndarray] = {}
        items = list(keys)
        with self._lock:
            for start in range(0, len(items), _CHUNK):
                chunk = items[start:start + _CHUNK]
                marks = ",".join("?" * len(chunk))
                rows = self._db.execute(f"SELECT text_sha, dim, vec FROM emb WHERE model = ? AND text_sha IN ({marks})",
                                        [model, *chunk]).fetchall()
                for sha, dim, blob in rows:
                    vec = np.frombuffer(blob, dtype=np.float32)
                    if vec.shape[0] == dim:
                        out[keys[sha]] = vec
        self.hits += len(out)
        self.misses += len(keys) - len(out)
        return out

    def put_many(self, model: str, texts: Sequence[str], vectors: np.ndarray) -> None:
        vectors = np.asarray(vectors, dtype=np.float32)
        rows = [(model, text_key(t), int(v.shape[0]), v.tobytes()) for t, v in zip(texts, vectors)]
        with self._lock:
            try:
                self._db.executemany("INSERT OR REPLACE INTO emb (model, text_sha, dim, vec) VALUES (?, ?, ?, ?)", rows)
                self._db.commit()
            except sqlite3.Error as exc:
                raise SpeedError(f"cannot write the embedding cache {self.path}: {exc}") from None

    def count(self, model: str | None = None) -> int:
        with self._lock:
            if model is None:
                return self._db.execute("SELECT COUNT(*) FROM emb").fetchone()[0]
            return self._db.execute("SELECT COUNT(*) FROM emb WHERE model = ?", (model,)).fetchone()[0]

    # -- model identity --------------------------------------------------------------------------
    def file_sha256(self, path: Path) -> str:
        """sha256 of a weights file, memoized by (path, size, mtime) so it is hashed once."""
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
        with self._lock:
            row = self._db.execute("SELECT sha256 FROM weights WHERE path = ? AND size = ? AND mtime_ns = ?",
                                   key).fetchone()
        if row:
            return row[0]
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        sha = h.hexdigest()
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO weights VALUES (?, ?, ?, ?)", (*key, sha))
            self._db.commit()
        return sha


def model_identity(folder: str | os.PathLike, cache: EmbeddingCache | None = None, extra: dict | None = None) -> str:
    """A digest of a model folder: sha256 of every weights file, the content of every small config
    file (tokenizer, pooling, normalization, max length), plus ``extra`` (e.g. encode settings)."""
    import json

    folder = Path(folder)
    if not folder.exists():  # a hub id: the name is all we know
        return hashlib.sha256(json.dumps({"hub": str(folder), "extra": extra or {}}, sort_keys=True).encode()).hexdigest()
    parts: list[tuple[str, str]] = []
    files = [folder] if folder.is_file() else sorted(p for p in folder.rglob("*") if p.is_file())
    for p in files:
        rel = p.name if folder.is_file() else str(p.relative_to(folder))
        if any(seg.startswith(".") for seg in Path(rel).parts) or "checkpoint-" in rel:
            continue
        if p.suffix in WEIGHT_SUFFIXES:
            sha = cache.file_sha256(p) if cache is not None else _sha_file(p)
            parts.append((rel, sha))
        elif p.stat().st_size <= 4 << 20 and p.suffix in (".json", ".txt", ".model", ".yaml", ".cfg", ""):
            parts.append((rel, hashlib.sha256(p.read_bytes()).hexdigest()))
    return hashlib.sha256(json.dumps({"files": parts, "extra": extra or {}}, sort_keys=True).encode()).hexdigest()


def _sha_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def iter_unique(texts: Iterable[str]) -> list[str]:
    seen: dict[str, None] = {}
    for t in texts:
        seen.setdefault(t, None)
    return list(seen)
