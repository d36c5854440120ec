"""Cached vs uncached re-evaluation: the same model on the same task folders, twice.

    .venv/bin/python benchmarks/eval_cache.py [--model all-minilm-l6-v2] [--tasks DIR ...] [--repeat 3]

Run 1 starts from an empty embedding cache (every text is encoded and stored); runs 2..N
re-evaluate with the cache warm (nothing is encoded, the model is not even loaded). Prints the
wall times, the scores (identical by construction) and the ratio uncached / cached.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv=None) -> int:
    from speed.evaluate import evaluate_model
    from speed.evaluate.tasks import builtin_dir

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all-minilm-l6-v2")
    ap.add_argument("--tasks", nargs="+", default=[str(builtin_dir() / "STSBenchmark")])
    ap.add_argument("--repeat", type=int, default=3, help="cached re-evaluations (the best is reported)")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="speed-embcache-") as tmp:
        t0 = time.perf_counter()
        first = evaluate_model(args.model, args.tasks, instruction="off", cache_dir=tmp)
        uncached = time.perf_counter() - t0
        times = []
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            again = evaluate_model(args.model, args.tasks, instruction="off", cache_dir=tmp)
            times.append(time.perf_counter() - t0)
        cached = min(times)
    print(f"model {args.model}; tasks: {', '.join(first['results'])}")
    print(f"texts: {first['encode']['unique']} unique; encoded uncached: {first['encode']['encoded']}, "
          f"cached: {again['encode']['encoded']}")
    for name, r in first["results"].items():
        same = r["main_score"] == again["results"][name]["main_score"]
        print(f"  {name}: {r['metric']} {r['main_score']:.4f} (cached run {'identical' if same else 'DIFFERENT'})")
    print(f"uncached: {uncached:.2f} s")
    print(f"cached:   {cached:.2f} s (best of {args.repeat})")
    print(f"ratio uncached / cached: {uncached / cached:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
