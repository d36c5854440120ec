import json
import subprocess
import sys

import pytest

from odp_synth import write_dump

CODE = """
# VmHWM: the peak RSS of this process image (not inherited across fork/exec, unlike ru_maxrss)
def peak():
    return int([l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]) / 1024
import json, sys
from pathlib import Path
from speed.synth.taxonomy import iter_odp, sample_topics
stats = {}
topics = sample_topics(iter_odp(Path(sys.argv[1])), count=1000, seed=0, stats=stats)
print(json.dumps({"rss": peak(), "seen": stats["source_topics"],
                  "n": len(topics), "depths": sorted({t.depth for t in topics})}))
"""


def _peak(dump):
    out = subprocess.run([sys.executable, "-c", CODE, str(dump)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.slow
def test_one_million_topic_dump_parses_in_flat_memory(tmp_path):
    small = _peak(write_dump(tmp_path / "small.rdf.u8.gz", 50_000))
    big = _peak(write_dump(tmp_path / "big.rdf.u8.gz", 1_000_000))
    assert big["seen"] == 1_000_000 and big["n"] == 1000
    assert big["depths"][0] <= 3 and big["depths"][-1] >= 6  # multi-grained
    print(f"peak RSS: 50K topics {small['rss']:.0f} MB, 1M topics {big['rss']:.0f} MB")
    assert big["rss"] - small["rss"] < 25, (small, big)
