"""Supervised fine-tuning with LoRA (TRL's SFTTrainer) on conversational prompt-completion records.

The records are ``{"prompt": [messages], "completion": [assistant message]}``. TRL renders them
with the base model's chat template and computes the loss on the completion tokens only
(``completion_only_loss``): the prompt's labels are -100.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .common import (common_args, hyperparameters, load_causal_lm, load_chat_rows, lora_config, resolve_base,
                     run_trainer, save_generator_outputs, set_threads)

SFT_KEYS = ("prompt", "completion")


def build_sft_trainer(model, tokenizer, rows: list[dict], hp: dict[str, Any], output_dir: Path, seed: int):
    """A TRL SFTTrainer over ``rows`` for ``model`` (a PeftModel; only its adapter trains)."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    args = SFTConfig(**common_args(hp, output_dir, seed, model.dtype), completion_only_loss=True, packing=False,
                     dataset_num_proc=None)
    return SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)


def peft_model(base_model, hp: dict[str, Any], seed: int, adapter: str | None = None):
    """The base with a fresh seeded LoRA adapter, or with ``adapter`` (a PEFT folder) loaded trainable."""
    from peft import PeftModel, get_peft_model
    from transformers import set_seed

    set_seed(seed)
    if adapter:
        return PeftModel.from_pretrained(base_model, adapter, is_trainable=True)
    return get_peft_model(base_model, lora_config(hp))


def run_sft_stage(ctx, role: str, data: str, profiles: dict[str, dict[str, Any]]) -> None:
    """The body of an SFT training stage: SFT the ``role`` model's base on the artifact ``data``."""
    cfg = ctx.cfg
    hp = hyperparameters(cfg, profiles)
    set_threads(hp["threads"])
    base_ref = ctx.config.model(role).model
    base_path = resolve_base(base_ref)
    rows = load_chat_rows(ctx, data, SFT_KEYS, hp["max_examples"])
    model, tok = load_causal_lm(base_path, hp["dtype"])
    model = peft_model(model, hp, ctx.seed)
    trainer = build_sft_trainer(model, tok, rows, hp, ctx.dir / "checkpoints", ctx.seed)
    summary = run_trainer(trainer, ctx.dir / "checkpoints")
    save_generator_outputs(ctx, trainer, hp, base_ref, base_path, summary,
                           {"examples": len(rows), "trainable_parameters": _trainable(model)})


def _trainable(model) -> int:
    return int(sum(p.numel() for p in model.parameters() if p.requires_grad))


__all__ = ["build_sft_trainer", "peft_model", "run_sft_stage"]
