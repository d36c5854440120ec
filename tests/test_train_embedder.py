"""train-embedder: contrastive fine-tuning (all-MiniLM-L6-v2 encoder; SmolLM2 decoder with LoRA, slow).

The real-data test builds triplets from Banking77's train split in ../shared/eval (anchor = a text,
positive = another text of the same label, negative = a text of another label) plus a few pairs
(no negative), trains a few steps and loads the result with ``SentenceTransformer``.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from speed.runtime.config import ModelRef, build_config
from speed.io import atomic_write_jsonl
from speed.runtime.rundir import RunDir, StageContext

pytest.importorskip("sentence_transformers")

TEMPLATE = "Instruct: {task}\nQuery: {query}"
TASK = "Given a banking customer question, find another question with the same intent"


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared CPU: one thread is much faster than two oversubscribed ones
    yield
    torch.set_num_threads(before)


def banking_rows(eval_dir: Path, n_triplets: int = 48, n_pairs: int = 16, seed: int = 0) -> list[dict]:
    rows = [json.loads(line) for line in (eval_dir / "Banking77Classification" / "train.jsonl").open()]
    by_label: dict[str, list[str]] = {}
    for r in rows:
        by_label.setdefault(r["label"], []).append(r["text"])
    rng = random.Random(seed)
    labels = sorted(lab for lab, texts in by_label.items() if len(texts) >= 4)
    out = []
    for i in range(n_triplets + n_pairs):
        lab = labels[i % len(labels)]
        a, p = rng.sample(by_label[lab], 2)
        other = rng.choice([x for x in labels if x != lab])
        neg = rng.choice(by_label[other]) if i < n_triplets else ""
        out.append({"id": f"b{i}", "kind": "retrieval" if neg else "short-short", "task": TASK, "query": a,
                    "positive": p, "negative": neg, "topic": "banking"})
    return out


def make_ctx(run_dir: Path, rows: list[dict], model: str = "all-minilm-l6-v2", instruction=None, **stage):
    atomic_write_jsonl(run_dir / "export" / "data.jsonl", rows)
    ref = {"backend": "sentence-transformers", "model": model}
    if instruction is not None:
        ref["instruction"] = instruction
    cfg = build_config({"run": {"name": "t", "seed": 2}, "models": {"embedder": ref},
                        "train-embedder": {"threads": 1, **stage}})
    ctx = StageContext(name="train-embedder", config=cfg, cfg=cfg.stage("train-embedder"), rundir=RunDir(run_dir))
    ctx.dir.mkdir(parents=True, exist_ok=True)
    return ctx


def _contains(seq: list[int], sub: list[int]) -> bool:
    return any(seq[i:i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


def test_rows_become_triplets_and_pairs_with_the_query_instruction():
    from speed.train.embedder import build_rows, train_dataset

    rows = [{"kind": "retrieval", "task": "find docs", "query": "q1", "positive": "p1", "negative": "n1"},
            {"kind": "short-short", "task": "match", "query": "q2", "positive": "p2", "negative": ""},
            {"kind": "sts", "task": "", "query": "", "positive": "p3", "negative": "n3"}]
    trip, pairs, counts = build_rows(rows, TEMPLATE)
    assert trip == [{"anchor": "Instruct: find docs\nQuery: q1", "positive": "p1", "negative": "n1"}]
    assert pairs == [{"anchor": "Instruct: match\nQuery: q2", "positive": "p2"}]
    assert counts == {"skipped_empty": 1, "skipped_kind": 0, "triplets": 1, "pairs": 1}
    plain, _, _ = build_rows(rows, None)
    assert plain[0]["anchor"] == "q1"
    ds = train_dataset(trip, pairs)
    assert set(ds) == {"triplets", "pairs"} and ds["pairs"].column_names == ["anchor", "positive"]
    only, _, c = build_rows(rows, None, kinds=["short-short"])
    assert only == [] and c["skipped_kind"] == 2


def test_a_mined_negative_next_to_the_generated_one_makes_a_second_negative_column():
    from speed.train.embedder import build_rows, train_dataset

    rows = [{"kind": "retrieval", "task": "t", "query": "q1", "positive": "p1", "negative": "n1", "mined_negative": "m1"},
            {"kind": "short-short", "task": "t", "query": "q2", "positive": "p2", "negative": "", "mined_negative": "m2"},
            {"kind": "retrieval", "task": "t", "query": "q3", "positive": "p3", "negative": "n3"}]
    trip, pairs, _ = build_rows(rows, None)
    assert trip == [{"anchor": "q1", "positive": "p1", "negative": "n1", "negative_2": "m1"},
                    {"anchor": "q2", "positive": "p2", "negative": "m2"},
                    {"anchor": "q3", "positive": "p3", "negative": "n3"}] and pairs == []
    ds = train_dataset(trip, pairs)
    assert set(ds) == {"triplets", "two_negatives"} and ds["two_negatives"].column_names[-1] == "negative_2"


def test_instruction_defaults_by_family():
    from speed.train.embedder import detect_family, instruction_on
    from speed.models import resolve_model

    assert detect_family(resolve_model("all-minilm-l6-v2", want="embedder")) == "encoder"
    assert detect_family(resolve_model("smollm2-135m-instruct", want="hf")) == "decoder"
    assert instruction_on(None, "encoder") is False and instruction_on(None, "decoder") is True
    assert instruction_on(True, "encoder") is True and instruction_on(False, "decoder") is False


def test_bad_embedder_keys_are_config_errors():
    from speed.errors import ConfigError

    with pytest.raises(ConfigError, match="train-embedder.query_template"):
        build_config({"train-embedder": {"query_template": "no query here"}})
    with pytest.raises(ConfigError, match="train-embedder.temperature"):
        build_config({"train-embedder": {"temperature": 0}})
    with pytest.raises(ConfigError, match="train-embedder.kinds"):
        build_config({"train-embedder": {"kinds": ["poems"]}})


def test_encoder_trains_on_banking77_and_loads(tmp_path, shared_eval):
    from sentence_transformers import SentenceTransformer

    from speed.stages import train_embedder
    from speed.train.embedder import load_trained

    rows = banking_rows(shared_eval)
    ctx = make_ctx(tmp_path / "run", rows, instruction=True, batch_size=16, max_length=48, epochs=1.0,
                   save_steps=100, learning_rate=5e-5)
    train_embedder.run(ctx)
    c = ctx.counts
    assert c["triplets"] == 48 and c["pairs"] == 16 and c["steps"] >= 4 and not c["lora"]
    assert math.isfinite(c["final_loss"]) and c["hyperparameters"]["temperature"] == 0.02
    art = ctx.artifacts["model"]
    assert art == {"path": "model", "instruction": True, "template": TEMPLATE, "family": "encoder",
                   "base": "all-minilm-l6-v2"}
    model = SentenceTransformer(str(ctx.dir / "model"), device="cpu")
    emb = model.encode(["I am still waiting on my card?", "My card has not arrived yet"], normalize_embeddings=True)
    assert emb.shape == (2, 384) and float(emb[0] @ emb[1]) > 0.3
    _, info = load_trained(ctx.dir / "model")
    assert info["instruction"] is True and info["template"] == TEMPLATE
    assert "model/modules.json" in ctx.outputs and "train_log.jsonl" in ctx.outputs

    # the query side carries the instruction, the document side does not (on the tokenized inputs)
    from speed.train.embedder import build_rows

    trip, _, _ = build_rows(rows[:1], TEMPLATE)
    tok = model.tokenizer
    instr = tok("Instruct:", add_special_tokens=False)["input_ids"]
    task_ids = tok(TASK, add_special_tokens=False)["input_ids"]
    q_ids = model.preprocess([trip[0]["anchor"]])["input_ids"][0].tolist()
    d_ids = model.preprocess([trip[0]["positive"]])["input_ids"][0].tolist()
    assert _contains(q_ids, instr) and _contains(q_ids, task_ids[:5])
    assert not _contains(d_ids, instr) and not _contains(d_ids, task_ids[:5])


@pytest.fixture
def one_trainer(monkeypatch):
    """Every call of the one entry point, ``speed.train.embedder.train_embedder``: (base model, summary)."""
    import speed.train.embedder as trainer

    calls, real = [], trainer.train_embedder
    monkeypatch.setattr(trainer, "train_embedder",
                        lambda base, *a, **kw: calls.append((base, real(base, *a, **kw))) or calls[-1][1])
    return calls


def test_encoder_default_has_no_instruction(tmp_path, one_trainer):
    """all-MiniLM-L6-v2 was not trained with instructions: instruction null -> off; one step suffices."""
    from speed.stages import train_embedder

    rows = [{"kind": "retrieval", "task": "find", "query": f"question {i}", "positive": f"answer {i}",
             "negative": f"other {i}"} for i in range(4)]
    ctx = make_ctx(tmp_path / "run", rows, max_steps=1, batch_size=4, max_length=16, loss="cached_mnrl",
                   mini_batch_size=2)
    train_embedder.run(ctx)
    assert ctx.artifacts["model"]["instruction"] is False and ctx.artifacts["model"]["template"] is None
    info = json.loads((ctx.dir / "model" / "speed_embedder.json").read_text())
    assert info["instruction"] is False and ctx.counts["steps"] == 1
    assert [(base, s["lora"]) for base, s in one_trainer] == [("all-minilm-l6-v2", False)]  # no LoRA: an encoder


SAIL = [{"kind": "retrieval", "task": "Retrieve a sailing guide", "query": f"how do I trim a sail in wind {i}",
         "positive": f"Sail trim guide {i}: ease the sheet", "negative": f"A recipe for bread {i}"} for i in range(4)]
TINY_STS = str(Path(__file__).parent / "fixtures" / "eval" / "valid" / "TinySTS")


def _saved_decoder(folder: Path):
    """A saved decoder embedder: last-token pooling, LoRA merged (no adapter left), EOS ends every text."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    assert "lasttoken" in str(model) and not (folder / "adapter_config.json").exists()
    feats = model.preprocess(["hello world", "a much longer sentence than the first one"])
    for ids, mask in zip(feats["input_ids"], feats["attention_mask"]):
        assert ids[int(mask.sum()) - 1].item() == model.tokenizer.eos_token_id  # its state is the embedding
    return model


@pytest.mark.parametrize("path", ["speed scaling", "speed compare --downstream"])
def test_scaling_and_compare_train_a_decoder_as_the_stage_does(tmp_path, one_trainer, path):
    """The one trainer, as the stage trains a decoder: LoRA on 30 x 7 layers, merged; EOS appended; last token."""
    from speed.analysis.compare import CompareSettings, Variant, _downstream
    from speed.analysis.scaling import run_scaling
    from speed.stages.train_embedder import Config

    if path == "speed scaling":
        run_scaling(SAIL, "smollm2-135m-instruct", tmp_path, [4], task_dirs=[TINY_STS], n_boot=5, keep_models=True,
                    train_config=Config(max_steps=1, batch_size=4, max_length=24), cache_dir=str(tmp_path / "c"))
    else:
        rows = [{"variant": "v", "prompt_id": f"p{i}", "kind": r["kind"], "task": r["task"], "topic": "Sailing",
                 "attributes": {}, "length_ok": {}, "valid": True,
                 "fields": {"user_query": r["query"], "positive_document": r["positive"],
                            "hard_negative_document": r["negative"]}} for i, r in enumerate(SAIL)]
        settings = CompareSettings(reference_embedder="smollm2-135m-instruct", downstream_tasks=[TINY_STS])
        res = _downstream(Variant("v", ModelRef(model="smollm2-135m-instruct")), rows, settings, tmp_path)
        assert res["examples"] == 4 and set(res["scores"]) == {"TinySTS"}
    [(base, summary)] = one_trainer
    assert base == "smollm2-135m-instruct" and summary["lora"] and summary["lora_layers_merged"] == 30 * 7
    folder = Path(summary["model"])
    info = json.loads((folder / "speed_embedder.json").read_text())
    assert info["family"] == "decoder" and info["eos_appended"] and info["instruction"] is True
    _saved_decoder(folder)


@pytest.mark.slow
def test_decoder_embedder_lora_eos_last_token(tmp_path, shared_eval):
    import torch

    from speed.stages import train_embedder

    rows = banking_rows(shared_eval, n_triplets=8, n_pairs=4)
    ctx = make_ctx(tmp_path / "run", rows, model="smollm2-135m-instruct", max_steps=2, batch_size=4,
                   max_length=32, save_steps=100, lora_r=4, lora_alpha=8, lora_dropout=0.0)
    train_embedder.run(ctx)
    c = ctx.counts
    assert c["lora"] and c["lora_layers_merged"] == 30 * 7 and math.isfinite(c["final_loss"])
    assert ctx.artifacts["model"]["family"] == "decoder" and ctx.artifacts["model"]["instruction"] is True
    model = _saved_decoder(ctx.dir / "model")  # last-token pooling, no adapter left, EOS ends every text
    emb = model.encode(["hello world"], convert_to_tensor=True)
    assert emb.shape == (1, 576) and torch.isclose(emb.norm(), torch.tensor(1.0), atol=1e-4)
    # the LoRA update is merged into the saved weights: they differ from the base model's
    from transformers import AutoModel

    from speed.models import resolve_model

    base = AutoModel.from_pretrained(resolve_model("smollm2-135m-instruct", want="hf"))
    merged = model[0].auto_model
    assert not torch.equal(merged.layers[0].self_attn.q_proj.weight, base.layers[0].self_attn.q_proj.weight)


def test_embedder_resumes_from_its_checkpoint(tmp_path):
    """Killed after checkpoint 2 of 4, then rerun in the same folder: the same losses as an uninterrupted run."""
    from transformers import TrainerCallback

    import speed.train.common as common
    from speed.stages import train_embedder

    class Stop(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            if state.global_step == 2:
                raise KeyboardInterrupt("killed after checkpoint 2")

    rows = [{"kind": "retrieval", "task": "find", "query": f"question number {i}", "positive": f"answer {i}",
             "negative": f"unrelated text {i}"} for i in range(16)]
    settings = dict(max_steps=4, save_steps=2, batch_size=4, max_length=16, learning_rate=1e-4)
    full = make_ctx(tmp_path / "full", rows, **settings)
    train_embedder.run(full)
    killed = make_ctx(tmp_path / "killed", rows, **settings)
    common.EXTRA_CALLBACKS.append(Stop())
    try:
        with pytest.raises(KeyboardInterrupt):
            train_embedder.run(killed)
    finally:
        common.EXTRA_CALLBACKS.clear()
    resumed = make_ctx(tmp_path / "killed", rows, **settings)
    train_embedder.run(resumed)
    assert resumed.counts["resumed_from"] == "checkpoint-2" and resumed.counts["steps"] == 4
    assert resumed.counts["final_loss"] == pytest.approx(full.counts["final_loss"], rel=1e-4, abs=1e-5)


@pytest.mark.slow
def test_decoder_lora_embedder_resumes_from_its_adapter_checkpoint(tmp_path, shared_eval):
    from transformers import TrainerCallback

    import speed.train.common as common
    from speed.stages import train_embedder

    class Stop(TrainerCallback):
        def on_save(self, args, state, control, **kw):
            if state.global_step == 1:
                raise KeyboardInterrupt("killed after checkpoint 1")

    rows = banking_rows(shared_eval, n_triplets=8, n_pairs=0)
    settings = dict(model="smollm2-135m-instruct", max_steps=2, save_steps=1, batch_size=4, max_length=24, lora_r=4,
                    lora_alpha=8, lora_dropout=0.0, warmup=0.0)
    full = make_ctx(tmp_path / "full", rows, **settings)
    train_embedder.run(full)
    common.EXTRA_CALLBACKS.append(Stop())
    try:
        with pytest.raises(KeyboardInterrupt):
            train_embedder.run(make_ctx(tmp_path / "killed", rows, **settings))
    finally:
        common.EXTRA_CALLBACKS.clear()
    assert (tmp_path / "killed" / "train-embedder" / "checkpoints" / "checkpoint-1").is_dir()
    resumed = make_ctx(tmp_path / "killed", rows, **settings)
    train_embedder.run(resumed)
    assert resumed.counts["resumed_from"] == "checkpoint-1" and resumed.counts["steps"] == 2
    assert resumed.counts["final_loss"] == pytest.approx(full.counts["final_loss"], rel=1e-3, abs=1e-4)
