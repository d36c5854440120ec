"""The vllm backend (GPU only): generation, n samples, LoRA via LoRARequest, guided JSON."""

from __future__ import annotations

import json

import pytest

from speed.runtime.config import ModelRef
from speed.llm import LLMClient, Request, SamplingParams
from speed.prompts import example_schema

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def vllm_client(smollm2_hf):
    pytest.importorskip("vllm")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    ref = ModelRef(backend="vllm", model=smollm2_hf, n_ctx=2048, dtype="bfloat16",
                   options={"engine": {"gpu_memory_utilization": 0.3, "enforce_eager": True}})
    client = LLMClient(ref, "junior", "root")
    yield client
    client.close()


def test_vllm_generates_n_samples(vllm_client):
    reqs = [Request([{"role": "user", "content": "Name a fruit."}], SamplingParams(temperature=1.0, max_tokens=16),
                    seed=1, n=3),
            Request([{"role": "user", "content": "Say hi."}], SamplingParams(temperature=0.0, max_tokens=8), seed=2)]
    out = vllm_client.generate(reqs)
    assert [len(r) for r in out] == [3, 1]
    assert all(c.ok and c.prompt_tokens > 0 and c.completion_tokens > 0 for r in out for c in r)
    again = vllm_client.generate(reqs)  # per-sample seeds: the same texts
    assert [[c.text for c in r] for r in again] == [[c.text for c in r] for r in out]


def test_vllm_guided_json(vllm_client):
    vllm_client.ref.json_mode = True
    try:
        req = Request([{"role": "user", "content": "Write three sentences about cats as JSON."}],
                      SamplingParams(temperature=0.7, max_tokens=200), seed=3, json_schema=example_schema("sts"))
        (c,), = vllm_client.generate([req])
    finally:
        vllm_client.ref.json_mode = False
    assert c.ok
    if c.finish_reason == "stop":
        assert set(json.loads(c.text)) == {"S1", "S2", "S3"}


def test_vllm_lora_request(tmp_path, smollm2_hf):
    pytest.importorskip("vllm")
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(smollm2_hf)
    peft_model = get_peft_model(base, LoraConfig(r=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    peft_model.save_pretrained(tmp_path / "adapter")
    ref = ModelRef(backend="vllm", model=smollm2_hf, adapter=str(tmp_path / "adapter"), n_ctx=1024,
                   options={"engine": {"gpu_memory_utilization": 0.3, "enforce_eager": True}, "max_lora_rank": 8})
    client = LLMClient(ref, "senior", "synthesize")
    try:
        (c,), = client.generate([Request([{"role": "user", "content": "Hi"}], SamplingParams(max_tokens=8), seed=1)])
        assert c.ok and client.adapter_sha256
    finally:
        client.close()
