"""Benchmark: streaming ODP parse + topic sampling on a 1M-topic dump, against a full ElementTree parse.

    .venv/bin/python benchmarks/odp_parse.py [--topics 1000000]

Prints, for both, the wall time and the peak RSS of a fresh process, and the ratios
(baseline / ours). The speed parser keeps memory flat: its peak RSS barely moves between a
100K-topic and a 1M-topic dump.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from odp_synth import write_dump  # noqa: E402

OURS = """
# VmHWM: the peak RSS of this process image (not inherited across fork/exec, unlike ru_maxrss)
def peak():
    return int([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]) / 1024
import json, sys, time
from speed.synth.taxonomy import iter_odp, sample_topics
t0 = time.time()
stats = {}
topics = sample_topics(iter_odp(__import__('pathlib').Path(sys.argv[1])), count=10000, seed=0, stats=stats)
print(json.dumps({"seconds": time.time() - t0, "peak_rss_mb": peak(),
                  "topics_seen": stats["source_topics"], "sampled": len(topics)}))
"""

BASELINE = """
# VmHWM: the peak RSS of this process image (not inherited across fork/exec, unlike ru_maxrss)
def peak():
    return int([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]) / 1024
import json, random, sys, time
import xml.etree.ElementTree as ET
t0 = time.time()
root = ET.parse(sys.argv[1]).getroot()
ids = [el.get('{http://www.w3.org/TR/RDF/}id') for el in root.iter('{http://dmoz.org/rdf/}Topic')]
paths = [i[4:] for i in ids if i and i.startswith('Top/')]
paths = [p for p in paths if not p.startswith(('World/', 'Adult/')) and p not in ('World', 'Adult')]
sample = random.Random(0).sample(paths, 10000)
print(json.dumps({"seconds": time.time() - t0, "peak_rss_mb": peak(),
                  "topics_seen": len(ids), "sampled": len(sample)}))
"""


def measure(code: str, dump: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", code, str(dump)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--topics", type=int, default=1_000_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small = write_dump(Path(tmp) / "small.rdf.u8", args.topics // 10)
        big = write_dump(Path(tmp) / "big.rdf.u8", args.topics)
        ours_small, ours = measure(OURS, small), measure(OURS, big)
        base = measure(BASELINE, big)
    print(f"dump: {args.topics:,} topics")
    print(f"speed streaming parse: {ours['seconds']:.1f}s, peak RSS {ours['peak_rss_mb']:.0f} MB "
          f"(at {args.topics // 10:,} topics: {ours_small['peak_rss_mb']:.0f} MB)")
    print(f"baseline ElementTree:  {base['seconds']:.1f}s, peak RSS {base['peak_rss_mb']:.0f} MB")
    print(f"ratio peak RSS baseline/speed: {base['peak_rss_mb'] / ours['peak_rss_mb']:.1f}x; "
          f"time baseline/speed: {base['seconds'] / ours['seconds']:.2f}x; "
          f"speed RSS growth 10x topics: {ours['peak_rss_mb'] - ours_small['peak_rss_mb']:+.0f} MB")


if __name__ == "__main__":
    main()
