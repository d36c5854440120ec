"""Stage ``train-senior``: DPO of the senior generator from the junior, on the judge's preference pairs.

Input ``judge/dpo.jsonl`` (prompt, chosen, rejected). The senior starts from train-junior's adapter
(trainable) with the same adapter frozen as the DPO reference, so it is the base plus one LoRA
adapter; when train-junior was skipped or is absent, a fresh LoRA on the base with the base as
reference. ``beta`` (default 0.1, the paper's best). Outputs and artifacts as in ``train-junior``,
plus the implicit reward margins in the counts. Paper: lr 1e-5, effective batch 16.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..runtime.configschema import check
from ..train.common import TrainConfig
from . import Stage, trainer_of

# DPO memory grows fast with the batch: per-device batch 1-2 with accumulation.
PROFILES = {
    "cpu": {"learning_rate": 5e-5, "per_device_batch_size": 1, "gradient_accumulation_steps": 8},
    "paper": {"learning_rate": 1e-5, "per_device_batch_size": 2, "gradient_accumulation_steps": 8},
}


@dataclass
class Config(TrainConfig):
    beta: float = 0.1
    init_from_junior: bool = True

    def validate(self, where: str) -> None:
        super().validate(where)
        check(self.beta > 0, f"{where}.beta", self.beta, "must be > 0 (the paper uses 0.1; 0.05-0.3 studied)")


def run(ctx) -> None:
    from ..train.dpo import run_dpo_stage

    profiles = {k: {**v, "beta": ctx.cfg.beta} for k, v in PROFILES.items()}
    run_dpo_stage(ctx, "senior", "preferences", profiles,
                  init_from=trainer_of("junior").name if ctx.cfg.init_from_junior else None)


STAGE = Stage("train-senior", Config, run, needs=("preferences",), trains="senior", roles=("senior",))
