"""``speed scaling`` and ``speed compare --downstream`` train with the pipeline's embedder trainer
(issue #15): a decoder base (SmolLM2-135M) gets LoRA, an appended EOS and last-token pooling there
too, exactly as in the train-embedder stage."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIX = Path(__file__).parent / "fixtures" / "eval" / "valid"
ROWS = [{"query": f"how do I trim a sail in wind number {i}", "positive": f"Sail trim guide {i}: ease the sheet",
         "negative": f"A recipe for bread number {i}", "task": "Retrieve a sailing guide", "kind": "retrieval"}
        for i in range(8)]


@pytest.fixture
def lora_calls(monkeypatch):
    import speed.train.embedder as trainer

    calls, real = [], trainer.add_lora
    monkeypatch.setattr(trainer, "add_lora", lambda model, hp: calls.append(hp["lora_r"]) or real(model, hp))
    return calls


def _decoder_embedder(path: str) -> None:
    from sentence_transformers import SentenceTransformer

    info = json.loads((Path(path) / "speed_embedder.json").read_text())
    assert info["family"] == "decoder" and info["pooling"] == "lasttoken" and info["eos_appended"] is True
    model = SentenceTransformer(path, device="cpu")
    assert "lasttoken" in str(model) and not (Path(path) / "adapter_config.json").exists()  # LoRA merged
    feats = model.preprocess(["hello world", "a longer sentence than the first one"])
    for ids, mask in zip(feats["input_ids"], feats["attention_mask"]):
        assert ids[int(mask.sum()) - 1].item() == model.tokenizer.eos_token_id


def test_scaling_trains_a_decoder_as_the_pipeline_does(tmp_path, lora_calls):
    from speed.analysis.scaling import TrainSettings, train_embedder_subset

    path = train_embedder_subset("smollm2-135m-instruct", ROWS, tmp_path / "n8",
                                 TrainSettings(batch_size=4, max_seq_length=24))
    assert lora_calls == [16]  # the stage's lora_r default
    _decoder_embedder(path)


def test_compare_downstream_trains_a_decoder_as_the_pipeline_does(tmp_path, lora_calls):
    from speed.analysis.compare import CompareSettings, Variant, _downstream
    from speed.config import ModelRef

    rows = [{"variant": "v", "prompt_id": f"p{i}", "kind": "retrieval", "task": r["task"], "topic": "Sailing",
             "attributes": {}, "length_ok": {}, "valid": True,
             "fields": {"user_query": r["query"], "positive_document": r["positive"],
                        "hard_negative_document": r["negative"]}} for i, r in enumerate(ROWS)]
    settings = CompareSettings(reference_embedder="smollm2-135m-instruct", downstream_tasks=[str(FIX / "TinySTS")])
    res = _downstream(Variant("v", ModelRef(model="smollm2-135m-instruct")), rows, settings, tmp_path)
    assert lora_calls == [16] and res["examples"] == 8 and set(res["scores"]) == {"TinySTS"}
    _decoder_embedder(str(tmp_path / "models" / "v" / "model"))
