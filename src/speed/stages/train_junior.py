"""Stage ``train-junior``: SFT of the junior generator (LoRA on the ``junior`` model) on D_seed.

Input ``seed/sft.jsonl`` (conversational prompt-completion). Loss on the answer tokens only.
Outputs in ``train-junior/``: ``adapter/`` (PEFT LoRA folder: the ``hf`` and ``vllm`` backends),
``adapter.gguf`` (the same adapter for ``llamacpp``), ``train_log.jsonl`` (the trainer's log) and
``checkpoints/`` (resume points). Artifacts: ``model = {base, base_path, adapter, adapter_gguf,
adapter_sha256}``. Paper: lr 1e-4, effective batch 16 (``profile: paper``).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..train.common import TrainConfig
from . import Stage

PROFILES = {
    "cpu": {"learning_rate": 2e-4, "per_device_batch_size": 2, "gradient_accumulation_steps": 4},
    "paper": {"learning_rate": 1e-4, "per_device_batch_size": 4, "gradient_accumulation_steps": 4},
}


@dataclass
class Config(TrainConfig):
    pass


def run(ctx) -> None:
    from ..train.sft import run_sft_stage

    run_sft_stage(ctx, "junior", "seed-sft", PROFILES)


STAGE = Stage("train-junior", Config, run, needs=("seed-sft",), trains="junior", roles=("junior",))
