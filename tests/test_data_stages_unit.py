"""Control flow of the data stages with a scripted backend (unit tests; real models run in test_data_pipeline)."""

import json

import pytest

from speed.runtime.config import build_config
from speed.llm.backends.base import Completion
from speed.runtime.pipeline import Pipeline


class Scripted:
    """Answers each request with ``reply(messages, index)``; counts calls."""

    def __init__(self, reply):
        self.reply = reply
        self.calls = 0

    def generate(self, requests):
        out = []
        for r in requests:
            self.calls += len(r.indices)
            out.append([Completion(text=self.reply(r.messages, i), prompt_tokens=10, completion_tokens=5, index=i,
                                   finish_reason="stop") for i in r.indices])
        return out

    def close(self):
        pass


def reply(messages, index):
    text = messages[-1]["content"]
    if "Brainstorm" in text:
        return json.dumps([f"Find documents about subject {abs(hash(text)) % 97} angle {j}" for j in range(3)])
    if "outputs, numbered from 0" in text:
        return json.dumps({"reason": "first is best", "best": 0, "worst": 1})
    if "Evaluate the output" in text:
        return json.dumps({"reason": "fine", "revision": json.dumps(_example(text, 9))})
    return json.dumps(_example(text, index)) if index != 1 else "sorry, I cannot do that"


def _example(text, index):
    if '"S1"' in text:
        return {"S1": f"A cat sat {index}.", "S2": f"A cat was sitting {index}.", "S3": f"Stocks fell {index}."}
    if "input_text" in text:
        # long enough for any sampled length ("at least 200" words at most: too_short below half of it)
        return {"input_text": f"The movie was great {index}. " + "The plot was fine and the actors were good. " * 13,
                "label": "positive", "misleading_label": "negative"}
    if "user_query" in text:
        return {"user_query": f"what is x {index}", "positive_document": f"x is a letter {index}",
                "hard_negative_document": f"y is a letter {index}"}
    return {"input": f"hello {index}", "positive_document": f"hi there {index}"}


@pytest.fixture
def scripted(monkeypatch):
    backend = Scripted(reply)
    monkeypatch.setattr("speed.llm.backends.make_backend", lambda ref: backend)
    monkeypatch.setattr("speed.models.resolve.check_model_exists", lambda ref: None)  # the /fake/ models
    return backend


def _config(tmp_path):
    return build_config({
        "run": {"name": "unit", "until": "revise", "skip": ["train-junior", "train-senior", "train-revisor"]},
        "models": {r: {"model": f"/fake/{r}.gguf"} for r in ("teacher", "junior", "senior", "revisor")},
        "topics": {"count": 3}, "seed": {"count": 10}, "root": {"count": 6, "candidates_per_prompt": 3},
        "synthesize": {"count": 12, "shard_size": 5},
    })


def test_stages_keep_every_rejection_and_rerun_costs_nothing(tmp_path, scripted, monkeypatch):
    monkeypatch.setattr("speed.llm.cache.model_identity", lambda ref: ref.model, raising=False)
    monkeypatch.setattr("speed.llm.client.model_identity", lambda ref: ref.model)
    run_dir = tmp_path / "run"
    Pipeline(_config(tmp_path), run_dir).run(log=lambda *a: None)
    read = lambda p: [json.loads(line) for line in (run_dir / p).read_text().splitlines()]
    tasks = read("brainstorm/tasks.jsonl")
    assert len(tasks) == 3 * 4  # tasks_per_topic=1 for each (topic, kind)
    seed_sft = read("seed/sft.jsonl")
    assert len(seed_sft) == 10 and seed_sft[0]["prompt"][0]["role"] == "user"
    assert seed_sft[0]["completion"][0]["role"] == "assistant"
    roots = read("root/candidates.jsonl")
    assert len(roots) == 6 and all(len(r["candidates"]) == 3 for r in roots)
    assert all(not r["candidates"][1]["ok"] and r["candidates"][1]["raw"] == "sorry, I cannot do that" for r in roots)
    dpo = read("judge/dpo.jsonl")
    assert len(dpo) == 6 and all(d["rejected"][0]["content"] == "sorry, I cannot do that" for d in dpo)
    assert read("revise-signals/sft.jsonl")
    syn = read("synthesize/examples.jsonl")
    rej = read("synthesize/rejected.jsonl")
    assert len(syn) + len(rej) == 12 and len(syn) == 12  # sample index 0 only: all valid
    revised = read("revise/examples.jsonl")
    assert len(revised) == 12 and all(e["revised"] for e in revised)
    assert all(e["meta"]["original"] != e["fields"] for e in revised)
    calls = scripted.calls
    Pipeline(_config(tmp_path), run_dir, overwrite="always").run(log=lambda *a: None)
    assert scripted.calls == calls  # every request is a cache hit
    ledger = [json.loads(line) for line in (run_dir / "ledger.jsonl").read_text().splitlines()]
    assert sum(not r["cache_hit"] for r in ledger) == calls
    assert sum(r["cache_hit"] for r in ledger) == calls
