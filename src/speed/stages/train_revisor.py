"""Stage ``train-revisor``: SFT of the revisor (LoRA on the ``revisor`` model) on the revision signals.

Input ``revise-signals/sft.jsonl`` (prompt = the data prompt + one root example; completion = the
teacher's revision). Outputs and artifacts as in ``train-junior``. Paper: lr 5e-6, effective batch
24 (``profile: paper``); the cpu profile uses a larger rate for its few steps.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..train.common import TrainConfig
from . import Stage

PROFILES = {
    "cpu": {"learning_rate": 1e-4, "per_device_batch_size": 2, "gradient_accumulation_steps": 4},
    "paper": {"learning_rate": 5e-6, "per_device_batch_size": 4, "gradient_accumulation_steps": 6},
}


@dataclass
class Config(TrainConfig):
    pass


def run(ctx) -> None:
    from ..train.sft import run_sft_stage

    run_sft_stage(ctx, "revisor", "revision-sft", PROFILES)


STAGE = Stage("train-revisor", Config, run, needs=("revision-sft",), trains="revisor", roles=("revisor",))
