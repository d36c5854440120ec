import json
import shutil

import pytest

from conftest import run_cli
from speed.errors import ModelError
from speed.models import REGISTRY, resolve_model
from speed.models.prepare import assemble_gguf, prepare
from speed.models.registry import OfflineModel

CORE = {"smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct", "all-minilm-l6-v2"}


def test_models_list_json_lists_the_four_models():
    proc = run_cli("models", "list", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert CORE <= set(rows)
    assert rows["all-minilm-l6-v2"]["kind"] == "embedder"
    assert rows["smollm2-135m-instruct"]["kind"] == "chat"
    assert rows["smollm2-135m-instruct"]["parameters"] == "135M"
    for name in CORE:
        assert {"installed", "prepared", "path"} <= set(rows[name])
    assert rows["all-minilm-l6-v2"]["installed"] and rows["all-minilm-l6-v2"]["path"]


def test_prepare_smollm2_loads_offline_and_second_prepare_is_a_no_op(smollm2_hf):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(smollm2_hf, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(smollm2_hf, local_files_only=True)
    assert not getattr(model, "is_quantized", False)
    assert sum(p.numel() for p in model.parameters()) > 100_000_000
    assert tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    # trainable: a backward pass works on the converted weights
    out = model(**tok("hello there", return_tensors="pt"), labels=tok("hello there", return_tensors="pt")["input_ids"])
    out.loss.backward()
    assert model.model.embed_tokens.weight.grad is not None

    proc = run_cli("models", "prepare", "smollm2-135m-instruct")
    assert proc.returncode == 0 and "already prepared" in proc.stdout
    rows = {r["name"]: r for r in json.loads(run_cli("models", "list", "--json").stdout)}
    assert rows["smollm2-135m-instruct"]["prepared"] is True


def test_corrupted_part_is_refused(tmp_path, monkeypatch):
    real = REGISTRY["smollm2-135m-instruct"]
    part = tmp_path / "part.gguf"
    shutil.copyfile(real.part_paths()[0], part)
    with open(part, "r+b") as fh:
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    monkeypatch.setattr(OfflineModel, "part_paths", lambda self: [part])
    with pytest.raises(ModelError, match="expected b179c9523d0e6a0f...") as exc:
        assemble_gguf(real, dest=tmp_path / "out" / "m.gguf")
    assert "reinstall" in str(exc.value)
    assert not (tmp_path / "out" / "m.gguf").exists()


def test_missing_package_is_a_clear_error(monkeypatch):
    fake = OfflineModel(name="fake", kind="chat", parameters="1M", parts=(("no-such-dist-xyz", "x.gguf"),),
                        sha256="0" * 64)
    with pytest.raises(ModelError, match="needs the package no-such-dist-xyz"):
        fake.part_paths()


def test_resolve_model_references(tmp_path, smollm2_gguf):
    assert resolve_model("smollm2-135m-instruct", want="gguf") == smollm2_gguf
    assert resolve_model(smollm2_gguf, want="gguf") == smollm2_gguf
    assert resolve_model("all-minilm-l6-v2", want="embedder").endswith("model")
    with pytest.raises(ModelError, match="neither an offline model"):
        resolve_model("no-such-model")
    with pytest.raises(ModelError, match="hub is not reachable"):
        resolve_model("meta-llama/Meta-Llama-3-8B")
    with pytest.raises(ModelError, match="needs a .gguf file"):
        resolve_model(str(tmp_path), want="gguf")


def test_prepare_unknown_name_exit_2():
    proc = run_cli("models", "prepare", "gpt-5")
    assert proc.returncode == 2 and "unknown offline model 'gpt-5'" in proc.stderr
