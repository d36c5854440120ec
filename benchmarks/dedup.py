"""Benchmark: speed.synth.dedup against a plain datasketch MinHash + MinHashLSH loop, on real texts.

    .venv/bin/python benchmarks/dedup.py [--docs 100000] [--baseline-docs N] [--threshold 0.7]

Documents are built from the real evaluation sets in ../shared/eval/ (SciFact abstract sentences,
Banking77 train+test, SICK-R, STSBenchmark and MRPC sentences, Amazon Counterfactual train+test):
2-4 random distinct sentences per document with a seeded RNG, no two documents sharing sentences
that make up half or more of either (so that the base documents are not near duplicates of each
other). About 5% of the documents are planted near duplicates: a copy of an earlier document with
one small edit (adjacent words swapped, a word substituted / deleted / inserted, case and
punctuation changed, or a sentence appended to a long document), placed at a random later position.

Both sides use the same normalisation, shingles (char 5-grams of the normalised text by default),
threshold and num_perm, and both verify each LSH candidate by its estimated Jaccard before
removing a document (the baseline with ``MinHash.jaccard``), keeping first occurrences. The
baseline is the loop ``MinHash(num_perm)`` + ``m.update(shingle.encode())`` per shingle, then
``lsh.query(m)`` and, if nothing passes, ``lsh.insert(key, m)``. Prints documents/second of both,
the ratio ours/baseline, and recall / precision of both on the planted duplicates.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
from speed.synth.dedup import DEFAULT_NUM_PERM, DEFAULT_SHINGLE_SIZE, DEFAULT_THRESHOLD, dedup, normalize  # noqa: E402

EVAL = ROOT.parent / "shared" / "eval"
_SENT = re.compile(r"(?<=[.!?])\s+(?=[A-Z])")


def _rows(path: Path):
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def sentence_pool(eval_dir: Path = EVAL) -> list[str]:
    """Distinct (after normalisation) real sentences / short texts from the evaluation sets."""
    texts: list[str] = []
    for row in _rows(eval_dir / "SciFact" / "corpus.jsonl"):
        texts.extend(_SENT.split(row["text"]))
    for name in ("Banking77Classification", "AmazonCounterfactualClassification"):
        for split in ("train", "test"):
            texts.extend(r["text"] for r in _rows(eval_dir / name / f"{split}.jsonl"))
    for name in ("SICK-R", "STSBenchmark", "MRPC"):
        for r in _rows(eval_dir / name / "test.jsonl"):
            texts.extend((r["sentence1"], r["sentence2"]))
    seen, pool = set(), []
    for t in texts:
        t = " ".join(t.split())
        key = normalize(t)
        if len(key) >= 10 and key not in seen:
            seen.add(key)
            pool.append(t)
    return pool


def build_base(pool: list[str], n: int, rng: random.Random) -> list[str]:
    """``n`` documents of 2-4 pool sentences; no two share sentences making up half or more of either."""
    lengths = [len(s) for s in pool]
    used_in: dict[int, list[int]] = {}  # sentence -> documents using it
    doc_len: list[int] = []
    docs: list[str] = []
    seen: set[str] = set()
    while len(docs) < n:
        parts = rng.sample(range(len(pool)), rng.randint(2, 4))
        total = sum(lengths[p] for p in parts)
        shared: dict[int, int] = {}  # earlier document -> length of the sentences it shares
        for p in parts:
            for d in used_in.get(p, ()):
                shared[d] = shared.get(d, 0) + lengths[p]
        if any(2 * ln >= min(total, doc_len[d]) for d, ln in shared.items()):
            continue
        text = " ".join(pool[p] for p in parts)
        key = normalize(text)
        if key in seen:
            continue
        seen.add(key)
        for p in parts:
            used_in.setdefault(p, []).append(len(docs))
        doc_len.append(total)
        docs.append(text)
    return docs


def small_edit(text: str, rng: random.Random, vocab: list[str], pool: list[str]) -> tuple[str, str]:
    """One small edit of ``text``: (edited text, kind of edit)."""
    words = text.split()
    kinds = ["swap", "substitute", "delete", "insert", "case_punct"]
    if len(words) >= 80:
        kinds.append("append")
    kind = rng.choice(kinds)
    i = rng.randrange(len(words) - 1)
    if kind == "swap":
        words[i], words[i + 1] = words[i + 1], words[i]
    elif kind == "substitute":
        words[i] = rng.choice(vocab)
    elif kind == "delete":
        del words[i]
    elif kind == "insert":
        words.insert(i, rng.choice(vocab))
    elif kind == "case_punct":
        words = [w.upper() if rng.random() < 0.2 else w for w in words]
        words = [w.strip(".,;:!?") + (rng.choice(",;") if rng.random() < 0.1 else "") for w in words]
    else:  # append a short real sentence (<= 10% of the text)
        short = [s for s in (rng.choice(pool) for _ in range(50)) if len(s.split()) <= len(words) // 10]
        words.extend((short[0] if short else rng.choice(vocab)).split())
    return " ".join(words), kind


def build_corpus(n_docs: int, seed: int = 0, planted_frac: float = 0.05, eval_dir: Path = EVAL):
    """(texts, source): source[i] is the index of the document a planted duplicate was made from, else -1."""
    rng = random.Random(seed)
    pool = sentence_pool(eval_dir)
    n_planted = int(round(n_docs * planted_frac))
    base = build_base(pool, n_docs - n_planted, rng)
    vocab = sorted({w for s in pool[:20000] for w in s.split() if w.isalpha()})
    # plant: a copy of base document b, edited, at a random position after b
    planted = []
    for _ in range(n_planted):
        b = rng.randrange(len(base))
        text, kind = small_edit(base[b], rng, vocab, pool)
        planted.append((b, text, kind))
    # interleave: base documents in order, each planted one after its source
    slots: dict[int, list[tuple[str, str]]] = {}
    for b, text, kind in planted:
        slots.setdefault(rng.randrange(b, len(base)), []).append((text, kind, b))
    texts, source, kinds, pos_of_base = [], [], [], {}
    for i, t in enumerate(base):
        pos_of_base[i] = len(texts)
        texts.append(t)
        source.append(-1)
        kinds.append("")
        for text, kind, b in slots.get(i, ()):
            texts.append(text)
            source.append(pos_of_base[b])
            kinds.append(kind)
    return texts, source, kinds


def char_shingles(norm: str, k: int) -> set[str]:
    return {norm[i:i + k] for i in range(len(norm) - k + 1)} or {norm}


def baseline(texts: list[str], threshold: float, num_perm: int, k: int) -> tuple[set[int], float, float]:
    """The plain datasketch loop (same normalisation, shingles, threshold, num_perm; verified)."""
    from datasketch import MinHash, MinHashLSH

    t0, c0 = time.perf_counter(), time.process_time()
    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    kept: dict[int, MinHash] = {}
    removed: set[int] = set()
    for i, text in enumerate(texts):
        m = MinHash(num_perm=num_perm)
        for sh in char_shingles(normalize(text), k):
            m.update(sh.encode("utf-8"))
        if any(m.jaccard(kept[j]) >= threshold for j in lsh.query(m)):
            removed.add(i)
            continue
        lsh.insert(i, m)
        kept[i] = m
    return removed, time.perf_counter() - t0, time.process_time() - c0


def score(removed: set[int], source: list[int]) -> tuple[float, float, int]:
    planted = {i for i, s in enumerate(source) if s >= 0}
    hit = len(removed & planted)
    recall = hit / len(planted) if planted else 1.0
    precision = hit / len(removed) if removed else 1.0
    return recall, precision, len(removed - planted)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--docs", type=int, default=100_000)
    ap.add_argument("--baseline-docs", type=int, default=None,
                    help="measure the baseline on the first N documents only (default: all)")
    ap.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    ap.add_argument("--num-perm", type=int, default=DEFAULT_NUM_PERM)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if not EVAL.is_dir():
        sys.exit(f"{EVAL} is absent: this benchmark builds its documents from ../shared/eval/")
    k = DEFAULT_SHINGLE_SIZE
    t0 = time.perf_counter()
    texts, source, kinds = build_corpus(args.docs, seed=args.seed)
    n_planted = sum(s >= 0 for s in source)
    print(f"corpus: {len(texts):,} documents ({n_planted:,} planted near duplicates), "
          f"mean {sum(map(len, texts)) / len(texts):.0f} chars, built in {time.perf_counter() - t0:.1f}s")
    print(f"settings: threshold {args.threshold}, num_perm {args.num_perm}, char {k}-grams of normalised text")

    t0, c0 = time.perf_counter(), time.process_time()
    res = dedup(texts, threshold=args.threshold, num_perm=args.num_perm, shingle="char", shingle_size=k)
    ours_s, ours_cpu = time.perf_counter() - t0, time.process_time() - c0
    ours_removed = {d.index for d in res.duplicates}
    r, p, fp = score(ours_removed, source)
    wrong_anchor = sum(1 for d in res.duplicates if source[d.index] >= 0
                       and d.duplicate_of_index != source[d.index])
    ours_rate = len(texts) / ours_s
    print(f"ours:     {ours_rate:10,.0f} docs/s  ({ours_s:.1f}s wall, {ours_cpu:.1f}s CPU; bands {res.bands} x rows {res.rows}; "
          f"{res.candidates_checked:,} candidates verified)  recall {r:.4f}  precision {p:.4f}  "
          f"(removed {len(ours_removed):,}: exact {res.counts['removed_exact']:,}, near {res.counts['removed_near']:,}; "
          f"unplanted removed {fp}; planted pointing elsewhere than their source {wrong_anchor})")
    missed: dict[str, int] = {}
    for i, s in enumerate(source):
        if s >= 0 and i not in ours_removed:
            missed[kinds[i]] = missed.get(kinds[i], 0) + 1
    print(f"          planted missed by edit kind: {missed or 'none'}")

    nb = args.baseline_docs or len(texts)
    sub_src = source[:nb]
    b_removed, b_s, b_cpu = baseline(texts[:nb], args.threshold, args.num_perm, k)
    br, bp, bfp = score(b_removed, sub_src)
    b_rate = nb / b_s
    print(f"baseline: {b_rate:10,.0f} docs/s  ({b_s:.1f}s wall, {b_cpu:.1f}s CPU on {nb:,} documents; datasketch MinHash + MinHashLSH)  "
          f"recall {br:.4f}  precision {bp:.4f}  (removed {len(b_removed):,}; unplanted removed {bfp})")
    print(f"ratio ours/baseline: {ours_rate / b_rate:.1f}x docs/s (wall); "
          f"{(len(texts) / ours_cpu) / (nb / b_cpu):.1f}x docs per CPU second")


if __name__ == "__main__":
    main()
