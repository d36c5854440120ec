"""Direct preference optimisation with LoRA (TRL's DPOTrainer) on (prompt, chosen, rejected) records.

The senior starts from the junior: the junior's PEFT adapter is loaded as the trainable adapter
(``default``) and TRL copies it into a frozen ``ref`` adapter that computes the reference
log-probabilities, so the reference is exactly the frozen junior and the result is still the base
model plus ONE adapter (what llama.cpp's single ``lora_path`` takes). Without a trained junior
(train-junior skipped or absent) a fresh LoRA is trained and the reference is the base model.
Only the ``default`` adapter is saved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import SpeedError
from .common import (common_args, hyperparameters, load_causal_lm, load_chat_rows, resolve_base, run_trainer,
                     save_generator_outputs, set_threads, trained_generator)
from .sft import peft_model

DPO_KEYS = ("prompt", "chosen", "rejected")


def build_dpo_trainer(model, tokenizer, rows: list[dict], hp: dict[str, Any], output_dir: Path, seed: int):
    """A TRL DPOTrainer over ``rows`` for ``model`` (a PeftModel; reference = a frozen copy of its adapter)."""
    from datasets import Dataset
    from trl import DPOConfig, DPOTrainer

    args = DPOConfig(**common_args(hp, output_dir, seed, model.dtype), beta=hp["beta"], loss_type=["sigmoid"],
                     precompute_ref_log_probs=False, dataset_num_proc=None)
    return DPOTrainer(model=model, ref_model=None, args=args, train_dataset=Dataset.from_list(rows),
                      processing_class=tokenizer)


def margins(history: list[dict]) -> list[float]:
    return [float(h["rewards/margins"]) for h in history if "rewards/margins" in h]


def run_dpo_stage(ctx, role: str, data: str, profiles: dict[str, dict[str, Any]], init_from: str | None) -> None:
    """The body of a DPO training stage: DPO of the ``role`` model on the artifact ``data``, started
    from the adapter of the training stage ``init_from`` when that is done."""
    cfg = ctx.cfg
    hp = hyperparameters(cfg, profiles)
    set_threads(hp["threads"])
    base_ref = ctx.config.model(role).model
    init = trained_generator(ctx.rundir, init_from) if init_from else None
    base_path = resolve_base(base_ref)
    if init is not None and Path(init.base_path).resolve() != Path(base_path).resolve():
        raise SpeedError(f"models.{role}.model ({base_ref}) is not the base of the {init_from} adapter "
                         f"({init.base}); the {role} is trained from that adapter, so it needs the same base model")
    rows = load_chat_rows(ctx, data, DPO_KEYS, hp["max_examples"])
    model, tok = load_causal_lm(base_path, hp["dtype"])
    model = peft_model(model, hp, ctx.seed, adapter=init.adapter if init else None)
    trainer = build_dpo_trainer(model, tok, rows, hp, ctx.dir / "checkpoints", ctx.seed)
    summary = run_trainer(trainer, ctx.dir / "checkpoints")
    m = margins(summary["history"])
    save_generator_outputs(ctx, trainer, hp, base_ref, base_path, summary, {
        "pairs": len(rows), "initialised_from": init_from if init else None,
        "reference": f"{init_from} (frozen)" if init else "base model",
        "reward_margin_first": m[0] if m else None, "reward_margin_last": m[-1] if m else None,
    })
