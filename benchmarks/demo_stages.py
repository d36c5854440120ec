"""Benchmark: the demo's wall time per stage, so that the slowest stage is known.

    .venv/bin/python benchmarks/demo_stages.py [--run-dir runs/demo]          # a finished run
    .venv/bin/python benchmarks/demo_stages.py --run configs/demo.yaml        # run it first (fresh dir)

Reads the run's manifest (each stage's wall seconds, as timed by the pipeline, and its LLM usage
from the ledger: calls actually made, their tokens and summed latency) and prints one row per stage:
seconds, share of the total, calls, completion tokens, seconds inside model calls. The ratio is
against the 30-minute budget of ``make demo`` (budget / total: above 1 means within budget), and
the slowest stage is named. ``--run`` also measures the whole command's wall time (model loading
and process start-up included), the baseline the per-stage sum is compared with.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
BUDGET_S = 30 * 60


def stage_table(run_dir: Path) -> list[dict]:
    """One row per stage of the manifest: its wall seconds and the totals of its LLM usage (calls
    that reached a model, their completion tokens and latency), as the pipeline recorded them."""
    from speed.llm.ledger import totals
    from speed.stages import STAGE_ORDER

    manifest = json.loads((run_dir / "manifest.json").read_text())
    rows = []
    for name in STAGE_ORDER:
        e = manifest["stages"].get(name)
        if not e:
            continue
        t = totals(e.get("usage") or {})
        rows.append({"stage": name, "status": e.get("status"), "seconds": float(e.get("seconds") or 0.0),
                     "calls": t["calls"], "completion_tokens": t["completion_tokens"], "llm_seconds": t["latency_s"]})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default=str(ROOT / "runs" / "demo"))
    ap.add_argument("--run", metavar="CONFIG", help="run this config into a fresh directory first")
    ap.add_argument("--json", help="also write the table to this file")
    args = ap.parse_args()
    wall = None
    run_dir = Path(args.run_dir)
    if args.run:
        run_dir = Path(tempfile.mkdtemp(prefix="speed-demo-bench-")) / "run"
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, "-m", "speed", "run", args.run, "--run-dir", str(run_dir)])
        wall = time.perf_counter() - t0
        if rc != 0:
            print(f"error: speed run {args.run} exited with {rc}", file=sys.stderr)
            return 2
    if not (run_dir / "manifest.json").is_file():
        print(f"error: {run_dir} has no manifest.json; run `make demo` first or pass --run configs/demo.yaml",
              file=sys.stderr)
        return 2
    rows = stage_table(run_dir)
    total = sum(r["seconds"] for r in rows)
    print(f"{'stage':<16}{'status':<9}{'seconds':>9}{'share':>8}{'calls':>7}{'tokens':>8}{'llm s':>8}")
    for r in rows:
        share = r["seconds"] / total if total else 0.0
        print(f"{r['stage']:<16}{r['status']:<9}{r['seconds']:>9.1f}{share:>8.1%}{r['calls']:>7}"
              f"{r['completion_tokens']:>8}{r['llm_seconds']:>8.1f}")
    slowest = max(rows, key=lambda r: r["seconds"])
    print(f"total of stages: {total:.0f}s ({total / 60:.1f} min); slowest stage: {slowest['stage']} "
          f"({slowest['seconds']:.0f}s, {slowest['seconds'] / total:.0%})")
    if wall is not None:
        print(f"whole command: {wall:.0f}s (stages are {total / wall:.0%} of it)")
    measured = wall if wall is not None else total
    print(f"ratio (30-minute budget / wall time): {BUDGET_S / measured:.2f}x "
          f"({'within' if measured <= BUDGET_S else 'over'} budget)")
    if args.json:
        Path(args.json).write_text(json.dumps({"run_dir": str(run_dir), "stages": rows, "total_s": total,
                                               "wall_s": wall}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
