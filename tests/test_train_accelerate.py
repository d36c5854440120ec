"""The distributed path: one SFT stage under ``accelerate launch`` with two CPU processes (gloo).

Two processes with per-device batch 2 and one process with batch 4 see the same global batches, so
their losses match; rank 0 alone writes the outputs and the manifest. Also: the launcher's
single-process entry point skips a done stage.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from speed.io import atomic_write_jsonl, sha256_file
from speed.runtime.rundir import RunDir

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("accelerate")
pytest.importorskip("trl")


def _rows() -> list[dict]:
    texts = [{"input": "cat food", "positive_document": "Dry and wet food for cats."},
             {"input": "red car", "positive_document": "A red sports car for sale."},
             {"input": "rain boots", "positive_document": "Rubber boots for rainy days."},
             {"input": "green tea", "positive_document": "Loose leaf green tea from Japan."}]
    return [{"prompt": [{"role": "user", "content": f"Write matching example {i} as JSON."}],
             "completion": [{"role": "assistant", "content": json.dumps(t)}], "id": str(i)}
            for i, t in enumerate(texts * 2)]


def _run_dir(path: Path, per_device: int) -> Path:
    sft = path / "seed" / "sft.jsonl"
    atomic_write_jsonl(sft, _rows())
    RunDir(path).update_stage("seed", status="done", config_hash="x", input_hash="y",
                              outputs={"sft.jsonl": {"sha256": sha256_file(sft), "bytes": sft.stat().st_size}})
    config = {"run": {"name": "acc", "seed": 4},
              "models": {"junior": {"backend": "hf", "model": "smollm2-135m-instruct"}},
              "train-junior": {"max_steps": 2, "per_device_batch_size": per_device, "gradient_accumulation_steps": 1,
                               "max_length": 64, "lora_r": 4, "lora_alpha": 8, "lora_dropout": 0.0,
                               "learning_rate": 1e-3, "gguf": False, "threads": 1, "save_steps": 100}}
    (path / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def _env() -> dict:
    env = dict(os.environ)
    env.update({"OMP_NUM_THREADS": "1", "SPEED_PROGRESS": "0", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "train-junior" / "train_log.jsonl").open()]
    return [r["loss"] for r in rows if "loss" in r]


@pytest.mark.slow
def test_two_cpu_processes_match_one(tmp_path, smollm2_hf):
    single = _run_dir(tmp_path / "single", per_device=4)
    proc = subprocess.run([sys.executable, "-m", "speed.train.launch", "--run-dir", str(single),
                           "--stage", "train-junior"], env=_env(), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "[train-junior] running on 1 process(es)" in proc.stdout

    double = _run_dir(tmp_path / "double", per_device=2)
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
           str(ROOT / "configs" / "accelerate" / "cpu_2proc.yaml"), "--main_process_port", str(_free_port()),
           "-m", "speed.train.launch", "--run-dir", str(double), "--stage", "train-junior"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "running on 2 process(es)" in proc.stdout

    entry = RunDir(double).stage_entry("train-junior")
    assert entry["status"] == "done" and entry["processes"] == 2
    assert entry["counts"]["hyperparameters"]["effective_batch_size"] == 4
    assert RunDir(single).stage_entry("train-junior")["counts"]["hyperparameters"]["effective_batch_size"] == 4
    assert (double / "train-junior" / "adapter" / "adapter_model.safetensors").is_file()
    one, two = _losses(single), _losses(double)
    assert len(one) == len(two) == 2
    assert two == pytest.approx(one, rel=2e-3, abs=1e-4), (one, two)

    # the launcher skips a stage that is done (same config and inputs)
    proc = subprocess.run([sys.executable, "-m", "speed.train.launch", str(double), "train-junior"], env=_env(),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "[train-junior] done, skipped" in proc.stdout, proc.stderr[-2000:]


def test_launcher_refuses_a_stage_whose_inputs_are_not_done(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump({"run": {"name": "x"}}))
    from speed.train.launch import main

    assert main(["--run-dir", str(run), "--stage", "train-revisor"]) == 2
    assert main(["--run-dir", str(tmp_path / "nowhere"), "--stage", "train-junior"]) == 2
