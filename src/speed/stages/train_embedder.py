"""Stage ``train-embedder``: contrastive fine-tuning of the ``embedder`` model on the exported data.

Input ``export/data.jsonl``. InfoNCE (MultipleNegativesRankingLoss, or the cached variant for big
batches) over in-batch and hard negatives, scale = 1 / ``temperature`` (paper: tau 0.02), a
no-duplicates batch sampler, the query-side instruction ``query_template`` when the embedder
role's ``instruction`` is on (null = auto: on for decoder LLMs, off for encoders). Encoders
(all-MiniLM-L6-v2, the offline default) train fully with their own pooling; decoder LLMs get EOS +
last-token pooling and LoRA, merged before saving. Output ``train-embedder/model`` (a
sentence-transformers folder; ``speed_embedder.json`` inside records the instruction settings),
``train_log.jsonl``, ``checkpoints/``. Artifacts: ``model = {path, instruction, template, family}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..runtime.configschema import check
from . import Stage

# None keys take their profile's value; learning rate by family (full fine-tuning vs LoRA).
PROFILES = {
    "cpu": {"batch_size": 16, "max_length": 128, "epochs": 1.0, "gradient_checkpointing": False,
            "learning_rate": {"encoder": 2e-5, "decoder": 1e-4}},
    # E5-mistral / SPEED: lr 1e-4, max length 512, LoRA r16, global batch 1,536 (ZeRO-3, fp16)
    "paper": {"batch_size": 1536, "max_length": 512, "epochs": 1.0, "gradient_checkpointing": True,
              "learning_rate": {"encoder": 2e-5, "decoder": 1e-4}},
}


@dataclass
class Config:
    profile: Literal["cpu", "paper"] = "cpu"
    family: Literal["auto", "encoder", "decoder"] = "auto"
    loss: Literal["mnrl", "cached_mnrl"] = "mnrl"
    temperature: float = 0.02
    mini_batch_size: int = 16  # cached_mnrl: texts per forward pass
    gather_across_devices: bool = True  # several processes: negatives from the whole global batch
    query_template: str = "Instruct: {task}\nQuery: {query}"
    kinds: list[str] = field(default_factory=list)  # [] = every kind
    mix: Literal["proportional", "round_robin"] = "proportional"
    learning_rate: float | None = None
    epochs: float | None = None
    max_steps: int = -1
    batch_size: int | None = None  # global batch (in-batch negatives); per device = batch_size / processes
    max_length: int | None = None
    max_examples: int | None = None
    lora: bool | None = None  # None: LoRA for decoders, full fine-tuning for encoders
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.1
    lr_scheduler: str = "linear"
    warmup: float = 0.1
    weight_decay: float = 0.0
    save_steps: int = 50
    save_total_limit: int = 2
    logging_steps: int = 1
    gradient_checkpointing: bool | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    threads: int | None = None

    def validate(self, where: str) -> None:
        check(0 < self.temperature <= 1, f"{where}.temperature", self.temperature, "must be in (0, 1] (paper: 0.02)")
        check("{query}" in self.query_template, f"{where}.query_template", self.query_template,
              "must contain {query} (and usually {task})")
        try:
            self.query_template.format(task="t", query="q")
        except (KeyError, IndexError, ValueError):
            check(False, f"{where}.query_template", self.query_template, "only {task} and {query} may be used")
        check(self.mini_batch_size >= 1, f"{where}.mini_batch_size", self.mini_batch_size, "must be >= 1")
        for key in ("batch_size", "max_examples", "threads"):
            value = getattr(self, key)
            check(value is None or value >= 1, f"{where}.{key}", value, "must be >= 1")
        check(self.max_length is None or self.max_length >= 8, f"{where}.max_length", self.max_length, "must be >= 8")
        check(self.max_steps == -1 or self.max_steps >= 1, f"{where}.max_steps", self.max_steps, "-1 or >= 1")
        check(self.epochs is None or self.epochs > 0, f"{where}.epochs", self.epochs, "must be > 0")
        check(self.learning_rate is None or self.learning_rate > 0, f"{where}.learning_rate", self.learning_rate,
              "must be > 0")
        check(self.save_steps >= 1, f"{where}.save_steps", self.save_steps, "must be >= 1")
        check(self.lora_r >= 1, f"{where}.lora_r", self.lora_r, "must be >= 1")
        from ..prompts.schemas import TASK_KINDS

        for i, k in enumerate(self.kinds):
            check(k in TASK_KINDS, f"{where}.kinds[{i}]", k, "one of " + ", ".join(TASK_KINDS))

    def hyperparameters(self, family: str) -> dict:
        """The trainer's settings: these keys, a None one taking its profile's value for ``family``."""
        from ..train.common import world_size

        hp = {k: getattr(self, k) for k in Config.__dataclass_fields__}
        for key, value in PROFILES[self.profile].items():
            if hp.get(key) is None:
                hp[key] = value[family] if isinstance(value, dict) else value
        hp["kinds"] = list(self.kinds) or None
        hp["global_batch_size"] = hp["batch_size"]
        hp["batch_size"] = max(1, hp["batch_size"] // world_size())  # per device
        return hp


def run(ctx) -> None:
    from ..errors import InputError
    from ..train.common import is_main_process
    from ..train.embedder import train_embedder

    ref = ctx.config.model("embedder")
    rows = list(ctx.read_input("training-data"))
    if not rows:
        raise InputError(f"{ctx.input_path('training-data')}: no training rows (export kept none; "
                         "its DATACARD.md funnel shows where they went)")
    summary = train_embedder(ref.model, rows, ctx.dir, ctx.cfg, ctx.seed, ref.instruction)
    history, family, instruction, _ = (summary.pop(k) for k in ("history", "family", "instruction", "model"))
    ctx.counts.update(summary)  # hyperparameters last
    if is_main_process():
        ctx.register_output("train_log.jsonl", rows=len(history))
        for name in ("modules.json", "speed_embedder.json"):
            ctx.register_output(f"model/{name}")
        for weights in sorted((ctx.dir / "model").glob("*.safetensors")):
            ctx.register_output(f"model/{weights.name}")
    ctx.artifacts["model"] = {"path": "model", "instruction": instruction,
                              "template": ctx.cfg.query_template if instruction else None,
                              "family": family, "base": ref.model}


STAGE = Stage("train-embedder", Config, run, needs=("training-data",), trains="embedder", roles=("embedder",))

