"""Generator training (train-junior / train-senior / train-revisor) on SmolLM2-135M, tiny data, CPU.

Default tests: profiles, the SFT label mask, a few SFT steps that change every LoRA parameter, and
the PEFT -> GGUF LoRA conversion (names, shapes, metadata, q/k permutation, loads in llama.cpp).
Slow tests (``-m slow``): resume after a kill equals an uninterrupted run and a done stage is not
redone; a memorised junior generates valid JSON through hf (PEFT) and llamacpp (GGUF adapter);
DPO from the junior raises the implicit reward margin with the junior frozen as the reference.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from speed.runtime.config import ModelRef, build_config
from speed.io import atomic_write_jsonl
from speed.runtime.rundir import RunDir, StageContext

pytest.importorskip("trl")
pytest.importorskip("peft")

BASE = "smollm2-135m-instruct"
# small, quick settings: tiny batches, short sequences, no dropout (exact resume / comparisons)
TINY = {"per_device_batch_size": 2, "gradient_accumulation_steps": 1, "max_length": 96, "lora_r": 4,
        "lora_alpha": 8, "lora_dropout": 0.0, "threads": 1}
# one thread: on a shared, oversubscribed CPU two spinning OpenMP threads are ~10x slower than one

EXAMPLES = [  # short-short matching examples: short enough to memorise in a few steps
    {"input": "cat food", "positive_document": "Dry and wet food for cats."},
    {"input": "red car", "positive_document": "A red sports car for sale."},
    {"input": "rain boots", "positive_document": "Rubber boots for rainy days."},
    {"input": "green tea", "positive_document": "Loose leaf green tea from Japan."},
]


def _prompt(i: int) -> list[dict]:
    return [{"role": "user", "content": f"Write matching example {i} as JSON with keys input, positive_document."}]


def sft_rows(n: int = 4) -> list[dict]:
    return [{"prompt": _prompt(i), "completion": [{"role": "assistant", "content": json.dumps(EXAMPLES[i % 4])}],
             "id": f"s{i}", "kind": "short-short", "extra": 1} for i in range(n)]


def dpo_rows(n: int = 2) -> list[dict]:
    rows = []
    for i in range(n):
        good = EXAMPLES[i % 4]
        bad = {"input": good["input"], "positive_document": good["input"]}
        rows.append({"prompt": _prompt(i), "chosen": [{"role": "assistant", "content": json.dumps(good)}],
                     "rejected": [{"role": "assistant", "content": json.dumps(bad)}], "id": f"d{i}",
                     "kind": "short-short", "reason": "r"})
    return rows


@pytest.fixture(autouse=True)
def one_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def registered(monkeypatch):
    """No extra trainer callbacks (a test adds its own)."""
    import speed.train.common as common

    monkeypatch.setattr(common, "EXTRA_CALLBACKS", [])
    return common


def make_config(stage: str, role: str, seed: int = 3, **train):
    return build_config({"run": {"name": "t", "seed": seed}, "models": {role: {"backend": "hf", "model": BASE}},
                         stage: {**TINY, **train}})


def stage_ctx(run_dir: Path, stage: str, config) -> StageContext:
    ctx = StageContext(name=stage, config=config, cfg=config.stage(stage), rundir=RunDir(run_dir))
    ctx.dir.mkdir(parents=True, exist_ok=True)
    return ctx


class Watch:
    """A TrainerCallback that snapshots the LoRA parameters at the start and compares at the end."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Watch(TrainerCallback):
            before: dict = {}
            changed: dict = {}
            trainable: set = set()

            def on_train_begin(self, args, state, control, model=None, **kw):
                self.before = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_" in n}
                self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}

            def on_train_end(self, args, state, control, model=None, **kw):
                self.changed = {n: not bool((p.detach() == self.before[n]).all())
                                for n, p in model.named_parameters() if n in self.before}

        return _Watch()


class FailIfTrained:
    """Raise when a training starts (a done stage must not train again)."""

    def __new__(cls):
        from transformers import TrainerCallback

        class _Fail(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                raise AssertionError("the stage trained again")

        return _Fail()


class StopAfterSave:
    """Raise right after checkpoint ``step`` is written: a kill at that point."""

    def __new__(cls, step: int):
        from transformers import TrainerCallback

        class _Stop(TrainerCallback):
            def on_save(self, args, state, control, **kw):
                if state.global_step == step:
                    raise KeyboardInterrupt(f"killed after checkpoint {step}")

        return _Stop()


# -- config ------------------------------------------------------------------------------------------

def test_profiles_give_the_paper_hyperparameters():
    from speed.stages import train_junior, train_revisor, train_senior
    from speed.train.common import hyperparameters

    j = hyperparameters(train_junior.Config(profile="paper"), train_junior.PROFILES)
    assert (j["learning_rate"], j["effective_batch_size"]) == (1e-4, 16)
    s_cfg = train_senior.Config(profile="paper")
    s = hyperparameters(s_cfg, {k: {**v, "beta": s_cfg.beta} for k, v in train_senior.PROFILES.items()})
    assert (s["learning_rate"], s["effective_batch_size"], s["beta"]) == (1e-5, 16, 0.1)
    r = hyperparameters(train_revisor.Config(profile="paper"), train_revisor.PROFILES)
    assert (r["learning_rate"], r["effective_batch_size"]) == (5e-6, 24)
    cpu = hyperparameters(train_junior.Config(learning_rate=3e-4, max_length=200), train_junior.PROFILES)
    assert cpu["learning_rate"] == 3e-4 and cpu["max_length"] == 200 and cpu["gradient_checkpointing"] is False


def test_bad_training_keys_are_config_errors():
    from speed.errors import ConfigError

    with pytest.raises(ConfigError, match="train-junior.learning_rat"):
        build_config({"train-junior": {"learning_rat": 1e-4}})
    with pytest.raises(ConfigError, match="train-senior.beta"):
        build_config({"train-senior": {"beta": 0}})
    with pytest.raises(ConfigError, match="train-junior.profile"):
        build_config({"train-junior": {"profile": "gpu"}})


# -- SFT ---------------------------------------------------------------------------------------------

def test_sft_loss_is_on_the_answer_tokens_only(tmp_path, smollm2_hf):
    from speed.train.common import hyperparameters, load_causal_lm
    from speed.train.sft import SFT_KEYS, build_sft_trainer, peft_model
    from speed.stages import train_junior

    hp = hyperparameters(train_junior.Config(**{**TINY, "max_length": 256}), train_junior.PROFILES)
    model, tok = load_causal_lm(smollm2_hf)
    model = peft_model(model, hp, 0)
    rows = [{k: r[k] for k in SFT_KEYS} for r in sft_rows(2)]
    trainer = build_sft_trainer(model, tok, rows, hp, tmp_path / "ck", 0)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(2)])
    for i, row in enumerate(rows):
        labels = batch["labels"][i]
        ids = batch["input_ids"][i]
        answer = tok.decode(ids[labels != -100])
        assert answer.startswith(row["completion"][0]["content"])
        assert answer[len(row["completion"][0]["content"]):].strip() in ("<|im_end|>", "")
        prompt_part = tok.decode(ids[(labels == -100) & (batch["attention_mask"][i] == 1)])
        assert row["prompt"][0]["content"] in prompt_part and "positive_document\":" not in prompt_part


def test_sft_steps_change_every_lora_parameter(tmp_path, registered, smollm2_hf):
    from speed.stages import train_junior

    watch = Watch()
    registered.EXTRA_CALLBACKS.append(watch)
    cfg = make_config("train-junior", "junior", max_steps=2, save_steps=10, learning_rate=1e-3)
    ctx = stage_ctx(tmp_path / "run", "train-junior", cfg)
    atomic_write_jsonl(tmp_path / "run" / "seed" / "sft.jsonl", sft_rows(4))
    train_junior.run(ctx)
    assert watch.changed and all(watch.changed.values()), [n for n, c in watch.changed.items() if not c][:5]
    assert watch.trainable == set(watch.before)  # only the LoRA parameters train
    assert ctx.counts["steps"] == 2 and math.isfinite(ctx.counts["final_loss"])
    art = ctx.artifacts["model"]
    assert art["base"] == BASE and Path(art["base_path"]) == Path(smollm2_hf)
    assert (ctx.dir / art["adapter"] / "adapter_model.safetensors").is_file()
    assert (ctx.dir / art["adapter_gguf"]).is_file() and len(art["adapter_sha256"]) == 64
    assert set(ctx.outputs) == {"adapter/adapter_model.safetensors", "adapter/adapter_config.json",
                                "train_log.jsonl", "adapter.gguf"}
    assert json.loads((ctx.dir / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == \
        art["base_path"]


def test_malformed_sft_rows_are_input_errors(tmp_path):
    from speed.errors import InputError
    from speed.stages import train_junior

    cfg = make_config("train-junior", "junior", max_steps=1)
    ctx = stage_ctx(tmp_path / "run", "train-junior", cfg)
    atomic_write_jsonl(tmp_path / "run" / "seed" / "sft.jsonl", [{"prompt": "text", "completion": []}])
    with pytest.raises(InputError, match=r"sft.jsonl:1: 'prompt' is not a list of chat messages"):
        train_junior.run(ctx)


# -- LoRA -> GGUF ------------------------------------------------------------------------------------

def _qk_adapter(base_path: str, folder: Path, seed: int = 0) -> Path:
    """A PEFT adapter on every linear layer whose only non-zero updates are on q_proj / k_proj."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_path)
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    with torch.no_grad():
        for name, p in peft.named_parameters():
            if "lora_B" in name:
                p.copy_(torch.randn_like(p) * 0.05 if ("q_proj" in name or "k_proj" in name) else torch.zeros_like(p))
    peft.save_pretrained(str(folder))
    return folder


def test_gguf_conversion_names_shapes_and_qk_permutation(tmp_path, smollm2_hf, smollm2_gguf, monkeypatch):
    import numpy as np
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    pytest.importorskip("llama_cpp")
    import speed.train.lora_gguf as lg
    from speed.llm.backends.llamacpp_backend import open_llama

    adapter = _qk_adapter(smollm2_hf, tmp_path / "adapter")
    info = lg.convert_peft_to_gguf(adapter, tmp_path / "adapter.gguf", smollm2_hf)
    read = lg.read_gguf_adapter(tmp_path / "adapter.gguf")
    meta = read["metadata"]
    assert meta["general.type"] == "adapter" and meta["adapter.type"] == "lora"
    assert meta["general.architecture"] == "llama" and meta["adapter.lora.alpha"] == 8.0
    t = read["tensors"]
    assert len(t) == info["tensors"] == 30 * 7 * 2  # 30 blocks x (q k v o gate up down) x (a, b)
    # GGUF order: lora_a [in, r], lora_b [r, out]
    assert t["blk.0.attn_q.weight.lora_a"] == (576, 4) and t["blk.0.attn_q.weight.lora_b"] == (4, 576)
    assert t["blk.0.attn_k.weight.lora_b"] == (4, 192) and t["blk.29.ffn_down.weight.lora_a"] == (1536, 4)
    assert t["blk.5.ffn_gate.weight.lora_b"] == (4, 1536)
    monkeypatch.setitem(lg.ARCHS, "llama", ("LLAMA", False))  # the same adapter without the q/k permutation
    lg.convert_peft_to_gguf(adapter, tmp_path / "unpermuted.gguf", smollm2_hf)
    monkeypatch.undo()

    text = ("<|im_start|>user\nName three colours and say which one you like best, and why.<|im_end|>\n"
            "<|im_start|>assistant\nRed, green and blue. I like blue best because it is the colour of the sky and")

    def llama_logits(lora):
        kw = dict(model_path=smollm2_gguf, n_ctx=128, n_threads=1, verbose=False, logits_all=True)
        if lora:
            kw["lora_path"] = str(lora)
        m, _ = open_llama(kw)  # repacking only where the probe found it safe (it crashes on AMX CPUs)
        toks = m.tokenize(text.encode(), add_bos=False, special=True)
        m.eval(toks)
        out = np.array(m.scores[:len(toks)]).copy()
        m.close()
        return toks, out

    toks, base_ll = llama_logits(None)
    _, lora_ll = llama_logits(tmp_path / "adapter.gguf")
    _, wrong_ll = llama_logits(tmp_path / "unpermuted.gguf")
    model = AutoModelForCausalLM.from_pretrained(smollm2_hf)
    ids = torch.tensor([toks])
    with torch.no_grad():
        base_hf = model(ids).logits[0].numpy()
        lora_hf = PeftModel.from_pretrained(model, str(adapter))(ids).logits[0].numpy()
    d_hf = (lora_hf - base_hf).ravel()
    assert np.abs(lora_ll - base_ll).max() > 0.1  # the adapter changes llama.cpp's logits
    right = np.corrcoef((lora_ll - base_ll).ravel(), d_hf)[0, 1]
    wrong = np.corrcoef((wrong_ll - base_ll).ravel(), d_hf)[0, 1]
    # llama.cpp + GGUF adapter moves the logits the way transformers + PEFT does (Q4_1 base: not exactly)
    assert right > 0.4 and right > wrong + 0.3, (right, wrong)


def test_conversion_refuses_what_it_cannot_express(tmp_path, smollm2_hf):
    from speed.errors import ModelError
    from speed.train.lora_gguf import convert_peft_to_gguf

    folder = tmp_path / "a"
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8,
                                                            "modules_to_save": ["lm_head"]}))
    with pytest.raises(ModelError, match="modules_to_save"):
        convert_peft_to_gguf(folder, tmp_path / "x.gguf", smollm2_hf)
    (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 4, "lora_alpha": 8}))
    bad_base = tmp_path / "base"
    bad_base.mkdir()
    (bad_base / "config.json").write_text(json.dumps({"model_type": "bert", "num_hidden_layers": 2,
                                                      "num_attention_heads": 2}))
    with pytest.raises(ModelError, match="model type 'bert'"):
        convert_peft_to_gguf(folder, tmp_path / "x.gguf", bad_base)


# -- slow: resume, memorisation + generation, DPO ------------------------------------------------------

def _seed_done(run_dir: Path, rows: list[dict]) -> None:
    from speed.io import sha256_file

    path = run_dir / "seed" / "sft.jsonl"
    atomic_write_jsonl(path, rows)
    RunDir(run_dir).update_stage("seed", status="done", config_hash="x", input_hash="y",
                                 outputs={"sft.jsonl": {"sha256": sha256_file(path), "bytes": path.stat().st_size,
                                                        "rows": len(rows)}})


@pytest.mark.slow
def test_killed_training_resumes_to_the_same_loss_and_is_not_redone(tmp_path, registered, smollm2_hf):
    from speed.runtime.pipeline import Pipeline

    settings = dict(max_steps=4, save_steps=2, learning_rate=1e-3, gguf=False)
    quiet = lambda *a: None  # noqa: E731

    full_dir = tmp_path / "full"
    _seed_done(full_dir, sft_rows(4))
    full = Pipeline(make_config("train-junior", "junior", **settings), full_dir).run(
        from_stage="train-junior", until="train-junior", log=quiet)
    assert full["stages"] == [("train-junior", "run")]
    full_counts = RunDir(full_dir).stage_entry("train-junior")["counts"]

    run_dir = tmp_path / "killed"
    _seed_done(run_dir, sft_rows(4))
    registered.EXTRA_CALLBACKS.append(StopAfterSave(2))
    with pytest.raises(KeyboardInterrupt):
        Pipeline(make_config("train-junior", "junior", **settings), run_dir).run(
            from_stage="train-junior", until="train-junior", log=quiet)
    assert RunDir(run_dir).stage_entry("train-junior")["status"] == "running"
    assert (run_dir / "train-junior" / "checkpoints" / "checkpoint-2").is_dir()
    registered.EXTRA_CALLBACKS.clear()
    again = Pipeline(make_config("train-junior", "junior", **settings), run_dir).run(
        from_stage="train-junior", until="train-junior", log=quiet)
    assert again["stages"] == [("train-junior", "resume")]
    counts = RunDir(run_dir).stage_entry("train-junior")["counts"]
    assert counts["resumed_from"] == "checkpoint-2" and counts["steps"] == 4
    assert counts["final_loss"] == pytest.approx(full_counts["final_loss"], rel=1e-3, abs=1e-4)
    losses = [h["loss"] for h in map(json.loads, (run_dir / "train-junior" / "train_log.jsonl").open()) if "loss" in h]
    full_losses = [h["loss"] for h in map(json.loads, (full_dir / "train-junior" / "train_log.jsonl").open())
                   if "loss" in h]
    assert losses == pytest.approx(full_losses, rel=1e-3, abs=1e-4)

    registered.EXTRA_CALLBACKS.append(FailIfTrained())
    third = Pipeline(make_config("train-junior", "junior", **settings), run_dir).run(
        from_stage="train-junior", until="train-junior", log=quiet)
    assert third["stages"] == [("train-junior", "skip")]


@pytest.fixture(scope="module")
def memorised_junior(tmp_path_factory, smollm2_hf):
    """A junior trained until it reproduces 4 short JSON examples (the module's shared adapter)."""
    from speed.stages import train_junior

    run_dir = tmp_path_factory.mktemp("memorise") / "run"
    cfg = make_config("train-junior", "junior", max_steps=24, save_steps=100, learning_rate=2e-3,
                      per_device_batch_size=4, lora_r=8, lora_alpha=16, warmup=2)
    ctx = stage_ctx(run_dir, "train-junior", cfg)
    atomic_write_jsonl(run_dir / "seed" / "sft.jsonl", sft_rows(4))
    train_junior.run(ctx)
    return ctx


@pytest.mark.slow
def test_memorised_junior_loss_falls(memorised_junior):
    c = memorised_junior.counts
    assert math.isfinite(c["final_loss"]) and c["final_loss"] < 0.25 * c["first_loss"], c


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["hf", "llamacpp"])
def test_trained_junior_generates_valid_json(memorised_junior, backend):
    if backend == "llamacpp":
        pytest.importorskip("llama_cpp")
    from speed.llm.backends import BackendRequest, SamplingParams, make_backend
    from speed.prompts import parse_example

    art = memorised_junior.artifacts["model"]
    adapter = memorised_junior.dir / (art["adapter"] if backend == "hf" else art["adapter_gguf"])
    ref = ModelRef(backend=backend, model=art["base"], adapter=str(adapter), n_threads=1, n_ctx=512, batch_size=4)
    be = make_backend(ref)
    try:
        reqs = [BackendRequest(messages=_prompt(i), sampling=SamplingParams(temperature=0.0, max_tokens=48),
                               seed=1, indices=(0,)) for i in range(4)]
        out = be.generate(reqs)
    finally:
        be.close()
    parsed = [parse_example("short-short", row[0].text) for row in out]
    ok = [p for p in parsed if p.ok]
    assert len(ok) >= 3, [row[0].text for row in out]
    assert {p.value["input"] for p in ok} <= {e["input"] for e in EXAMPLES}


@pytest.mark.slow
def test_untrained_base_does_not_memorise(smollm2_gguf):
    """The control for the test above: the base model alone does not write these examples."""
    from speed.llm.backends import BackendRequest, SamplingParams, make_backend
    from speed.prompts import parse_example

    be = make_backend(ModelRef(backend="llamacpp", model=BASE, n_threads=1, n_ctx=512))
    try:
        out = be.generate([BackendRequest(messages=_prompt(i), sampling=SamplingParams(temperature=0.0, max_tokens=48),
                                          seed=1, indices=(0,)) for i in range(4)])
    finally:
        be.close()
    parsed = [parse_example("short-short", row[0].text) for row in out]
    assert sum(p.ok and p.value.get("input") in {e["input"] for e in EXAMPLES} for p in parsed) <= 1


@pytest.mark.slow
def test_dpo_from_the_junior_raises_the_reward_margin(tmp_path, registered, smollm2_hf):
    from safetensors.torch import load_file

    from speed.stages import train_senior

    run_dir = tmp_path / "run"
    junior_dir = run_dir / "train-junior"
    _qk_adapter(smollm2_hf, junior_dir / "adapter", seed=1)  # a stand-in junior adapter
    RunDir(run_dir).update_stage("train-junior", status="done", artifacts={"model": {
        "base": BASE, "base_path": smollm2_hf, "adapter": "adapter"}})
    atomic_write_jsonl(run_dir / "judge" / "dpo.jsonl", dpo_rows(2))
    watch = Watch()
    registered.EXTRA_CALLBACKS.append(watch)
    cfg = make_config("train-senior", "senior", max_steps=3, save_steps=10, learning_rate=1e-3, lora_r=4,
                      logging_steps=1)
    ctx = stage_ctx(run_dir, "train-senior", cfg)
    train_senior.run(ctx)
    c = ctx.counts
    assert c["initialised_from"] == "train-junior" and c["reference"] == "train-junior (frozen)"
    assert c["reward_margin_first"] == pytest.approx(0.0, abs=1e-4)  # policy == reference at the start
    assert c["reward_margin_last"] > c["reward_margin_first"] + 0.1 and math.isfinite(c["final_loss"])
    trained = {n: ch for n, ch in watch.changed.items() if ".default." in n}
    frozen = {n: ch for n, ch in watch.changed.items() if ".ref." in n}
    assert trained and all(trained.values()) and frozen and not any(frozen.values())
    assert watch.trainable == set(trained)
    # one adapter, started from the junior's weights (same shapes), not the reference copy
    saved = load_file(str(ctx.dir / "adapter" / "adapter_model.safetensors"))
    junior = load_file(str(junior_dir / "adapter" / "adapter_model.safetensors"))
    assert set(saved) == set(junior) and not any(".ref." in k for k in saved)
    assert any(not bool((saved[k] == junior[k]).all()) for k in saved)
    assert (ctx.dir / "adapter.gguf").is_file() and ctx.artifacts["model"]["adapter_gguf"] == "adapter.gguf"


@pytest.mark.slow
def test_senior_without_a_junior_trains_from_the_base(tmp_path, registered, smollm2_hf):
    from speed.stages import train_senior

    run_dir = tmp_path / "run"
    atomic_write_jsonl(run_dir / "judge" / "dpo.jsonl", dpo_rows(2))
    cfg = make_config("train-senior", "senior", max_steps=1, learning_rate=1e-3, gguf=False)
    ctx = stage_ctx(run_dir, "train-senior", cfg)
    train_senior.run(ctx)
    assert ctx.counts["initialised_from"] is None and ctx.counts["reference"] == "base model"
    assert "adapter_gguf" not in ctx.artifacts["model"]
