"""The llamacpp backend (in-process, SmolLM2 GGUF): a rerun of the same batch costs nothing."""

from __future__ import annotations

import random

import pytest

from speed.runtime.config import ModelRef
from speed.llm import LLMClient, Ledger, Request, RequestCache, SamplingParams
from speed.llm.ledger import iter_ledger, summarize, totals
from speed.prompts import example_schema, synthesis_prompt

pytest.importorskip("llama_cpp")


@pytest.fixture(scope="module")
def llamacpp_backend(smollm2_gguf):
    from speed.llm.backends.llamacpp_backend import LlamaCppBackend

    # one thread: llama.cpp's spinning threads degrade badly on a shared, oversubscribed CPU
    be = LlamaCppBackend(ModelRef(backend="llamacpp", model="smollm2-135m-instruct", n_threads=1, n_ctx=2048))
    yield be
    be.close()


def _requests():
    prompts = ["Name a colour.", "Write a JSON object with one key.", "Give a city in Spain."]
    return [Request([{"role": "user", "content": p}], SamplingParams(temperature=1.0, max_tokens=12), seed=100 + i,
                    n=2) for i, p in enumerate(prompts)]


def test_rerun_is_all_cache_hits(llamacpp_backend, tmp_path):
    ref = ModelRef(backend="llamacpp", model="smollm2-135m-instruct", n_threads=2, batch_size=4)
    cache_path, ledger = tmp_path / "cache.sqlite", Ledger(tmp_path / "ledger.jsonl")
    first = LLMClient(ref, "junior", "root", RequestCache(cache_path), ledger, backend=llamacpp_backend)
    out1 = first.generate(_requests())
    assert first.calls == 6
    assert all(c.ok and c.completion_tokens > 0 and c.prompt_tokens > 10 for r in out1 for c in r)
    assert len({c.text for r in out1 for c in r}) > 1

    class NoCalls:
        name, preferred_batch = "none", 4

        def generate(self, requests):
            raise AssertionError("the second run must not call the model")

        def close(self):
            pass

    second = LLMClient(ref, "junior", "root", RequestCache(cache_path), ledger, backend=NoCalls())
    out2 = second.generate(_requests())
    assert second.calls == 0
    assert [[(c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens) for c in r] for r in out2] == \
        [[(c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens) for c in r] for r in out1]
    rows = list(iter_ledger(ledger.path))
    assert len(rows) == 12 and [r["cache_hit"] for r in rows] == [False] * 6 + [True] * 6
    s = totals(summarize(rows))
    assert s["calls"] == 6 and s["cache_hits"] == 6
    # hits keep the original token counts
    assert sum(r["completion_tokens"] for r in rows[6:]) == sum(r["completion_tokens"] for r in rows[:6])


def test_same_seed_same_sample_without_cache(llamacpp_backend):
    ref = ModelRef(backend="llamacpp", model="smollm2-135m-instruct")
    client = LLMClient(ref, "junior", "root", backend=llamacpp_backend)
    req = _requests()[1]
    req.n = 2
    a = client.generate([req])[0]
    b = client.generate([Request(req.messages, req.sampling, seed=req.seed, n=2)])[0]
    assert [c.text for c in a] == [c.text for c in b]


def test_json_mode_gives_the_keys(llamacpp_backend):
    ref = ModelRef(backend="llamacpp", model="smollm2-135m-instruct", json_mode=True)
    client = LLMClient(ref, "junior", "root", backend=llamacpp_backend)
    p = synthesis_prompt("short-short", "Given an idiom, find a phrase with the same meaning.", "Language",
                         random.Random(0))
    (c,), = client.generate([Request(p.messages, SamplingParams(temperature=0.7, max_tokens=40), seed=1,
                                     json_schema=example_schema("short-short"))])
    assert c.ok
    if c.finish_reason == "stop":
        import json

        assert set(json.loads(c.text)) == {"input", "positive_document"}


def test_prompt_too_long_is_an_error_not_a_raise(llamacpp_backend):
    ref = ModelRef(backend="llamacpp", model="smollm2-135m-instruct")
    client = LLMClient(ref, "junior", "root", backend=llamacpp_backend)
    huge = Request([{"role": "user", "content": "word " * 2100}], SamplingParams(max_tokens=4), seed=1)
    fine = Request([{"role": "user", "content": "Hi"}], SamplingParams(max_tokens=4), seed=1)
    out = client.generate([huge, fine])
    assert out[0][0].error and out[1][0].ok
