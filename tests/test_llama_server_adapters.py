"""One llama-server per base model, adapters picked per request: a sample depends on its own adapter only.

A random LoRA adapter for SmolLM2-135M (strong enough to change every greedy answer) is loaded next
to the base on one server. Greedy answers are compared across the order of requests (base, adapter,
base, adapter on one slot with prompt caching on: llama.cpp must not reuse the adapter's KV for the
base request) and against servers that hold only the base, or only the adapter.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from speed.runtime.config import ModelRef
from speed.errors import SpeedError
from speed.llm import llama_server
from speed.llm.backends import make_backend
from speed.llm.backends.base import BackendRequest, SamplingParams

pytest.importorskip("llama_cpp")

N_LAYER, D_MODEL, RANK = 30, 576, 4  # SmolLM2-135M


def random_adapter(path, seed: int = 0):
    import gguf

    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_string("general.type", "adapter")
    w.add_string("adapter.type", "lora")
    w.add_float32("adapter.lora.alpha", float(RANK))
    for i in range(N_LAYER):
        w.add_tensor(f"blk.{i}.attn_q.weight.lora_a", rng.normal(0, 0.3, (RANK, D_MODEL)).astype(np.float32))
        w.add_tensor(f"blk.{i}.attn_q.weight.lora_b", rng.normal(0, 0.3, (D_MODEL, RANK)).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


@pytest.fixture
def refs(tmp_path):
    try:
        llama_server.find_binary()
    except SpeedError as exc:
        pytest.skip(str(exc))
    llama_server.set_log_dir(tmp_path / "logs")
    base = ModelRef(backend="llamacpp", model="smollm2-135m-instruct", n_threads=2, slots=1, n_ctx=1024)
    yield base, dataclasses.replace(base, adapter=str(random_adapter(tmp_path / "lora.gguf")))
    llama_server.set_log_dir(None)


REQ = BackendRequest(messages=[{"role": "user", "content": "Write one sentence about the sea, in JSON."}],
                     sampling=SamplingParams(temperature=0.0, max_tokens=24), seed=1, indices=(0,))


def _text(backend) -> str:
    (c,), = backend.generate([REQ])
    assert c.ok, c.error
    return c.text


def test_adapters_share_one_server_and_each_sample_depends_on_its_own_adapter(refs):
    from speed.llm.backends.llamacpp_server_backend import server_spec

    base_ref, lora_ref = refs
    with llama_server.hold([server_spec(base_ref)[0], server_spec(lora_ref)[0]]) as held:
        assert len(held) == 1 and len(held[0].spec.adapters) == 1  # one server for the base and its adapter
        base, lora = make_backend(base_ref), make_backend(lora_ref)
        assert base.server is lora.server is held[0]
        order = [_text(base), _text(lora), _text(base), _text(lora)]
        base.close()
        lora.close()
        assert llama_server.running() == held  # held until the block ends
    assert llama_server.running() == []
    assert order[0] != order[1]  # the adapter changes the answer
    assert order[2] == order[0] and order[3] == order[1]  # no KV of one adapter reaches the other's request

    # the same answers from servers that hold only the base, or only the adapter
    only_base = make_backend(base_ref)
    assert only_base.server.spec.adapters == () and _text(only_base) == order[0]
    only_base.close()
    only_lora = make_backend(lora_ref)
    assert _text(only_lora) == order[1]
    only_lora.close()
    assert llama_server.running() == []


def test_a_new_adapter_while_a_server_is_in_use_gets_a_server_with_both(refs, tmp_path):
    base_ref, lora_ref = refs
    base = make_backend(base_ref)
    lora = make_backend(lora_ref)  # the base's server is busy: a new one with the adapter starts
    assert lora.server is not base.server and lora.server.spec.adapters == (lora_ref.adapter,)
    again = make_backend(base_ref)  # now served by the newer server, which has the base too
    assert again.server is lora.server
    for b in (base, lora, again):
        b.close()
    assert llama_server.running() == []
