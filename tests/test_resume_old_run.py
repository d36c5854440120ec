"""A run directory written by the code before the stage redesign (issue #15) resumes after it.

``tests/fixtures/run_before_redesign/`` was made at commit ff1f740 with
``tests/fixtures/run_before_redesign.yaml``: topics and brainstorm done, seed SIGKILLed after its
first shard (2 of 6 prompts). The current code must find the same config and input hashes (the
done stages are skipped, not redone), resume seed at its second shard, and ask the teacher only
for the prompts it had not answered.
"""

from __future__ import annotations

import json
import shutil

from conftest import FIXTURES, run_cli
from speed.llm.ledger import iter_ledger


def test_a_run_dir_written_before_the_redesign_resumes(tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURES / "run_before_redesign", run_dir)
    before = list(iter_ledger(run_dir / "ledger.jsonl"))
    proc = run_cli("run", str(FIXTURES / "run_before_redesign.yaml"), "--run-dir", str(run_dir), "--until", "seed")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "[topics] done, skipped" in proc.stdout and "[brainstorm] done, skipped" in proc.stdout
    assert "[seed] resuming" in proc.stdout
    rows = list(iter_ledger(run_dir / "ledger.jsonl"))
    new = rows[len(before):]
    assert {r["stage"] for r in new} == {"seed"}  # nothing of the done stages is asked again
    manifest = json.loads((run_dir / "manifest.json").read_text())
    seed = manifest["stages"]["seed"]
    assert seed["status"] == "done" and seed["counts"]["shards_resumed"] == 1
    prompts = seed["counts"]["prompts"]
    # the first shard's 2 answers came from the shard file: only the other prompts were asked
    assert sum(not r["cache_hit"] for r in new) == prompts - 2
    assert len(list((run_dir / "seed" / "shards").glob("*.done"))) == seed["counts"]["shards"]
