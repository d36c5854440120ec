"""Contrastive fine-tuning of the embedder on the exported data (sentence-transformers).

Loss: InfoNCE over in-batch negatives plus the row's hard negative (MultipleNegativesRankingLoss,
cosine similarity scaled by ``1 / temperature``: the paper's tau 0.02 -> scale 50), or its cached
variant (CachedMultipleNegativesRankingLoss, GradCache: large batches in little memory). Batches
come from a no-duplicates sampler (no text twice in a batch: no false in-batch negatives from
repeats). Under several processes the embeddings are gathered across devices, so every process
sees the whole global batch as negatives.

Rows: ``export/data.jsonl`` (kind, task, query, positive, negative). A row with a negative is a
triplet (anchor, positive, negative); a row without one (the matching kinds) a pair (anchor,
positive) with in-batch negatives only; a row with a mined negative next to its generated one
(export ``mine_negatives: add``) a 4-tuple (anchor, positive, negative, negative_2). Triplets, pairs
(and 4-tuples) are separate datasets; each batch is drawn from one of them (``mix: proportional``:
every row once per epoch, datasets in proportion to their size; ``round_robin``: alternate, until
the smallest one runs out). MNRL treats every shape
correctly, and no negative is invented for a pair.

Query side: ``query_template`` (default ``Instruct: {task}\\nQuery: {query}``) when instructions are
on; documents never get one. Instructions follow the embedder role's ``instruction`` (true /
false; null = auto: on for decoder LLMs, off for encoder models such as all-MiniLM-L6-v2, which
were not trained with instructions).

Families: an encoder (a sentence-transformers folder, mean pooling, full fine-tuning by default)
or a decoder LLM (causal LM: an EOS token appended to every text by the tokenizer, last-token
pooling, normalized; LoRA on all linear layers, merged into the weights before saving). The result
is a sentence-transformers folder that loads with ``SentenceTransformer(path)``; its
``speed_embedder.json`` records the instruction settings (what evaluation must apply to queries).
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

from ..errors import InputError, ModelError, SpeedError

INFO_FILE = "speed_embedder.json"


def format_query(query: str, task: str, template: str | None) -> str:
    """The query side's text: ``template`` filled with the task and the query (None: the query alone)."""
    if not template:
        return query
    return template.format(task=task, query=query)


def is_causal_folder(path: str | os.PathLike) -> bool:
    cfg = Path(path) / "config.json"
    if not cfg.is_file():
        return False
    archs = json.loads(cfg.read_text(encoding="utf-8")).get("architectures") or []
    return any(str(a).endswith("ForCausalLM") for a in archs)


def detect_family(path: str) -> str:
    p = Path(path)
    if (p / "modules.json").is_file():
        modules = json.loads((p / "modules.json").read_text(encoding="utf-8"))
        for m in modules:
            pool = p / m.get("path", "") / "config.json"
            if "Pooling" in m.get("type", "") and pool.is_file():
                if json.loads(pool.read_text(encoding="utf-8")).get("pooling_mode") == "lasttoken":
                    return "decoder"
        return "encoder"
    return "decoder" if is_causal_folder(p) else "encoder"


def instruction_on(flag: bool | None, family: str) -> bool:
    return bool(flag) if flag is not None else family == "decoder"


# -- data --------------------------------------------------------------------------------------------

def build_rows(rows: list[dict], template: str | None, kinds: list[str] | None = None,
               where: str = "data.jsonl") -> tuple[list[dict], list[dict], dict[str, int]]:
    """(triplets, pairs, counts) from exported rows; ``template`` None: no instruction."""
    triplets, pairs = [], []
    counts = {"skipped_empty": 0, "skipped_kind": 0}
    for i, row in enumerate(rows, 1):
        if not isinstance(row.get("query"), str) or not isinstance(row.get("positive"), str):
            raise InputError(f"{where}:{i}: a row needs string 'query' and 'positive' columns")
        if kinds and row.get("kind") not in kinds:
            counts["skipped_kind"] += 1
            continue
        q, p, n = row["query"].strip(), row["positive"].strip(), (row.get("negative") or "").strip()
        if not q or not p:
            counts["skipped_empty"] += 1
            continue
        anchor = format_query(q, str(row.get("task") or ""), template)
        m = (row.get("mined_negative") or "").strip()  # export's mine_negatives: add: a second negative
        n, m = (n, m) if n else (m, "")
        if n and m and m != n:
            triplets.append({"anchor": anchor, "positive": p, "negative": n, "negative_2": m})
        elif n:
            triplets.append({"anchor": anchor, "positive": p, "negative": n})
        else:
            pairs.append({"anchor": anchor, "positive": p})
    counts.update({"triplets": len(triplets), "pairs": len(pairs)})
    return triplets, pairs, counts


def train_dataset(triplets: list[dict], pairs: list[dict]):
    from datasets import Dataset, DatasetDict

    parts = {}
    two = [t for t in triplets if "negative_2" in t]  # rows with a mined negative next to the generated one
    one = [t for t in triplets if "negative_2" not in t]
    if one:
        parts["triplets"] = Dataset.from_list(one)
    if two:
        parts["two_negatives"] = Dataset.from_list(two)
    if pairs:
        parts["pairs"] = Dataset.from_list(pairs)
    if not parts:
        raise InputError("data.jsonl: no usable rows (every row lacks a query or a positive)")
    return next(iter(parts.values())) if len(parts) == 1 else DatasetDict(parts)


# -- models ------------------------------------------------------------------------------------------

def _append_eos(tokenizer) -> None:
    """Make the tokenizer end every text with EOS (kept when the model is saved: tokenizer.json)."""
    from tokenizers.processors import TemplateProcessing

    eos, eos_id = tokenizer.eos_token, tokenizer.eos_token_id
    if eos is None or eos_id is None:
        raise ModelError("a decoder embedder needs a tokenizer with an EOS token (last-token pooling)")
    backend = getattr(tokenizer, "_tokenizer", None) or getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ModelError("a decoder embedder needs a fast (tokenizers) tokenizer to append EOS")
    backend.post_processor = TemplateProcessing(single=f"$A {eos}", pair=f"$A {eos} $B {eos}",
                                                special_tokens=[(eos, eos_id)])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = eos


def load_embedder(path: str, family: str, max_length: int, dtype_name: str = "auto"):
    """A SentenceTransformer for training: the folder as is (a sentence-transformers model) or, for a
    plain causal-LM folder, Transformer (text only, no chat template) + last-token Pooling + Normalize."""
    from sentence_transformers import SentenceTransformer

    from .common import torch_dtype

    dtype = torch_dtype(dtype_name)
    device = "cuda" if _cuda() else "cpu"
    try:
        if (Path(path) / "modules.json").is_file() or family == "encoder":
            model = SentenceTransformer(path, device=device, model_kwargs={"dtype": dtype})
        else:
            from sentence_transformers.base.modules import Normalize
            from sentence_transformers.base.modules.transformer import Transformer
            from sentence_transformers.sentence_transformer.modules import Pooling

            tr = Transformer(path, modality_config={"text": {"method": "forward",
                                                             "method_output_name": "last_hidden_state"}},
                             module_output_name="token_embeddings", max_seq_length=max_length,
                             model_kwargs={"dtype": dtype})
            _append_eos(tr.tokenizer)
            model = SentenceTransformer(modules=[tr, Pooling(tr.get_embedding_dimension(), "lasttoken"),
                                                 Normalize()], device=device)
    except (OSError, ValueError) as exc:
        raise ModelError(f"sentence-transformers could not load {path}: {str(exc).splitlines()[0]}") from None
    model.max_seq_length = max_length
    return model


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def add_lora(model, hp: dict[str, Any]) -> None:
    """Wrap the transformer of ``model`` in a PEFT LoRA model (only the adapter trains)."""
    from peft import LoraConfig, get_peft_model

    tr = model[0]
    tr.model = get_peft_model(tr.model, LoraConfig(r=hp["lora_r"], lora_alpha=hp["lora_alpha"],
                                                   lora_dropout=hp["lora_dropout"], target_modules="all-linear",
                                                   task_type="FEATURE_EXTRACTION"))


def merge_lora(model) -> int:
    """Merge the LoRA adapter into the transformer's weights (a plain model again); layers merged."""
    from peft import PeftModel
    from peft.tuners.tuners_utils import BaseTunerLayer

    tr = model[0]
    if not isinstance(tr.model, PeftModel):
        return 0
    merged = sum(isinstance(m, BaseTunerLayer) for m in tr.model.modules())
    tr.model = tr.model.merge_and_unload()
    return merged


def _adapter_dir(folder: Path) -> Path | None:
    found = sorted(folder.rglob("adapter_model.safetensors"))
    return found[0].parent if found else None


def trainer_class():
    """SentenceTransformerTrainer that resumes a LoRA (PeftModel-wrapped) transformer from its adapter."""
    from sentence_transformers import SentenceTransformerTrainer

    class Trainer(SentenceTransformerTrainer):
        def _load_from_checkpoint(self, checkpoint_path, *args, **kwargs):
            from peft import PeftModel, set_peft_model_state_dict
            from safetensors.torch import load_file

            inner = self.model[0].model
            adapter = _adapter_dir(Path(checkpoint_path))
            if isinstance(inner, PeftModel) and adapter is not None:
                set_peft_model_state_dict(inner, load_file(str(adapter / "adapter_model.safetensors")))
                return
            super()._load_from_checkpoint(checkpoint_path, *args, **kwargs)

    return Trainer


# -- training ----------------------------------------------------------------------------------------

def make_loss(model, kind: str, temperature: float, mini_batch_size: int, gather: bool):
    from sentence_transformers.sentence_transformer import losses

    scale = 1.0 / temperature
    if kind == "cached_mnrl":
        return losses.CachedMultipleNegativesRankingLoss(model, scale=scale, mini_batch_size=mini_batch_size,
                                                         gather_across_devices=gather)
    return losses.MultipleNegativesRankingLoss(model, scale=scale, gather_across_devices=gather)


def train_embedder(base_model: str, rows: list[dict], out: str | os.PathLike, cfg, seed: int = 0,
                   instruction: bool | None = None) -> dict[str, Any]:
    """The one embedder trainer (train-embedder stage, ``speed scaling``, ``speed compare --downstream``):
    ``base_model`` on exported ``rows`` with the stage's Config ``cfg`` and ``instruction`` (None: by family)
    into ``out/model`` (rank 0); the run's summary, with model, family, instruction, hyperparameters, history."""
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainingArguments
    from sentence_transformers.base.sampler import BatchSamplers, MultiDatasetBatchSamplers
    from transformers import set_seed

    from ..io import atomic_write_jsonl
    from ..models import resolve_model
    from .common import (EXTRA_CALLBACKS, barrier, is_main_process, last_checkpoint, precision_flags, set_threads,
                         torch_dtype, world_size)

    out, model_path = Path(out), resolve_model(base_model, want="embedder")
    family = detect_family(model_path) if cfg.family == "auto" else cfg.family
    hp, instruction = cfg.hyperparameters(family), instruction_on(instruction, family)
    template = cfg.query_template if instruction else None
    set_threads(hp["threads"])
    if hp["max_examples"] is not None and len(rows) > hp["max_examples"]:
        rows = random.Random(seed).sample(rows, hp["max_examples"])
    triplets, pairs, data_counts = build_rows(rows, template, hp["kinds"])
    dataset = train_dataset(triplets, pairs)
    set_seed(seed)
    model = load_embedder(model_path, family, hp["max_length"], hp["dtype"])
    use_lora = hp["lora"] if hp["lora"] is not None else family == "decoder"
    if use_lora:
        add_lora(model, hp)
    loss = make_loss(model, hp["loss"], hp["temperature"], hp["mini_batch_size"],
                     gather=hp["gather_across_devices"] and world_size() > 1)
    checkpoints = out / "checkpoints"
    dtype = torch_dtype(hp["dtype"])
    args = SentenceTransformerTrainingArguments(
        output_dir=str(checkpoints), num_train_epochs=hp["epochs"], max_steps=hp["max_steps"],
        per_device_train_batch_size=hp["batch_size"], learning_rate=hp["learning_rate"],
        warmup_steps=hp["warmup"], weight_decay=hp["weight_decay"], lr_scheduler_type=hp["lr_scheduler"],
        batch_sampler=BatchSamplers.NO_DUPLICATES,
        multi_dataset_batch_sampler=(MultiDatasetBatchSamplers.ROUND_ROBIN if hp["mix"] == "round_robin"
                                     else MultiDatasetBatchSamplers.PROPORTIONAL),
        save_strategy="steps", save_steps=hp["save_steps"], save_total_limit=hp["save_total_limit"],
        logging_steps=hp["logging_steps"], seed=seed, data_seed=seed, report_to="none",
        gradient_checkpointing=bool(hp["gradient_checkpointing"]), use_cpu=not _cuda(), dataloader_num_workers=0,
        disable_tqdm=os.environ.get("SPEED_PROGRESS", "1") == "0", **precision_flags(dtype),
    )
    trainer = trainer_class()(model=model, args=args, train_dataset=dataset, loss=loss, callbacks=list(EXTRA_CALLBACKS))
    resume = last_checkpoint(checkpoints)
    result = trainer.train(resume_from_checkpoint=resume)
    history = trainer.state.log_history
    losses_ = [h["loss"] for h in history if "loss" in h]
    summary = {"steps": trainer.state.global_step, "epochs": round(float(trainer.state.epoch or 0), 4),
               "train_loss": float(result.training_loss) if result.training_loss is not None else None,
               "first_loss": losses_[0] if losses_ else None, "final_loss": losses_[-1] if losses_ else None,
               "resumed_from": Path(resume).name if resume else None, "lora": bool(use_lora), **data_counts}
    gathered = None
    if getattr(trainer, "is_deepspeed_enabled", False):
        # ZeRO-3 shards the weights: the trainer gathers them (every process takes part), rank 0 reloads
        gathered = out / ".model.gathered"
        trainer.save_model(str(gathered))
        barrier()
    if is_main_process():
        if gathered is not None and use_lora:
            from peft import PeftModel

            model = load_embedder(model_path, family, hp["max_length"], hp["dtype"])
            model[0].model = PeftModel.from_pretrained(model[0].model, str(_adapter_dir(gathered)))
        elif gathered is not None:
            model = SentenceTransformer(str(gathered), device="cpu")
        if use_lora:
            summary["lora_layers_merged"] = merge_lora(model)
        save_model(model, out, family, template, hp["max_length"])
        if gathered is not None:
            shutil.rmtree(gathered, ignore_errors=True)
        atomic_write_jsonl(out / "train_log.jsonl", history)
    summary.update(model=str(out / "model"), family=family, instruction=instruction, hyperparameters=hp,
                   history=history)
    return summary


def save_model(model, out: Path, family: str, template: str | None, max_length: int) -> Path:
    """``model`` into ``out/model`` (atomically) with its ``speed_embedder.json`` (pooling, instruction)."""
    tmp = out / ".model.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save(str(tmp))
    info = {"family": family, "instruction": template is not None, "template": template,
            "document_instruction": False, "pooling": "lasttoken" if family == "decoder" else "model",
            "eos_appended": family == "decoder", "max_length": max_length}
    (tmp / INFO_FILE).write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    final = out / "model"
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    return final


def untrained_embedder(base_model: str, out: str | os.PathLike, cfg, instruction: bool | None = None) -> str:
    """``base_model`` set up exactly as ``train_embedder`` sets it up (a decoder: EOS appended, last-token
    pooling; the same instruction and max length), saved untrained: the zero-shot baseline of a study."""
    from ..models import resolve_model

    out, model_path = Path(out), resolve_model(base_model, want="embedder")
    family = detect_family(model_path) if cfg.family == "auto" else cfg.family
    hp, instruction = cfg.hyperparameters(family), instruction_on(instruction, family)
    model = load_embedder(model_path, family, hp["max_length"], hp["dtype"])
    return str(save_model(model, out, family, cfg.query_template if instruction else None, hp["max_length"]))


def load_trained(path: str | os.PathLike, device: str | None = None):
    """(SentenceTransformer, info) of a trained embedder folder; info says how to format queries."""
    from sentence_transformers import SentenceTransformer

    path = Path(path)
    if not (path / "modules.json").is_file():
        raise SpeedError(f"{path} is not a sentence-transformers model folder (no modules.json)")
    info_path = path / INFO_FILE
    info = json.loads(info_path.read_text(encoding="utf-8")) if info_path.is_file() else {
        "instruction": False, "template": None}
    return SentenceTransformer(str(path), device=device or ("cuda" if _cuda() else "cpu")), info
