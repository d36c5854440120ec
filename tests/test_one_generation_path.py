"""``speed compare`` generates on the stages' generation path (issue #15).

The same prompts (planned from one run's topics and tasks, with the same seed and count) go through
``speed compare`` (a variant whose generator is the senior's model) and through the synthesize
stage of a run that shares compare's request cache (``run.cache``): the stage asks nothing anew,
every request is a cache hit, and every sample equals compare's, byte for byte. Real SmolLM2-135M
behind a managed llama-server.
"""

from __future__ import annotations

import shutil

from conftest import FIXTURES, run_cli
from speed.analysis.compare import CompareSettings, Variant, generate_variant, plan
from speed.runtime.config import ModelRef
from speed.io import read_jsonl
from speed.llm.ledger import iter_ledger

MODEL = "{backend: llamacpp, model: smollm2-135m-instruct, n_threads: 2, slots: 1, options: {cache_prompt: false}}"
PROPORTIONS = {"classification": 1, "sts": 1}


def test_compare_and_the_stage_give_the_same_cached_samples(tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(FIXTURES / "run_before_redesign", run_dir)  # topics and brainstorm done
    topics = list(read_jsonl(run_dir / "topics" / "topics.jsonl"))
    tasks = list(read_jsonl(run_dir / "brainstorm" / "tasks.jsonl"))
    out = tmp_path / "compare"
    out.mkdir()
    ref = ModelRef(backend="llamacpp", model="smollm2-135m-instruct", n_threads=2, slots=1,
                   options={"cache_prompt": False})
    prompts = plan(0, 4, tasks, topics, PROPORTIONS)
    rows = generate_variant(Variant("senior", ref), prompts, CompareSettings(seed=0, max_tokens=48), out)
    assert len(rows) == 4 and all(r["raw"] for r in rows)
    asked = [r for r in iter_ledger(out / "ledger.jsonl") if not r["cache_hit"]]
    assert len(asked) == 4

    cfg = tmp_path / "run.yaml"
    cfg.write_text(f"run: {{name: before-redesign, seed: 0, cache: {out / 'cache.sqlite'}}}\n"
                   f"models:\n  senior: {MODEL}\n"
                   f"synthesize: {{count: 4, max_tokens: 48, proportions: {PROPORTIONS}}}\n")
    before = len(list(iter_ledger(run_dir / "ledger.jsonl")))
    proc = run_cli("run", str(cfg), "--run-dir", str(run_dir), "--from", "synthesize", "--until", "synthesize")
    assert proc.returncode == 0, proc.stderr[-2000:]
    stage_rows = [r for r in list(iter_ledger(run_dir / "ledger.jsonl"))[before:] if r["stage"] == "synthesize"]
    assert len(stage_rows) == 4 and all(r["cache_hit"] for r in stage_rows)  # nothing asked anew
    samples = {}
    for shard in sorted((run_dir / "synthesize" / "shards").glob("part-*.jsonl")):
        for row in read_jsonl(shard):
            samples[row["prompt"]["id"]] = row["raw"]
    assert samples == {r["prompt_id"]: r["raw"] for r in rows}
