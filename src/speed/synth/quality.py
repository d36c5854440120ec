"""Cheap quality signals for synthetic examples (no training needed).

Per example: length adherence to the requested attributes (from parsing) and, with a reference
embedder, cos(query, positive), cos(query, negative) and their margin. Whether the negative is a likely
false negative is decided by the export filters' rule (``filters.is_false_negative``; by default the margin
rule: a negative at least as similar to the query as the positive).
"""

from __future__ import annotations

import os
from typing import Sequence

from .filters import FilterSettings, is_false_negative
from .records import Example


def load_embedder(ref):
    """A SentenceTransformer for a model reference (an offline name, a folder or a hub id)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from sentence_transformers import SentenceTransformer

    from ..models import resolve_model

    path = resolve_model(ref.model, want="embedder")
    return SentenceTransformer(path, device="cpu")


def length_adherence(e: Example) -> bool | None:
    flags = [v for v in (e.length_ok or {}).values() if v is not None]
    return all(flags) if flags else None


def similarity_signals(examples: Sequence[Example], model, batch_size: int = 64,
                       fn_rule: FilterSettings | None = None, show_progress: bool = False) -> list[dict]:
    """cos(query, positive), cos(query, negative) (None without a negative), margin, false_negative (by
    ``fn_rule``'s false-negative rule; the filters' defaults when None)."""
    import numpy as np

    fn_rule = fn_rule or FilterSettings()
    texts: dict[str, int] = {}
    for e in examples:
        for t in (e.query, e.positive, e.negative):
            if t and t not in texts:
                texts[t] = len(texts)
    if texts:
        emb = model.encode(list(texts), batch_size=batch_size, normalize_embeddings=True,
                           convert_to_numpy=True, show_progress_bar=show_progress)
    else:
        emb = np.zeros((0, 1), dtype="float32")
    out = []
    for e in examples:
        q = emb[texts[e.query]] if e.query else None
        sp = float(q @ emb[texts[e.positive]]) if q is not None and e.positive else None
        sn = float(q @ emb[texts[e.negative]]) if q is not None and e.negative else None
        margin = None if sp is None or sn is None else sp - sn
        out.append({"sim_pos": sp, "sim_neg": sn, "margin": margin,
                    "false_negative": is_false_negative(sp, sn, fn_rule),
                    "length_ok": length_adherence(e)})
    return out
