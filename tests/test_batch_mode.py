"""``batch: true``: the openai backend through the Batch API (speed.llm.batch), against a local
files+batches server (tests/batch_server.py) whose model is a scripted chat server (fake_openai).

The end-to-end runs with a real model are in tests/test_batch_e2e.py.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from batch_server import BatchServer
from fake_openai import FakeOpenAI
from speed.errors import ConfigError, SpeedError
from speed.llm import LLMClient, Ledger, Request, RequestCache, SamplingParams
from speed.llm.batch import BatchJournal, split
from speed.llm.ledger import iter_ledger, summarize
from speed.runtime.config import ModelRef


def _answer(body: dict) -> str:
    """Depends on the whole request (prompt and seed): equal answers mean equal requests."""
    h = hashlib.sha256(json.dumps([body["messages"], body.get("seed"), body.get("temperature")], sort_keys=True).encode())
    return f"answer {h.hexdigest()[:10]}"


def _requests(n: int = 6, samples: int = 2) -> list[Request]:
    return [Request(messages=[{"role": "user", "content": f"question {i}"}], seed=100 + i, n=samples,
                    sampling=SamplingParams(temperature=0.7, max_tokens=16)) for i in range(n)]


def _client(tmp_path, url, batch=True, name="run", **options) -> LLMClient:
    ref = ModelRef(backend="openai", model="fake", base_url=url, max_retries=0, batch=batch,
                   options={"batch_poll_s": 0.02, **options})
    d = tmp_path / name
    return LLMClient(ref, role="teacher", stage="seed", cache=RequestCache(d / "cache.sqlite"),
                     ledger=Ledger(d / "ledger.jsonl"), show_progress=False)


def _texts(out) -> list[list[str]]:
    return [[c.text for c in row] for row in out]


def _ledger(tmp_path, name="run") -> list[dict]:
    return list(iter_ledger(tmp_path / name / "ledger.jsonl"))


def test_batch_gives_the_live_answers_counts_each_request_once_and_a_rerun_is_free(tmp_path):
    with FakeOpenAI(answer_request=_answer) as model, BatchServer(model.url) as server:
        live = _client(tmp_path, server.url, batch=False, name="live").generate(_requests())
        out = _client(tmp_path, server.url).generate(_requests())
        assert _texts(out) == _texts(live) and all(c.ok for row in out for c in row)
        assert server.live == 12 and len(server.created) == 1 and len(server.created[0]["keys"]) == 12
        rows = _ledger(tmp_path)
        assert len(rows) == 12 and all(r["batch"] == server.created[0]["id"] and not r["cache_hit"] for r in rows)
        assert summarize(rows)["teacher"]["fake"]["batch_calls"] == 12
        assert all(r["batch"] is None for r in _ledger(tmp_path, "live"))
        again = _client(tmp_path, server.url).generate(_requests())  # the rerun: all cached, nothing submitted
        assert _texts(again) == _texts(out) and len(server.created) == 1
        assert [r["cache_hit"] for r in _ledger(tmp_path)[12:]] == [True] * 12
        journal = list(BatchJournal(tmp_path / "run" / "batches.jsonl").rows())
        assert [r["event"] for r in journal] == ["submitted", "collected"]
        assert journal[1]["answered"] == 12 and journal[1]["unanswered"] == 0


def test_batches_are_split_at_the_request_and_byte_limits():
    lines = [(f"k{i}", b"x" * 10) for i in range(7)]
    parts, big = split(lines, max_requests=3, max_bytes=1000)
    assert [len(p) for p in parts] == [3, 3, 1] and big == []
    parts, big = split(lines + [("huge", b"y" * 50)], max_requests=100, max_bytes=35)
    assert [len(p) for p in parts] == [3, 3, 1] and big == ["huge"]


def test_a_client_over_the_request_limit_submits_several_batches(tmp_path):
    with FakeOpenAI(answer_request=_answer) as model, BatchServer(model.url) as server:
        out = _client(tmp_path, server.url, batch_max_requests=5).generate(_requests())
        assert [len(b["keys"]) for b in server.created] == [5, 5, 2]
        assert all(c.ok for row in out for c in row) and len(_ledger(tmp_path)) == 12


def test_an_expired_half_done_batch_resubmits_only_the_unanswered(tmp_path):
    with FakeOpenAI(answer_request=_answer) as model, BatchServer(model.url, expire_after=5) as server:
        out = _client(tmp_path, server.url).generate(_requests())
        first, second = server.created
        answered = {r["custom_id"] for r in _rows_of(server, first["id"], "output_file_id")}
        assert len(answered) == 5 and set(second["keys"]) == set(first["keys"]) - answered
        assert len(second["keys"]) == 7 and all(c.ok for row in out for c in row)
        rows = _ledger(tmp_path)
        assert len(rows) == 12 and {r["batch"] for r in rows} == {first["id"], second["id"]}


def _rows_of(server, bid, which):
    fid = server.batches[bid][which]
    return [json.loads(x) for x in server.files[fid].decode().splitlines()] if fid else []


def test_after_max_rounds_the_unanswered_are_reported_failed(tmp_path):
    with FakeOpenAI(answer_request=_answer) as model, BatchServer(model.url, expire_after=4) as server:
        out = _client(tmp_path, server.url, batch_max_rounds=1).generate(_requests(3))
        errs = [c.error for row in out for c in row if not c.ok]
        assert len(server.created) == 1 and len(errs) == 2 and all("expired: no answer after 1 batch" in e for e in errs)
        assert sum(1 for r in _ledger(tmp_path) if r["error"]) == 2


def test_a_rejected_line_is_failed_with_its_reason_and_asked_again_on_a_rerun(tmp_path):
    bad = "question 2"
    reject = (lambda body: "prompt flagged by the provider's policy" if bad in json.dumps(body["messages"]) else None)
    with FakeOpenAI(answer_request=_answer) as model, BatchServer(model.url, reject=reject) as server:
        out = _client(tmp_path, server.url).generate(_requests())
        errs = [c.error for c in out[2]]
        assert all("HTTP 400: prompt flagged by the provider's policy" in e for e in errs)
        assert all(c.ok for i, row in enumerate(out) if i != 2 for c in row)
        rows = _ledger(tmp_path)
        assert len(rows) == 12 and sum(1 for r in rows if r["error"]) == 2
        assert summarize(rows)["teacher"]["fake"]["errors"] == 2
        server.reject = None
        again = _client(tmp_path, server.url).generate(_requests())  # failures are not cached: only they are asked
        assert len(server.created) == 2 and len(server.created[1]["keys"]) == 2
        assert all(c.ok for row in again for c in row)


def test_killed_while_polling_the_rerun_collects_the_same_batch(tmp_path):
    with FakeOpenAI(answer_request=_answer) as model, BatchServer(model.url) as server:
        server.hold()
        client = _client(tmp_path, server.url)

        def killed(_s):
            raise KeyboardInterrupt

        import speed.llm.batch as batch_mod

        orig = batch_mod.BatchRunner.__init__

        def init(self, *a, **kw):
            orig(self, *a, **kw)
            self._sleep = killed

        batch_mod.BatchRunner.__init__ = init
        try:
            with pytest.raises(KeyboardInterrupt):
                client.generate(_requests())
        finally:
            batch_mod.BatchRunner.__init__ = orig
        assert len(server.created) == 1 and server.polls >= 1 and _ledger(tmp_path) == []
        server.release()
        out = _client(tmp_path, server.url).generate(_requests())
        assert len(server.created) == 1 and all(c.ok for row in out for c in row)
        assert len(_ledger(tmp_path)) == 12


def test_a_batch_created_just_before_a_kill_is_found_by_its_metadata(tmp_path, monkeypatch):
    with FakeOpenAI(answer_request=_answer) as model, BatchServer(model.url) as server:
        def lost(self, *a, **kw):  # killed between creating the batch and writing its id
            raise KeyboardInterrupt

        monkeypatch.setattr(BatchJournal, "submitted", lost)
        with pytest.raises(KeyboardInterrupt):
            _client(tmp_path, server.url).generate(_requests())
        monkeypatch.undo()
        assert len(server.created) == 1
        out = _client(tmp_path, server.url).generate(_requests())
        assert len(server.created) == 1 and all(c.ok for row in out for c in row)
        journal = list(BatchJournal(tmp_path / "run" / "batches.jsonl").rows())
        assert journal[0]["adopted"] is True and journal[0]["batch"] == server.created[0]["id"]


@pytest.mark.parametrize("fault, cause", [
    ({"key": "sk-right"}, "HTTP 401"),
    ({"quota": True}, "HTTP 429"),
    ({"max_bytes": 100}, "HTTP 400: The batch input file is larger"),
    ({"max_requests": 4}, "was refused: batch_too_large"),
])
def test_a_refused_batch_is_one_line_and_the_run_resumes(tmp_path, monkeypatch, fault, cause):
    monkeypatch.setenv("BATCH_KEY", "sk-wrong")
    with FakeOpenAI(answer_request=_answer) as model, BatchServer(model.url, **fault) as server:
        def client():
            c = _client(tmp_path, server.url)
            c.ref.api_key_env = "BATCH_KEY"
            return c

        with pytest.raises(SpeedError) as err:
            client().generate(_requests())
        msg = str(err.value)
        assert cause in msg and "\n" not in msg and "sk-wrong" not in msg and "rerun" in msg
        server.key, server.quota, server.max_bytes, server.max_requests = None, False, None, None
        before = len(server.created)
        out = client().generate(_requests())
        assert all(c.ok for row in out for c in row) and len(server.created) == before + 1
        assert len(_ledger(tmp_path)) == 12


def test_batch_is_only_for_the_openai_backend():
    with pytest.raises(ConfigError) as err:
        ModelRef(backend="llamacpp", model="smollm2-135m-instruct", batch=True).validate("models.teacher")
    assert "models.teacher.batch" in str(err.value)
    with pytest.raises(ConfigError) as err:
        ModelRef(backend="openai", model="m", base_url="http://x/v1", options={"batch_max_requests": 0}
                 ).validate("models.teacher")
    assert "models.teacher.options.batch_max_requests" in str(err.value)


def test_the_cost_report_prices_batch_calls_at_the_batch_rate(tmp_path):
    from speed.analysis.cost import PriceTable, cost_markdown, cost_report
    from speed.llm.ledger import UsageRecord

    led = Ledger(tmp_path / "ledger.jsonl")
    led.record_many([UsageRecord(stage="seed", role="teacher", model="gpt-4o", prompt_tokens=1_000_000,
                                 completion_tokens=100_000, batch="batch-1"),
                     UsageRecord(stage="judge", role="teacher", model="gpt-4o", prompt_tokens=1_000_000,
                                 completion_tokens=100_000)])
    rep = cost_report(tmp_path, examples=10)
    m = rep["by_model"][0]
    live = 2.5 + 1.0  # 1M prompt tokens at $2.50 + 0.1M completion tokens at $10
    assert m["batch_calls"] == 1 and m["usd"] == pytest.approx(live + live / 2)
    assert m["usd_live"] == pytest.approx(2 * live) and m["usd_batch"] == pytest.approx(live)
    assert "USD at batch price" in cost_markdown(rep)
    table = PriceTable.load(overrides={"my-model": {"prompt": 1.0, "completion": 2.0, "batch": [0.2, 0.4]}})
    assert table.batch_price("my-model") == (0.2, 0.4) and table.batch_price("gpt-4o") == (1.25, 5.0)


def test_dry_run_shows_the_batch_price_next_to_the_live_price(tmp_path):
    from conftest import ROOT, run_cli

    proc = run_cli("run", str(ROOT / "configs" / "smoke.yaml"), "--dry-run", "--json", "--run-dir", str(tmp_path / "r"),
                   "--set", "models.teacher.backend=openai", "--set", "models.teacher.model=gpt-4o",
                   "--set", "models.teacher.base_url=http://127.0.0.1:9/v1", "--set", "models.teacher.batch=true")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    seed = next(r["estimate"] for r in plan["stages"] if r["stage"] == "seed")
    assert seed["batch"] is True and seed["usd_batch"] == pytest.approx(seed["usd_live"] / 2, abs=0.01)
    assert seed["usd"] == seed["usd_batch"]
    assert plan["totals"]["usd_batch"] < plan["totals"]["usd_live"]
    text = run_cli("run", str(ROOT / "configs" / "smoke.yaml"), "--dry-run", "--run-dir", str(tmp_path / "r"),
                   "--set", "models.teacher.backend=openai", "--set", "models.teacher.model=gpt-4o",
                   "--set", "models.teacher.base_url=http://127.0.0.1:9/v1", "--set", "models.teacher.batch=true")
    assert "USD live" in text.stdout and "USD batch" in text.stdout and "(batch)" in text.stdout


def test_speed_run_with_a_refused_batch_exits_2_with_one_line_and_resumes(tmp_path):
    import yaml

    from conftest import ROOT, run_cli
    from fake_openai import brainstorm_answer

    with FakeOpenAI(brainstorm_answer) as model, BatchServer(model.url, quota=True) as server:
        cfg = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
        cfg["models"]["teacher"] = {"backend": "openai", "model": "fake", "base_url": server.url, "max_retries": 0,
                                    "batch": True, "options": {"batch_poll_s": 0.05}}
        path = tmp_path / "b.yaml"
        path.write_text(yaml.safe_dump(cfg))
        args = ("run", str(path), "--run-dir", str(tmp_path / "run"), "--until", "brainstorm")
        p = run_cli(*args)
        lines = [x for x in p.stderr.splitlines() if x.strip()]
        assert p.returncode == 2 and len(lines) == 1 and "HTTP 429" in lines[0] and "quota" in lines[0], p.stderr
        assert server.created == []
        server.quota = False
        p = run_cli(*args)
        assert p.returncode == 0, p.stderr[-2000:]
        assert len(server.created) == 1 and "submitted batch" in p.stdout
        rows = list(iter_ledger(tmp_path / "run" / "ledger.jsonl"))
        assert rows and all(r["batch"] == server.created[0]["id"] for r in rows)
