"""The encoder every evaluation uses: a sentence-transformers model behind the embedding cache.

``Encoder.encode(texts, instruction=None)`` returns a float32 matrix in the order of ``texts``.
With an instruction the text that is encoded (and cached) is E5-mistral's query template
``Instruct: {instruction}\\nQuery: {text}``. Duplicate texts are encoded once; cached texts not at
all. The model is loaded only when something is missing from the cache, so a fully cached
re-evaluation never loads it.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ModelError
from .cache import EmbeddingCache, iter_unique, model_identity

QUERY_TEMPLATE = "Instruct: {instruction}\nQuery: {text}"

# Models known to be trained with E5-mistral style instructions (used by --instruction auto).
INSTRUCTION_MODELS = ("e5-mistral", "gte-qwen", "sfr-embedding", "nv-embed", "speed-embedder", "bge-en-icl",
                      "linq-embed", "multilingual-e5-large-instruct")


def with_instruction(text: str, instruction: str | None) -> str:
    return QUERY_TEMPLATE.format(instruction=instruction, text=text) if instruction else text


def uses_instruction(name: str, path: str | None, configured: bool | None) -> bool:
    """``auto``: the configured flag when there is one, else whether the model is known to use them."""
    if configured is not None:
        return bool(configured)
    for where in filter(None, (path,)):
        marker = Path(where) / "speed_embedder.json"
        if marker.is_file():
            import json

            try:
                return bool(json.loads(marker.read_text(encoding="utf-8")).get("instruction", False))
            except (OSError, ValueError):
                pass
    low = (name or "").lower()
    return any(k in low for k in INSTRUCTION_MODELS)


@dataclass
class EncodeStats:
    requested: int = 0
    unique: int = 0
    cached: int = 0
    encoded: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class Encoder:
    """``model``: an offline name, a sentence-transformers folder, or a hub id."""

    model: str
    cache: EmbeddingCache | None = None
    batch_size: int = 32
    device: str = "cpu"
    show_progress: bool = False
    stats: EncodeStats = field(default_factory=EncodeStats)

    def __post_init__(self):
        from ..models import resolve_model

        self.path = resolve_model(self.model, want="embedder")
        folder = Path(self.path)
        if folder.is_dir() and not any((folder / f).is_file() for f in ("modules.json", "config.json")):
            raise ModelError(f"model folder {folder} is not a sentence-transformers or transformers model "
                             "(no modules.json or config.json)")
        self._st = None
        self.identity = model_identity(self.path, self.cache, extra={"kind": "sentence-transformers"})

    @property
    def st(self):
        if self._st is None:
            os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
            from sentence_transformers import SentenceTransformer

            try:
                self._st = SentenceTransformer(self.path, device=self.device)
            except Exception as exc:  # a folder that is not a model, a missing file, ...
                raise ModelError(f"cannot load embedding model {self.model!r} from {self.path}: "
                                 f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
        return self._st

    def encode(self, texts: Sequence[str], instruction: str | None = None) -> np.ndarray:
        full = [with_instruction(t, instruction) for t in texts]
        unique = iter_unique(full)
        self.stats.requested += len(full)
        self.stats.unique += len(unique)
        found = self.cache.get_many(self.identity, unique) if self.cache is not None else {}
        missing = [t for t in unique if t not in found]
        self.stats.cached += len(unique) - len(missing)
        if missing:
            t0 = time.time()
            vecs = self.st.encode(missing, batch_size=self.batch_size, convert_to_numpy=True,
                                  show_progress_bar=self.show_progress)
            vecs = np.asarray(vecs, dtype=np.float32)
            self.stats.seconds += time.time() - t0
            self.stats.encoded += len(missing)
            if self.cache is not None:
                self.cache.put_many(self.identity, missing, vecs)
            found.update(zip(missing, vecs))
        if not full:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([found[t] for t in full]).astype(np.float32, copy=False)
