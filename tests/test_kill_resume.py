"""SIGKILL in the training stages (train-embedder, train-senior) and in evaluation, then the same command again.

A wrapper pauses the real ``speed run`` at a known point (right after training checkpoint 2 is
written; after the second of three evaluation tasks is scored) so that the kill lands there, every
time. The rerun must resume (training: from the checkpoint) and end exactly where an
uninterrupted run ends. The data-stage case (SIGKILL in synthesize) is in test_data_pipeline.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from conftest import FIXTURES
from speed.io import atomic_write_jsonl, sha256_file
from speed.runtime.rundir import RunDir

pytest.importorskip("sentence_transformers")

BEFORE_EVAL = ["topics", "brainstorm", "seed", "train-junior", "root", "judge", "revise-signals", "train-senior",
               "train-revisor", "synthesize", "revise", "dedup", "score", "export", "train-embedder"]
ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "SPEED_PROGRESS": "0"}

WRAPPER = textwrap.dedent("""
    import os, sys, time
    kind, n = os.environ["PAUSE_AT"].split(":")
    n = int(n)
    def pause():
        open(os.environ["PAUSE_MARKER"], "w").close()
        time.sleep(600)
    if kind == "checkpoint":
        from transformers import TrainerCallback
        import speed.train.common as common
        class Pause(TrainerCallback):
            def on_save(self, args, state, control, **kw):  # called once checkpoint-N is on disk
                if state.global_step == n:
                    pause()
        common.EXTRA_CALLBACKS.append(Pause())
    elif kind == "task":
        import speed.evaluate.runner as runner
        real, done = runner.evaluate_task, [0]
        def evaluate_task(*a, **k):
            out = real(*a, **k)
            done[0] += 1
            if done[0] == n:
                pause()
            return out
        runner.evaluate_task = evaluate_task
    from speed.cli.main import main
    sys.exit(main(sys.argv[1:]))
""")


def _cli(args, timeout=900):
    return subprocess.run([sys.executable, "-m", "speed", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **ENV})


def _run_and_kill(tmp_path, args, pause_at: str, timeout=600) -> None:
    wrapper, marker = tmp_path / "pause.py", tmp_path / "paused"
    wrapper.write_text(WRAPPER)
    marker.unlink(missing_ok=True)
    proc = subprocess.Popen([sys.executable, str(wrapper), *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, **ENV, "PAUSE_AT": pause_at, "PAUSE_MARKER": str(marker)})
    t0 = time.time()
    while not marker.exists():
        if proc.poll() is not None:
            pytest.fail("the run ended before the pause point: " + proc.stderr.read().decode()[-3000:])
        if time.time() - t0 > timeout:
            proc.kill()
            pytest.fail("the pause point was never reached")
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    proc.stderr.close()


# -- training: train-embedder ----------------------------------------------------------------------

def _export_done(run_dir: Path) -> None:
    """A run directory whose export stage is done (as the pipeline records it)."""
    rows = [{"id": f"r{i}", "kind": "retrieval", "task": "find the answer", "query": f"question number {i} about bees",
             "positive": f"answer {i}: bees make honey", "negative": f"unrelated text {i} about ships"}
            for i in range(24)]
    path = run_dir / "export" / "data.jsonl"
    atomic_write_jsonl(path, rows)
    rd = RunDir(run_dir)
    rd.write_manifest({"run": "kill-train", "stages": {}})
    rd.update_stage("export", status="done", config_hash="x", input_hash="y", counts={"rows": len(rows)},
                    outputs={"data.jsonl": {"sha256": sha256_file(path), "bytes": path.stat().st_size,
                                            "rows": len(rows)}})


def _kill_at_checkpoint_2_then_resume(tmp_path, cfg: Path, stage: str, prepare, final: str) -> tuple[Path, Path]:
    """Run ``stage`` alone in two prepared run directories: ``killed`` is SIGKILLed right after
    checkpoint 2 and then rerun (it must resume); ``full`` runs uninterrupted. Both end at step 4
    with the same final loss; returns (full, killed)."""
    full, killed = tmp_path / "full", tmp_path / "killed"
    for d in (full, killed):
        prepare(d)
    args = ["run", str(cfg), "--from", stage, "--until", stage, "--run-dir"]
    _run_and_kill(tmp_path, args + [str(killed)], "checkpoint:2")
    assert RunDir(killed).read_manifest()["stages"][stage]["status"] == "running"
    assert (killed / stage / "checkpoints" / "checkpoint-2").is_dir()
    assert not (killed / stage / final).exists()

    again = _cli(args + [str(killed)])
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"[{stage}] resuming" in again.stdout
    uninterrupted = _cli(args + [str(full)])
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]

    a = RunDir(full).read_manifest()["stages"][stage]["counts"]
    b = RunDir(killed).read_manifest()["stages"][stage]["counts"]
    assert a["resumed_from"] is None and b["resumed_from"] == "checkpoint-2"
    assert a["steps"] == b["steps"] == 4
    assert b["final_loss"] == pytest.approx(a["final_loss"], rel=1e-4, abs=1e-6)
    return full, killed


def _assert_same_weights(a: Path, b: Path) -> dict:
    from safetensors.torch import load_file
    import torch

    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.allclose(wa[name], wb[name], rtol=1e-4, atol=1e-6), name
    return wa


def test_sigkill_in_train_embedder_resumes_from_the_checkpoint(tmp_path):
    cfg = tmp_path / "train.yaml"
    cfg.write_text("""
run: {name: kill-train, seed: 4}
models:
  embedder: {backend: sentence-transformers, model: all-minilm-l6-v2}
train-embedder: {threads: 1, max_steps: 4, save_steps: 2, batch_size: 4, max_length: 16, learning_rate: 1.0e-4}
""")
    full, killed = _kill_at_checkpoint_2_then_resume(tmp_path, cfg, "train-embedder", _export_done, "model")
    wa = _assert_same_weights(full / "train-embedder" / "model" / "model.safetensors",
                              killed / "train-embedder" / "model" / "model.safetensors")
    assert len(wa) > 50
    # and training did move the weights (the comparison is not between two untouched copies)
    from safetensors.torch import load_file
    import torch

    from speed.models import resolve_model

    base_dir = Path(resolve_model("all-minilm-l6-v2", want="embedder"))
    base = load_file(str(next(base_dir.rglob("model.safetensors"))))
    moved = [n for n in wa if n in base and not torch.equal(wa[n], base[n])]
    assert len(moved) > 10


def _judge_done(run_dir: Path) -> None:
    """A run directory whose judge stage is done, with 4 preference pairs for DPO."""
    from test_train_generators import dpo_rows

    path = run_dir / "judge" / "dpo.jsonl"
    atomic_write_jsonl(path, dpo_rows(4))
    rd = RunDir(run_dir)
    rd.write_manifest({"run": "kill-dpo", "stages": {}})
    rd.update_stage("judge", status="done", config_hash="x", input_hash="y", counts={"pairs": 4},
                    outputs={"dpo.jsonl": {"sha256": sha256_file(path), "bytes": path.stat().st_size, "rows": 4}})


def test_sigkill_in_train_senior_resumes_from_the_checkpoint(tmp_path):
    """DPO of SmolLM2-135M (TRL + PEFT), SIGKILLed right after checkpoint 2 of 4: the rerun resumes
    from it and ends with the adapter and losses of an uninterrupted run."""
    cfg = tmp_path / "dpo.yaml"
    cfg.write_text("""
run: {name: kill-dpo, seed: 5}
models:
  senior: {backend: hf, model: smollm2-135m-instruct}
train-senior: {threads: 1, max_steps: 4, save_steps: 2, per_device_batch_size: 2, gradient_accumulation_steps: 1,
               max_length: 96, lora_r: 4, lora_alpha: 8, lora_dropout: 0.0, learning_rate: 1.0e-3,
               init_from_junior: false, gguf: false, logging_steps: 1}
""")
    full, killed = _kill_at_checkpoint_2_then_resume(tmp_path, cfg, "train-senior", _judge_done, "adapter")
    a = RunDir(full).read_manifest()["stages"]["train-senior"]["counts"]
    b = RunDir(killed).read_manifest()["stages"]["train-senior"]["counts"]
    assert b["reward_margin_last"] == pytest.approx(a["reward_margin_last"], rel=1e-3, abs=1e-5)

    def losses(run_dir):
        log = (run_dir / "train-senior" / "train_log.jsonl").read_text().splitlines()
        return [h["loss"] for h in map(json.loads, log) if "loss" in h]

    assert len(losses(full)) == 4 and losses(killed) == pytest.approx(losses(full), rel=1e-4, abs=1e-6)
    wa = _assert_same_weights(full / "train-senior" / "adapter" / "adapter_model.safetensors",
                              killed / "train-senior" / "adapter" / "adapter_model.safetensors")
    assert any(bool(wa[k].abs().sum() > 0) for k in wa if "lora_B" in k)  # trained: B moved from zero


# -- evaluation ------------------------------------------------------------------------------------

def test_sigkill_in_evaluate_then_rerun_gives_the_same_scores(tmp_path):
    tasks = [str(FIXTURES / "eval" / "valid" / t) for t in ("TinySTS", "TinyClassification", "TinyRetrieval")]

    def config(name: str) -> Path:
        cfg = tmp_path / f"{name}.yaml"
        cfg.write_text(f"""
run: {{name: {name}, until: evaluate, skip: {json.dumps(BEFORE_EVAL)}}}
models:
  embedder: {{backend: sentence-transformers, model: all-minilm-l6-v2}}
evaluate: {{tasks: {json.dumps(tasks)}, cache_dir: '{tmp_path / (name + "-embcache")}', batch_size: 8}}
""")
        return cfg

    killed, full = tmp_path / "killed", tmp_path / "full"
    args = ["run", str(config("killed")), "--run-dir", str(killed)]
    _run_and_kill(tmp_path, args, "task:2")
    assert RunDir(killed).read_manifest()["stages"]["evaluate"]["status"] == "running"
    assert not (killed / "evaluate" / "results.json").exists()

    again = _cli(args)
    assert again.returncode == 0, again.stderr[-3000:]
    uninterrupted = _cli(["run", str(config("full")), "--run-dir", str(full)])
    assert uninterrupted.returncode == 0, uninterrupted.stderr[-3000:]

    ra = json.loads((full / "evaluate" / "results.json").read_text())
    rb = json.loads((killed / "evaluate" / "results.json").read_text())

    def scores(body):
        return {task: {k: v for k, v in r.items() if k != "seconds"} for task, r in body["trained"]["results"].items()}

    assert set(scores(ra)) == {"TinySTS", "TinyClassification", "TinyRetrieval"}
    assert scores(rb) == scores(ra)  # exactly
    assert rb["trained"]["average"] == ra["trained"]["average"] and rb["delta"] == ra["delta"]
    # what the killed run had encoded came from its embedding cache on the rerun
    assert rb["trained"]["encode"]["cached"] > 0 and ra["trained"]["encode"]["cached"] == 0
    assert rb["trained"]["encode"]["encoded"] < ra["trained"]["encode"]["encoded"]
    st = RunDir(killed).read_manifest()["stages"]["evaluate"]
    assert st["status"] == "done" and st["counts"]["trained"] == RunDir(full).read_manifest()["stages"]["evaluate"][
        "counts"]["trained"]
