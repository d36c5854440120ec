"""LLMClient control flow with a scripted backend: cache keys, partial hits, order, errors, ledger."""

from __future__ import annotations

import threading

import pytest

from speed.runtime.config import ModelRef
from speed.llm import LLMClient, Ledger, Request, RequestCache, SamplingParams
from speed.llm.backends.base import Completion, sample_seed
from speed.llm.cache import model_identity
from speed.llm.ledger import iter_ledger, summarize, totals


class ScriptedBackend:
    """Echoes (prompt, seed); fails any request whose prompt contains 'FAIL'."""

    name = "scripted"

    def __init__(self, preferred_batch=3):
        self.preferred_batch = preferred_batch
        self.calls = []

    def generate(self, requests):
        out = []
        for r in requests:
            self.calls.append((r.messages[0]["content"], r.indices))
            row = []
            for i, seed in zip(r.indices, r.seeds()):
                if "FAIL" in r.messages[0]["content"]:
                    row.append(Completion(error="HTTP 500: boom", attempts=3, index=i))
                else:
                    row.append(Completion(text=f"{r.messages[0]['content']}|{seed}", finish_reason="stop",
                                          prompt_tokens=10, completion_tokens=5, latency_s=0.01, index=i))
            out.append(row)
        return out

    def close(self):
        pass


def _ref(**kw):
    kw = {"backend": "openai", "model": "served-model", "base_url": "http://127.0.0.1:1/v1", **kw}
    return ModelRef(**kw)


def _req(text, n=1, seed=1, **kw):
    return Request([{"role": "user", "content": text}], SamplingParams(temperature=1.0, max_tokens=8), seed=seed, n=n,
                   **kw)


def test_order_samples_partial_hits_and_ledger(tmp_path):
    cache = RequestCache(tmp_path / "cache.sqlite")
    ledger = Ledger(tmp_path / "ledger.jsonl")
    be = ScriptedBackend()
    client = LLMClient(_ref(), "junior", "root", cache, ledger, backend=be)
    reqs = [_req("a", n=3, seed=7), _req("b", n=1, seed=8), _req("c FAIL", n=2, seed=9)]
    out = client.generate(reqs)
    assert [len(o) for o in out] == [3, 1, 2]
    assert [c.text for c in out[0]] == [f"a|{sample_seed(7, i)}" for i in range(3)]
    assert [c.index for c in out[0]] == [0, 1, 2]
    assert all(c.error == "HTTP 500: boom" for c in out[2])
    rows = list(iter_ledger(ledger.path))
    assert len(rows) == 6 and sum(r["error"] is not None for r in rows) == 2
    assert all(r["stage"] == "root" and r["role"] == "junior" and r["model"] == "served-model" for r in rows)
    # the second run: a has more samples now (n=4); only sample 3 and the failures are new calls
    be.calls.clear()
    reqs2 = [_req("a", n=4, seed=7), _req("b", n=1, seed=8), _req("c FAIL", n=2, seed=9)]
    out2 = client.generate(reqs2)
    assert [c.text for c in out2[0][:3]] == [c.text for c in out[0]]
    assert [c.cache_hit for c in out2[0]] == [True, True, True, False]
    assert out2[1][0].cache_hit and not out2[2][0].cache_hit  # failures are never cached
    assert sorted(be.calls) == [("a", (3,)), ("c FAIL", (0, 1))]
    s = totals(summarize(iter_ledger(ledger.path)))
    assert s["requests"] == 6 + 7 and s["cache_hits"] == 4 and s["calls"] == 9 and s["errors"] == 4
    assert s["retries"] == 4 * 2
    # hits carry the original token counts
    hit_rows = [r for r in iter_ledger(ledger.path) if r["cache_hit"]]
    assert all(r["prompt_tokens"] == 10 and r["completion_tokens"] == 5 for r in hit_rows)


def test_key_depends_on_everything_that_changes_output(tmp_path):
    c = LLMClient(_ref(), "teacher", "judge", backend=ScriptedBackend())
    base = _req("x", seed=1)
    k = c.key(base, 0)
    assert k == c.key(_req("x", seed=1), 0)
    assert k != c.key(base, 1)
    assert k != c.key(_req("x", seed=2), 0)
    assert k != c.key(_req("y", seed=1), 0)
    assert k != c.key(Request(base.messages, SamplingParams(temperature=0.5, max_tokens=8), seed=1), 0)
    assert k != c.key(Request(base.messages, SamplingParams(temperature=1.0, max_tokens=9), seed=1), 0)
    c2 = LLMClient(_ref(model="other"), "teacher", "judge", backend=ScriptedBackend())
    assert k != c2.key(base, 0)
    # json_mode changes the key only when on
    schema = {"type": "object"}
    assert c.key(_req("x", seed=1, json_schema=schema), 0) == k
    cj = LLMClient(_ref(json_mode=True), "teacher", "judge", backend=ScriptedBackend())
    assert cj.key(_req("x", seed=1, json_schema=schema), 0) != k
    # the base URL list, concurrency and timeouts do not change the identity
    c3 = LLMClient(_ref(max_concurrency=2, timeout_s=3), "teacher", "judge", backend=ScriptedBackend())
    c3.ref.base_url = ["http://127.0.0.1:2/v1", "http://127.0.0.1:3/v1"]
    assert c3.key(base, 0) == k
    # meta is not hashed
    assert c.key(_req("x", seed=1, meta={"id": 5}), 0) == k


def test_offline_identity_is_backend_independent():
    a = model_identity(ModelRef(backend="llamacpp", model="smollm2-135m-instruct"))
    b = model_identity(ModelRef(backend="hf", model="smollm2-135m-instruct"))
    assert a == b and a.startswith("sha256:")
    assert model_identity(ModelRef(backend="openai", model="m", base_url="http://x",
                                   options={"model_identity": a})) == a


def test_file_identity_equals_pinned_sha(smollm2_gguf):
    a = model_identity(ModelRef(backend="llamacpp", model=smollm2_gguf))
    assert a == model_identity(ModelRef(backend="llamacpp", model="smollm2-135m-instruct"))


def test_backend_exception_becomes_error_completions(tmp_path):
    class Broken(ScriptedBackend):
        def generate(self, requests):
            raise RuntimeError("engine died")

    ledger = Ledger(tmp_path / "l.jsonl")
    out = LLMClient(_ref(), "senior", "synthesize", RequestCache(tmp_path / "c.sqlite"), ledger,
                    backend=Broken()).generate([_req("a", n=2), _req("b")])
    assert [[c.error for c in row] for row in out] == [["RuntimeError: engine died"] * 2, ["RuntimeError: engine died"]]
    assert len(list(iter_ledger(ledger.path))) == 3


def test_cache_threads_and_persistence(tmp_path):
    path = tmp_path / "c.sqlite"
    cache = RequestCache(path)

    def writer(t):
        cache.put_many([(f"k{t}-{i}", "m", {"text": f"{t}-{i}"}) for i in range(50)])
        assert cache.get(f"k{t}-3") == {"text": f"{t}-3"}

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(cache) == 400
    cache.close()
    again = RequestCache(path)
    assert again.get("k7-49") == {"text": "7-49"} and again.get("nope") is None
    assert len(again.get_many([f"k1-{i}" for i in range(50)] + ["x"])) == 50
    assert again._conn().execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_no_cache_no_ledger_is_fine():
    out = LLMClient(_ref(), "teacher", "brainstorm", backend=ScriptedBackend()).generate([_req("q", n=2)])
    assert len(out[0]) == 2 and not out[0][0].cache_hit


def test_speed_errors_propagate():
    from speed.errors import ModelError

    class Missing(ScriptedBackend):
        def generate(self, requests):
            raise ModelError("model gone")

    with pytest.raises(ModelError):
        LLMClient(_ref(), "teacher", "judge", backend=Missing()).generate([_req("q")])


class StreamingBackend(ScriptedBackend):
    """Hands back its samples one by one through ``as_completed`` (as the openai backend does),
    after ``fail_after`` of them raises ``exc`` (None: never)."""

    def __init__(self, fail_after=None, exc=None, on_group=None):
        super().__init__()
        self.fail_after, self.exc, self.on_group = fail_after, exc, on_group

    def as_completed(self, requests):
        rows = self.generate(requests)
        sent = 0
        for pos, row in reversed(list(enumerate(rows))):  # not in request order
            for k, c in enumerate(row):
                if self.fail_after is not None and sent == self.fail_after:
                    raise self.exc
                if self.on_group:
                    self.on_group(sent)
                yield [(pos, k, c)]
                sent += 1


def test_streamed_answers_are_cached_one_by_one_in_their_slots(tmp_path):
    cache, ledger = RequestCache(tmp_path / "c.sqlite"), Ledger(tmp_path / "l.jsonl")
    seen = []
    be = StreamingBackend(on_group=lambda sent: seen.append((sent, len(cache), len(list(iter_ledger(ledger.path))))))
    client = LLMClient(_ref(), "senior", "synthesize", cache, ledger, backend=be)
    reqs = [_req("a", n=2, seed=1), _req("b", seed=2), _req("c FAIL", seed=3)]
    out = client.generate(reqs)
    assert [[c.text for c in row] for row in out] == [[f"a|{sample_seed(1, 0)}", f"a|{sample_seed(1, 1)}"],
                                                      [f"b|{sample_seed(2, 0)}"], [""]]
    assert out[2][0].error == "HTTP 500: boom"
    # before the k-th answer is handed over, the k before it are in the ledger (failures are not cached)
    assert [s for s, _, _ in seen] == [0, 1, 2, 3] and [n for _, _, n in seen] == [0, 1, 2, 3]
    assert [c for _, c, _ in seen] == [0, 0, 1, 2] and len(cache) == 3 and client.calls == 4


def test_a_broken_stream_keeps_what_arrived_and_fails_the_rest(tmp_path):
    from speed.errors import ModelError

    cache, ledger = RequestCache(tmp_path / "c.sqlite"), Ledger(tmp_path / "l.jsonl")
    reqs = [_req("a", seed=1), _req("b", n=2, seed=2)]
    out = LLMClient(_ref(), "senior", "synthesize", cache, ledger,
                    backend=StreamingBackend(fail_after=1, exc=RuntimeError("stream cut"))).generate(reqs)
    assert out[1][0].text == f"b|{sample_seed(2, 0)}" and out[1][0].ok  # arrived first: kept and cached
    assert [out[0][0].error, out[1][1].error] == ["RuntimeError: stream cut"] * 2
    assert len(cache) == 1 and len(list(iter_ledger(ledger.path))) == 3
    # a stage-stopping error propagates, with what arrived before it already kept
    cache2, ledger2 = RequestCache(tmp_path / "c2.sqlite"), Ledger(tmp_path / "l2.jsonl")
    with pytest.raises(ModelError):
        LLMClient(_ref(), "senior", "synthesize", cache2, ledger2,
                  backend=StreamingBackend(fail_after=2, exc=ModelError("wrong key"))).generate(reqs)
    assert len(cache2) == 2 and len(list(iter_ledger(ledger2.path))) == 2
