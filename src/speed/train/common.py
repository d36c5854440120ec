"""What the generator training stages share: config and profiles, loading, checkpoints, outputs.

Profiles: ``profile: cpu`` (the offline default: a 135M model on a few CPU cores, a few dozen
examples) and ``profile: paper`` (appendix B of the paper: junior SFT lr 1e-4 / effective batch 16,
senior DPO lr 1e-5 / beta 0.1 / batch 16, revisor SFT lr 5e-6 / batch 24). A key set in the config
overrides its profile's value; ``hyperparameters`` in the stage's manifest counts show what ran.

Checkpoints go to ``<stage>/checkpoints/checkpoint-N`` every ``save_steps`` optimizer steps. The
pipeline keeps a stage's folder when the stage resumes after a kill (same config and inputs), and
training then resumes from the last checkpoint there (model, optimizer, scheduler, RNG states and
the position in the data), so the resumed run ends where an uninterrupted one would.

Under ``accelerate launch`` every process trains; only rank 0 writes the outputs (the adapter, its
GGUF form, the training log) and the stage's manifest entry.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import InputError, ModelError, SpeedError
from ..runtime.configschema import check

# Extra transformers TrainerCallbacks added to every training run of this process (a hook for
# tests and tools: e.g. stop after a checkpoint, or watch the parameters).
EXTRA_CALLBACKS: list[Any] = []


@dataclass
class TrainConfig:
    """The config keys shared by train-junior, train-senior and train-revisor (None: the profile's value)."""

    profile: Literal["cpu", "paper"] = "cpu"
    learning_rate: float | None = None
    epochs: float | None = None
    max_steps: int = -1  # > 0: stop after this many optimizer steps (overrides epochs)
    per_device_batch_size: int | None = None
    gradient_accumulation_steps: int | None = None
    max_length: int | None = None  # prompt + answer tokens; longer rows are truncated
    max_examples: int | None = None  # a seeded sample of at most this many training rows
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    target_modules: list[str] | str = "all-linear"
    lr_scheduler: str = "linear"
    warmup: float = 0.0  # < 1: a fraction of the steps; >= 1: a number of steps
    weight_decay: float = 0.0
    save_steps: int = 50
    save_total_limit: int = 2
    logging_steps: int = 1
    gradient_checkpointing: bool | None = None  # None: on for the paper profile, off for cpu
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"  # auto: bf16 on a capable GPU, else fp32
    threads: int | None = None  # torch CPU threads
    gguf: bool = True  # also write the adapter as a GGUF LoRA adapter (for the llamacpp backend)
    gguf_outtype: Literal["f32", "f16"] = "f32"

    def validate(self, where: str) -> None:
        check(self.learning_rate is None or self.learning_rate > 0, f"{where}.learning_rate", self.learning_rate,
              "must be > 0")
        check(self.epochs is None or self.epochs > 0, f"{where}.epochs", self.epochs, "must be > 0")
        check(self.max_steps == -1 or self.max_steps >= 1, f"{where}.max_steps", self.max_steps,
              "-1 (use epochs) or >= 1")
        for key in ("per_device_batch_size", "gradient_accumulation_steps", "max_examples", "threads"):
            value = getattr(self, key)
            check(value is None or value >= 1, f"{where}.{key}", value, "must be >= 1")
        check(self.max_length is None or self.max_length >= 16, f"{where}.max_length", self.max_length,
              "must be >= 16")
        check(self.lora_r >= 1, f"{where}.lora_r", self.lora_r, "must be >= 1")
        check(self.lora_alpha > 0, f"{where}.lora_alpha", self.lora_alpha, "must be > 0")
        check(0.0 <= self.lora_dropout < 1.0, f"{where}.lora_dropout", self.lora_dropout, "must be in [0, 1)")
        check(self.warmup >= 0, f"{where}.warmup", self.warmup, "must be >= 0")
        check(self.weight_decay >= 0, f"{where}.weight_decay", self.weight_decay, "must be >= 0")
        check(self.save_steps >= 1, f"{where}.save_steps", self.save_steps, "must be >= 1")
        check(self.save_total_limit >= 1, f"{where}.save_total_limit", self.save_total_limit, "must be >= 1")
        check(self.logging_steps >= 1, f"{where}.logging_steps", self.logging_steps, "must be >= 1")
        check(self.lr_scheduler in ("linear", "cosine", "constant", "constant_with_warmup"),
              f"{where}.lr_scheduler", self.lr_scheduler, "one of linear, cosine, constant, constant_with_warmup")


# The values a profile gives to the keys left None. Stages add their own (learning rate, batch).
BASE_PROFILES: dict[str, dict[str, Any]] = {
    "cpu": {"epochs": 2.0, "max_length": 768, "gradient_checkpointing": False},
    "paper": {"epochs": 1.0, "max_length": 2048, "gradient_checkpointing": True},
}


def hyperparameters(cfg: TrainConfig, stage_profiles: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The concrete training settings: the config's keys, None filled from the profile."""
    prof = {**BASE_PROFILES[cfg.profile], **stage_profiles.get(cfg.profile, {})}
    out: dict[str, Any] = {}
    for key in TrainConfig.__dataclass_fields__:
        value = getattr(cfg, key)
        out[key] = prof.get(key) if value is None and key in prof else value
    for key, value in prof.items():  # stage-only keys such as beta
        if key not in out or out[key] is None:
            out[key] = value
    if out.get("per_device_batch_size") is None:
        out["per_device_batch_size"] = 1
    if out.get("gradient_accumulation_steps") is None:
        out["gradient_accumulation_steps"] = 1
    out["effective_batch_size"] = out["per_device_batch_size"] * out["gradient_accumulation_steps"] * world_size()
    return out


# -- processes ---------------------------------------------------------------------------------------

def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    return rank() == 0


def barrier() -> None:
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover
        return
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def set_threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(int(n))


# -- models ------------------------------------------------------------------------------------------

def torch_dtype(name: str):
    import torch

    if name == "auto":
        if torch.cuda.is_available():
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def precision_flags(dtype) -> dict[str, bool]:
    """TrainingArguments' mixed-precision flags for a model loaded in ``dtype``."""
    import torch

    return {"bf16": dtype == torch.bfloat16, "fp16": dtype == torch.float16}


def resolve_base(model_ref: str) -> str:
    from ..models import resolve_model

    return resolve_model(model_ref, want="hf")


def load_causal_lm(path: str, dtype_name: str = "auto"):
    """(model, tokenizer) of a plain transformers causal-LM folder (or hub id), pad token set."""
    from ..errors import require

    require("peft", "train", "LoRA training")
    transformers = require("transformers", "train", "training")
    dtype = torch_dtype(dtype_name)
    try:
        tok = transformers.AutoTokenizer.from_pretrained(path)
        model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    except Exception as exc:
        raise ModelError(f"transformers could not load the base model {path}: {str(exc).splitlines()[0]}") from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if getattr(tok, "chat_template", None) is None:
        raise ModelError(f"the base model {path} has no chat template; SFT/DPO on chat records needs one")
    return model, tok


def lora_config(hp: dict[str, Any]):
    from peft import LoraConfig

    return LoraConfig(r=hp["lora_r"], lora_alpha=hp["lora_alpha"], lora_dropout=hp["lora_dropout"],
                      target_modules=hp["target_modules"], bias="none", task_type="CAUSAL_LM")


# -- data --------------------------------------------------------------------------------------------

def _is_messages(value: Any) -> bool:
    return (isinstance(value, list) and len(value) >= 1
            and all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                    for m in value))


def load_chat_rows(ctx, artifact: str, keys: tuple[str, ...], max_examples: int | None) -> list[dict]:
    """Rows of ``artifact`` keeping only ``keys`` (each a list of chat messages); a seeded sample."""
    from ..stages import provider

    path, stage = ctx.input_path(artifact), provider(artifact).name
    rows = []
    for lineno, row in enumerate(ctx.read_input(artifact), 1):
        for k in keys:
            if not _is_messages(row.get(k)):
                raise InputError(f"{path}:{lineno}: '{k}' is not a list of chat messages ({{role, content}})")
        rows.append({k: row[k] for k in keys})
    if not rows:
        raise InputError(f"{path}: no training rows (the stage {stage} produced none; rerun it with more data)")
    if max_examples is not None and len(rows) > max_examples:
        rows = random.Random(ctx.seed).sample(rows, max_examples)
    return rows


# -- checkpoints ---------------------------------------------------------------------------------------

def last_checkpoint(folder: Path) -> str | None:
    if not folder.is_dir():
        return None
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(folder))


def common_args(hp: dict[str, Any], output_dir: Path, seed: int, dtype) -> dict[str, Any]:
    """TrainingArguments keys shared by the SFT and DPO configs."""
    import torch

    return dict(
        output_dir=str(output_dir), learning_rate=hp["learning_rate"], num_train_epochs=hp["epochs"],
        max_steps=hp["max_steps"], per_device_train_batch_size=hp["per_device_batch_size"],
        gradient_accumulation_steps=hp["gradient_accumulation_steps"], lr_scheduler_type=hp["lr_scheduler"],
        warmup_steps=hp["warmup"], weight_decay=hp["weight_decay"], logging_steps=hp["logging_steps"],
        save_strategy="steps", save_steps=hp["save_steps"], save_total_limit=hp["save_total_limit"],
        seed=seed, data_seed=seed, report_to="none", gradient_checkpointing=bool(hp["gradient_checkpointing"]),
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
        disable_tqdm=os.environ.get("SPEED_PROGRESS", "1") == "0", max_length=hp["max_length"],
        **precision_flags(dtype),
    )


def run_trainer(trainer, checkpoints: Path) -> dict[str, Any]:
    """Train, resuming from the last checkpoint in ``checkpoints`` if there is one; summary of the run."""
    for cb in EXTRA_CALLBACKS:
        trainer.add_callback(cb)
    resume = last_checkpoint(checkpoints)
    result = trainer.train(resume_from_checkpoint=resume)
    history = trainer.state.log_history
    losses = [h["loss"] for h in history if "loss" in h]
    return {
        "steps": trainer.state.global_step,
        "epochs": round(float(trainer.state.epoch or 0.0), 4),
        "train_loss": float(result.training_loss) if result.training_loss is not None else None,
        "first_loss": losses[0] if losses else None,
        "final_loss": losses[-1] if losses else None,
        "resumed_from": Path(resume).name if resume else None,
        "history": history,
    }


def _replace_dir(tmp: Path, final: Path) -> None:
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)


def save_generator_outputs(ctx, trainer, hp: dict[str, Any], base_ref: str, base_path: str,
                           summary: dict[str, Any], extra_counts: dict[str, Any] | None = None) -> None:
    """Rank 0: the PEFT adapter, its GGUF form, the training log; manifest outputs, counts, artifacts."""
    from ..io import atomic_write_jsonl, sha256_file

    counts = {k: v for k, v in summary.items() if k != "history"}
    counts["hyperparameters"] = {k: v for k, v in hp.items()}
    counts.update(extra_counts or {})
    ctx.counts.update(counts)
    tmp = ctx.dir / ".adapter.tmp"
    if is_main_process() and tmp.exists():
        shutil.rmtree(tmp)
    barrier()
    # every process calls save_model: under DeepSpeed ZeRO-3 it gathers the partitioned weights
    trainer.save_model(str(tmp))
    barrier()
    if not is_main_process():
        return
    names = list(getattr(trainer.accelerator.unwrap_model(trainer.model), "peft_config", {}) or {})
    if "default" not in names or not (tmp / "adapter_model.safetensors").is_file():
        raise SpeedError("training produced no LoRA adapter (the model has no PEFT 'default' adapter)")
    for extra in names:  # e.g. DPO's frozen 'ref' copy: only the trained adapter is the model
        if extra != "default" and (tmp / extra).is_dir():
            shutil.rmtree(tmp / extra)
    (tmp / "training_args.bin").unlink(missing_ok=True)
    # the adapter's base is the resolved local folder (so that hf / vllm / the converter find it)
    cfg_path = tmp / "adapter_config.json"
    acfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    acfg["base_model_name_or_path"] = base_path
    cfg_path.write_text(json.dumps(acfg, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    _replace_dir(tmp, ctx.dir / "adapter")
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        ctx.register_output(f"adapter/{name}")
    n = atomic_write_jsonl(ctx.dir / "train_log.jsonl", summary.get("history") or [])
    ctx.register_output("train_log.jsonl", rows=n)
    art: dict[str, Any] = {"base": base_ref, "base_path": base_path, "adapter": "adapter",
                           "adapter_sha256": sha256_file(ctx.dir / "adapter" / "adapter_model.safetensors")}
    if hp.get("gguf", True):
        from .lora_gguf import convert_peft_to_gguf

        info = convert_peft_to_gguf(ctx.dir / "adapter", ctx.dir / "adapter.gguf", base_path,
                                    outtype=hp.get("gguf_outtype", "f32"))
        ctx.register_output("adapter.gguf")
        art["adapter_gguf"] = "adapter.gguf"
        art["adapter_gguf_sha256"] = sha256_file(ctx.dir / "adapter.gguf")
        ctx.counts["gguf"] = {"tensors": info["tensors"], "arch": info["arch"]}
    ctx.artifacts["model"] = art


@dataclass
class TrainedGenerator:
    """A trained generator as recorded in a training stage's manifest artifacts (paths absolute)."""

    base: str
    base_path: str
    adapter: str
    adapter_gguf: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def trained_generator(rundir, stage: str) -> TrainedGenerator | None:
    """The model of a done training stage, or None when it was skipped / absent / not done."""
    entry = rundir.read_manifest()["stages"].get(stage) or {}
    art = (entry.get("artifacts") or {}).get("model")
    if entry.get("status") != "done" or not art:
        return None
    folder = rundir.stage_dir(stage)
    adapter = folder / art["adapter"]
    if not (adapter / "adapter_config.json").is_file():
        raise SpeedError(f"stage {stage} is done but its adapter {adapter} is missing; rerun {stage}")
    gg = art.get("adapter_gguf")
    return TrainedGenerator(base=art["base"], base_path=art["base_path"], adapter=str(adapter),
                            adapter_gguf=str(folder / gg) if gg else None, extra=art)
