"""Near-duplicate removal: exact dedup on normalised text, then MinHash LSH, keeping first occurrences.

Usable on any list of texts::

    from speed.synth.dedup import dedup
    result = dedup(texts, ids=ids, threshold=0.7)
    result.kept          # indices kept, in input order
    result.duplicates    # one Duplicate per removed text, in input order

How it works (all steps deterministic for a given ``seed``):

1. **Normalise** (:func:`normalize`): Unicode NFKC, casefold, every character that is neither a
   letter/digit/underscore nor whitespace becomes a space, whitespace runs collapse to one space.
2. **Exact**: texts whose normalised forms are equal are duplicates of the first one
   (``reason="exact"``, ``jaccard=1.0``).
3. **Near**: each remaining text becomes a set of shingles of its normalised form (default
   character 5-grams; ``shingle="word"`` gives word n-grams). Character 5-grams keep one-word edits
   of short texts (~15 words) above a 0.7 Jaccard, where word 3-grams fall to ~0.5. Each shingle
   is hashed once to a 64-bit value (3 code points packed per word, then the splitmix64 finaliser),
   and all ``num_perm`` MinHash permutations are applied with numpy as
   ``h_i(x) = (a_i * x + b_i) mod 2**64`` (odd random ``a_i``), keeping the high 32 bits of the
   minimum per text. Signatures are cut into ``bands`` x ``rows`` (by default chosen from the
   threshold so that pairs at the threshold collide with probability >= 0.99, see
   :func:`band_params`), and texts are processed in input order: a text is a near duplicate of the
   earliest already-kept text that shares a band with it and whose estimated Jaccard (fraction of
   equal signature entries) is >= ``threshold``; otherwise it is kept and enters the index. Every
   LSH candidate is verified this way before anything is removed.

Every ``duplicate_of`` is a kept text: an exact copy of a text that then goes as a near duplicate
is reported as a near duplicate of that text's kept partner (with its Jaccard). Removed texts are
never used as anchors: if A is kept and B ~ A is removed, a C that is near B but
not near A is kept (the usual greedy semantics, same as querying then inserting into a
``datasketch.MinHashLSH`` only the texts kept).
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from dataclasses import dataclass, field
from typing import Callable, Literal, Sequence

import numpy as np

ShingleKind = Literal["char", "word"]

DEFAULT_THRESHOLD = 0.7
DEFAULT_NUM_PERM = 128
DEFAULT_SHINGLE: ShingleKind = "char"
DEFAULT_SHINGLE_SIZE = 5

_PUNCT = re.compile(r"[^\w\s]+")
_SPACE = re.compile(r"\s+")
_U64 = np.uint64
_CHUNK_SHINGLES = 1 << 17  # shingles per MinHash chunk (keeps the working arrays in cache)


def _ascii_table() -> bytes:
    out = bytearray(256)
    for c in range(128):
        ch = chr(c)
        out[c] = ord(ch.lower()) if (ch.isalnum() or ch == "_") else 32
    return bytes(out)


_ASCII = _ascii_table()


def normalize(text: str) -> str:
    """The form texts are compared in: NFKC, casefolded, punctuation -> space, whitespace collapsed.

    "Punctuation" is every character that is neither a letter, digit or underscore nor whitespace
    (``[^\\w\\s]``): punctuation, symbols, control characters, combining marks left after NFKC.
    """
    if text.isascii():  # fast path, same result: bytes.translate does all three at C speed
        return " ".join(text.encode("ascii").translate(_ASCII).decode("ascii").split())
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _PUNCT.sub(" ", text)
    return _SPACE.sub(" ", text).strip()


# -- hashing ---------------------------------------------------------------------------------------
def _splitmix64(z: np.ndarray) -> np.ndarray:
    """The splitmix64 finaliser, vectorised (uint64 in, uint64 out; wraps mod 2**64)."""
    with np.errstate(over="ignore"):
        z = z + _U64(0x9E3779B97F4A7C15)
        z ^= z >> _U64(30)
        z *= _U64(0xBF58476D1CE4E5B9)
        z ^= z >> _U64(27)
        z *= _U64(0x94D049BB133111EB)
        z ^= z >> _U64(31)
    return z


def _window_hashes(tokens: np.ndarray, lengths: np.ndarray, k: int, packed_bits: int) -> tuple[np.ndarray, np.ndarray]:
    """Hash every window of ``k`` consecutive tokens inside each document.

    ``tokens`` is the concatenation of the documents' token arrays (uint64), ``lengths`` their
    lengths. A document with fewer than ``k`` tokens (even zero) yields one window: its tokens padded
    with 0 (a value no real token takes). Returns (hashes, per-document window counts).
    """
    n = len(lengths)
    lengths = lengths.astype(np.int64)
    padded = np.maximum(lengths, k)
    if (padded != lengths).any():  # pad short documents with zeros
        starts = np.concatenate(([0], np.cumsum(padded)[:-1]))
        buf = np.zeros(int(padded.sum()), dtype=_U64)
        src_doc = np.repeat(np.arange(n), lengths)
        src_start = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        pos = np.arange(len(tokens)) - src_start[src_doc] + starts[src_doc]
        buf[pos] = tokens
        tokens = buf
    counts = padded - k + 1
    total = len(tokens)
    m = max(total - k + 1, 0)
    # combine the k tokens of every window start (contiguous slices, no gathers): pack `per`
    # tokens of `packed_bits` bits into one word, then mix word by word
    per = max(1, 63 // packed_bits) if packed_bits else 1
    h = np.full(m, 0x5EED, dtype=_U64)
    with np.errstate(over="ignore"):
        for j0 in range(0, k, per):
            word = tokens[j0:j0 + m].copy()
            for mm, j in enumerate(range(j0 + 1, min(k, j0 + per)), 1):
                word |= tokens[j:j + m] << _U64(packed_bits * mm)
            h = _splitmix64(h ^ word)
    # keep the windows that lie inside one document: per document, its first counts[d] starts
    if m and len(counts) > 1:
        ends = np.cumsum(padded)
        for_cut = ends[:-1]  # a window starting in (end-k, end) crosses into the next document
        cut = np.zeros(m + 1, dtype=np.int64)
        np.add.at(cut, np.clip(for_cut - k + 1, 0, m), 1)
        np.add.at(cut, np.clip(for_cut, 0, m), -1)
        valid = np.cumsum(cut[:m]) == 0
        h = h[valid]
    return h, counts


def _word_hash(word: str) -> int:
    v = int.from_bytes(hashlib.blake2b(word.encode("utf-8"), digest_size=8).digest(), "little")
    return v or 1  # 0 is the padding token


def shingle_hashes(normalized: Sequence[str], shingle: ShingleKind = DEFAULT_SHINGLE,
                   size: int = DEFAULT_SHINGLE_SIZE, _cache: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
    """64-bit hashes of the shingles of already-normalised texts: (concatenated hashes, counts per text).

    ``char``: every ``size`` consecutive characters (spaces included); ``word``: every ``size``
    consecutive words. A text shorter than one shingle is one shingle (the whole text). Stable
    across processes and platforms.
    """
    if shingle == "char":
        joined = "".join(normalized)
        codes = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(_U64)
        codes += _U64(1)  # 0 is the padding token
        lengths = np.fromiter((len(t) for t in normalized), dtype=np.int64, count=len(normalized))
        return _window_hashes(codes, lengths, size, packed_bits=21)
    if shingle == "word":
        cache = {} if _cache is None else _cache
        toks: list[int] = []
        lengths = np.empty(len(normalized), dtype=np.int64)
        for i, t in enumerate(normalized):
            words = t.split(" ") if t else []
            for w in words:
                v = cache.get(w)
                if v is None:
                    v = cache[w] = _word_hash(w)
                toks.append(v)
            lengths[i] = len(words)
        return _window_hashes(np.array(toks, dtype=_U64), lengths, size, packed_bits=0)
    raise ValueError(f"shingle must be 'char' or 'word', not {shingle!r}")


class MinHasher:
    """``num_perm`` seeded hash functions applied to all shingles at once with numpy."""

    def __init__(self, num_perm: int = DEFAULT_NUM_PERM, seed: int = 0):
        if num_perm < 1:
            raise ValueError("num_perm must be >= 1")
        rng = np.random.default_rng([seed, 0x4D696E48])  # PCG64: same draws on every platform
        self.num_perm = num_perm
        self.a = rng.integers(0, 1 << 63, num_perm, dtype=_U64) << _U64(1) | _U64(1)
        self.b = rng.integers(0, 1 << 63, num_perm, dtype=_U64) << _U64(1)

    def signatures(self, hashes: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """(len(counts), num_perm) uint32 signatures; document i owns the next counts[i] hashes."""
        n = len(counts)
        out = np.empty((n, self.num_perm), dtype=np.uint32)
        if n == 0:
            return out
        if (counts < 1).any():
            raise ValueError("every document needs at least one shingle")
        starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
        ends = starts + counts
        d0 = 0
        with np.errstate(over="ignore"):
            while d0 < n:
                # as many documents as fit in one chunk of shingles (at least one)
                d1 = int(np.searchsorted(ends, starts[d0] + _CHUNK_SHINGLES, side="right"))
                d1 = max(d1, d0 + 1)
                s0, s1 = int(starts[d0]), int(ends[d1 - 1])
                hh = hashes[s0:s1]
                rel = starts[d0:d1] - s0
                tmp = np.empty(s1 - s0, dtype=_U64)
                block = out[d0:d1]
                for i in range(self.num_perm):
                    np.multiply(hh, self.a[i], out=tmp)
                    tmp += self.b[i]
                    block[:, i] = np.minimum.reduceat(tmp, rel) >> _U64(32)
                d0 = d1
        return out


# -- LSH banding -------------------------------------------------------------------------------------
def collision_probability(jaccard: float, bands: int, rows: int) -> float:
    """Probability that two texts with this Jaccard share at least one band."""
    return 1.0 - (1.0 - jaccard ** rows) ** bands


def band_params(threshold: float, num_perm: int, min_recall: float = 0.99) -> tuple[int, int]:
    """(bands, rows) with bands*rows <= num_perm for a threshold.

    Candidates are verified afterwards, so false candidates cost only time while missed candidates
    cost recall: among the splittings whose collision probability at the threshold is at least
    ``min_recall``, take the one with the least false-positive area (integral of the collision
    probability over Jaccard 0..threshold, the datasketch criterion); if none reaches
    ``min_recall``, the one with the highest probability at the threshold.
    """
    grid = np.linspace(0.0, threshold, 201)
    best, best_fp, fallback, fallback_p = None, math.inf, None, -1.0
    for rows in range(1, num_perm + 1):
        bands = num_perm // rows
        p_at = collision_probability(threshold, bands, rows)
        if p_at >= min_recall:
            fp = float(np.trapezoid(1.0 - (1.0 - grid ** rows) ** bands, grid))
            if fp < best_fp:
                best, best_fp = (bands, rows), fp
        if p_at > fallback_p:
            fallback, fallback_p = (bands, rows), p_at
    return best or fallback


def _band_keys(sig: np.ndarray, bands: int, rows: int, seed: int) -> np.ndarray:
    """(n, bands) uint64: a hash of each band's slice of each signature."""
    rng = np.random.default_rng([seed, 0x42414E44])
    mult = rng.integers(0, 1 << 63, rows, dtype=_U64) << _U64(1) | _U64(1)
    n = len(sig)
    keys = np.empty((n, bands), dtype=_U64)
    with np.errstate(over="ignore"):
        for bnd in range(bands):
            part = sig[:, bnd * rows:(bnd + 1) * rows].astype(_U64)
            h = np.full(n, bnd, dtype=_U64)
            for j in range(rows):
                h = _splitmix64(h ^ (part[:, j] * mult[j]))
            keys[:, bnd] = h
    return keys


# -- dedup -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Duplicate:
    """A removed text: its index and id, the kept text it duplicates, why, and the Jaccard."""

    index: int
    id: object
    duplicate_of_index: int
    duplicate_of: object
    reason: Literal["exact", "near"]
    jaccard: float


@dataclass
class DedupResult:
    keep: np.ndarray  # bool per input text
    duplicates: list[Duplicate] = field(default_factory=list)  # in input order
    bands: int = 0
    rows: int = 0
    candidates_checked: int = 0

    @property
    def kept(self) -> list[int]:
        return [int(i) for i in np.flatnonzero(self.keep)]

    @property
    def counts(self) -> dict[str, int]:
        exact = sum(d.reason == "exact" for d in self.duplicates)
        return {"input": int(len(self.keep)), "kept": int(self.keep.sum()),
                "removed_exact": exact, "removed_near": len(self.duplicates) - exact}


def _check_params(threshold: float, num_perm: int, shingle: str, shingle_size: int,
                  bands: int | None, rows: int | None) -> None:
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], not {threshold!r}")
    if num_perm < 1:
        raise ValueError(f"num_perm must be >= 1, not {num_perm!r}")
    if shingle not in ("char", "word"):
        raise ValueError(f"shingle must be 'char' or 'word', not {shingle!r}")
    if shingle_size < 1:
        raise ValueError(f"shingle_size must be >= 1, not {shingle_size!r}")
    if (bands is None) != (rows is None):
        raise ValueError("give both bands and rows, or neither")
    if bands is not None and (bands < 1 or rows < 1 or bands * rows > num_perm):
        raise ValueError(f"bands * rows must be between 1 and num_perm={num_perm} (got {bands} x {rows})")


def dedup(
    texts: Sequence[str],
    ids: Sequence[object] | None = None,
    *,
    threshold: float = DEFAULT_THRESHOLD,
    num_perm: int = DEFAULT_NUM_PERM,
    shingle: ShingleKind = DEFAULT_SHINGLE,
    shingle_size: int = DEFAULT_SHINGLE_SIZE,
    bands: int | None = None,
    rows: int | None = None,
    exact: bool = True,
    near: bool = True,
    seed: int = 0,
    on_progress: Callable[[int], None] | None = None,
) -> DedupResult:
    """Remove exact and near duplicates from ``texts``, keeping the first occurrence of each.

    ``ids`` (default: the indices) name texts in the result. ``on_progress(n)`` is called as texts
    are hashed (n texts at a time, len(texts) in all). See the module docstring for the method.
    """
    _check_params(threshold, num_perm, shingle, shingle_size, bands, rows)
    n = len(texts)
    if ids is None:
        ids = list(range(n))
    elif len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} texts")
    keep = np.ones(n, dtype=bool)
    dups: dict[int, Duplicate] = {}
    normalized = [normalize(t) for t in texts]

    if exact:
        first: dict[str, int] = {}
        for i, t in enumerate(normalized):
            j = first.setdefault(t, i)
            if j != i:
                keep[i] = False
                dups[i] = Duplicate(i, ids[i], j, ids[j], "exact", 1.0)

    if bands is None:
        bands, rows = band_params(threshold, num_perm)
    result = DedupResult(keep=keep, bands=bands, rows=rows)

    if near:
        todo = np.flatnonzero(keep)
        hasher = MinHasher(num_perm, seed)
        sig = np.empty((len(todo), num_perm), dtype=np.uint32)
        cache: dict = {}
        step = 4096
        for s in range(0, len(todo), step):
            part = [normalized[i] for i in todo[s:s + step]]
            h, c = shingle_hashes(part, shingle, shingle_size, _cache=cache)
            sig[s:s + len(part)] = hasher.signatures(h, c)
            if on_progress:
                on_progress(len(part))
        result.candidates_checked = _near(sig, todo, keep, dups, ids, threshold, bands, rows, seed)
        if on_progress and n - len(todo):
            on_progress(n - len(todo))
        # an exact copy of a text that then went as a near duplicate: point it at the kept text
        for i, d in list(dups.items()):
            if d.reason == "exact" and not keep[d.duplicate_of_index]:
                rep = dups[d.duplicate_of_index]
                dups[i] = Duplicate(i, ids[i], rep.duplicate_of_index, rep.duplicate_of, "near", rep.jaccard)
    elif on_progress:
        on_progress(n)

    result.duplicates = [dups[i] for i in sorted(dups)]
    return result


def _near(sig: np.ndarray, todo: np.ndarray, keep: np.ndarray, dups: dict, ids: Sequence[object],
          threshold: float, bands: int, rows: int, seed: int) -> int:
    """Greedy near-dedup over signatures (row r is text todo[r]); updates keep and dups in place."""
    m = len(sig)
    if m < 2:
        return 0
    keys = _band_keys(sig, bands, rows, seed)
    # per band: bucket ids for keys shared by >= 2 texts, -1 for a key nobody else has
    bucket = np.full((m, bands), -1, dtype=np.int64)
    next_id = 0
    for bnd in range(bands):
        col = keys[:, bnd]
        order = np.argsort(col, kind="stable")
        sk = col[order]
        same_next = sk[1:] == sk[:-1]
        shared = np.zeros(m, dtype=bool)
        shared[1:] |= same_next
        shared[:-1] |= same_next
        if not shared.any():
            continue
        group_start = np.concatenate(([True], ~same_next))
        gid = np.cumsum(group_start) - 1  # group index per sorted position
        rows_shared = order[shared]
        bucket[rows_shared, bnd] = gid[shared] + next_id
        next_id += int(gid[-1]) + 1
    colliding = np.flatnonzero((bucket >= 0).any(axis=1))
    members: dict[int, list[int]] = {}
    need = math.ceil(threshold * sig.shape[1] - 1e-9)  # equal entries needed for est. J >= threshold
    checked = 0
    for r in colliding.tolist():
        cands: set[int] = set()
        bids = [b for b in bucket[r].tolist() if b >= 0]
        for b in bids:
            lst = members.get(b)
            if lst:
                cands.update(lst)
        if cands:
            c = np.fromiter(sorted(cands), dtype=np.int64, count=len(cands))
            checked += len(c)
            eq = (sig[c] == sig[r]).sum(axis=1)
            hit = np.flatnonzero(eq >= need)
            if len(hit):
                j = int(c[hit[0]])  # the earliest kept text that passes
                i, k = int(todo[r]), int(todo[j])
                keep[i] = False
                dups[i] = Duplicate(i, ids[i], k, ids[k], "near", float(eq[hit[0]]) / sig.shape[1])
                continue
        for b in bids:
            members.setdefault(b, []).append(r)
    return checked
