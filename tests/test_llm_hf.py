"""The hf backend (transformers, SmolLM2 folder): batched, left-padded, n samples per prompt."""

from __future__ import annotations

import pytest

from speed.runtime.config import ModelRef
from speed.llm import LLMClient, Ledger, Request, SamplingParams
from speed.llm.ledger import iter_ledger

pytest.importorskip("transformers")


def test_batched_generation_left_padding(smollm2_hf, tmp_path):
    from speed.llm.backends.hf_backend import HFBackend

    ref = ModelRef(backend="hf", model="smollm2-135m-instruct", n_threads=2, batch_size=4)
    be = HFBackend(ref)
    assert be.tok.padding_side == "left"
    ledger = Ledger(tmp_path / "ledger.jsonl")
    client = LLMClient(ref, "junior", "root", ledger=ledger, backend=be)
    reqs = [
        Request([{"role": "user", "content": "Hi"}], SamplingParams(temperature=1.0, max_tokens=6), seed=1, n=2),
        Request([{"role": "user", "content": "Please write one long sentence about the history of the sea."}],
                SamplingParams(temperature=1.0, max_tokens=6), seed=2, n=1),
        Request([{"role": "user", "content": "What is the capital of France?"}],
                SamplingParams(temperature=0.0, max_tokens=6), seed=3, n=1),
    ]
    out = client.generate(reqs)
    assert [len(r) for r in out] == [2, 1, 1]
    assert [c.index for c in out[0]] == [0, 1]
    for row in out:
        for c in row:
            assert c.ok and c.text.strip() and 0 < c.completion_tokens <= 6 and c.finish_reason in ("stop", "length")
    # prompt tokens are the unpadded lengths: the short prompt counts fewer than the long one
    assert out[0][0].prompt_tokens == out[0][1].prompt_tokens < out[1][0].prompt_tokens
    # greedy output with left padding equals the same prompt generated alone (padding is masked)
    alone = be._batch([(_breq(reqs[2]), None)])[0]
    assert alone.text == out[2][0].text
    assert len(list(iter_ledger(ledger.path))) == 4


def _breq(r):
    from speed.llm.backends.base import BackendRequest

    return BackendRequest(r.messages, r.sampling, r.seed, (0,))
