"""``batch: true`` end to end: configs/smoke.yaml's teacher (Qwen2.5-Coder-0.5B) served by a real
llama-server behind the local files+batches server (tests/batch_server.py), run by ``speed run``.

- the same export as live mode (the teacher through the same server's live chat endpoint), with the
  ledger counting each teacher request once and marking it batch (slow: make test-slow);
- killed (SIGKILL) while polling, the rerun collects the batch instead of submitting it again
  (the server counts submissions);
- a batch that expires half-done: only the unanswered requests are submitted again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import yaml

from batch_server import BatchServer
from conftest import ROOT, run_cli, serve_llama, wait_for
from speed.llm.ledger import iter_ledger
from speed.runtime.config import ModelRef
from speed.stages import artifact_path

TEACHER = "qwen2.5-coder-0.5b-instruct"


@pytest.fixture(scope="module")
def teacher_server(tmp_path_factory):
    """The smoke teacher on one llama-server slot without prompt cache (answers depend on the request alone)."""
    yield from serve_llama(ModelRef(backend="llamacpp", model=TEACHER, n_threads=2, n_ctx=4096, slots=1),
                           tmp_path_factory.mktemp("teacher-server"))


def _config(tmp_path, url: str, batch: bool, name: str) -> str:
    cfg = yaml.safe_load((ROOT / "configs" / "smoke.yaml").read_text())
    cfg["models"]["teacher"] = {"backend": "openai", "model": TEACHER, "base_url": url, "max_concurrency": 1,
                                "max_retries": 2, "batch": batch,
                                "options": {"extra_body": {"cache_prompt": False}, "batch_poll_s": 0.2}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _teacher_rows(run_dir) -> list[dict]:
    return [r for r in iter_ledger(run_dir / "ledger.jsonl") if r["role"] == "teacher"]


@pytest.mark.slow  # two smoke runs up to export (~7 min each here, uncontended): make test-slow
def test_batch_mode_gives_the_live_export_and_counts_each_request_once(tmp_path, teacher_server):
    with BatchServer(teacher_server) as server:
        live, batch = tmp_path / "live", tmp_path / "batch"
        p = run_cli("run", _config(tmp_path, server.url, False, "live"), "--run-dir", str(live), "--until", "export",
                    timeout=1500)
        assert p.returncode == 0, p.stderr[-3000:]
        assert server.created == [] and server.live > 0
        p = run_cli("run", _config(tmp_path, server.url, True, "batch"), "--run-dir", str(batch), "--until", "export",
                    timeout=1500)
        assert p.returncode == 0, p.stderr[-3000:]
        exported = artifact_path(batch, "training-data").read_text()
        assert exported and exported == artifact_path(live, "training-data").read_text()
        rows, live_rows = _teacher_rows(batch), _teacher_rows(live)
        keys = [k for b in server.created for k in b["keys"]]
        assert len(keys) == len(set(keys)) == len(rows) == len(live_rows) == server.answered
        assert all(r["batch"] in {b["id"] for b in server.created} and not r["cache_hit"] for r in rows)
        assert {r["stage"] for r in rows} == {"brainstorm", "seed", "judge", "revise-signals"}
        assert len(server.created) == 4  # one batch per teacher stage


def test_killed_while_polling_the_rerun_submits_nothing_twice(tmp_path, teacher_server):
    with BatchServer(teacher_server) as server:
        server.hold()  # the batch stays in progress: the run is polling when it is killed
        run_dir = tmp_path / "run"
        args = [sys.executable, "-m", "speed", "run", _config(tmp_path, server.url, True, "b"), "--run-dir",
                str(run_dir), "--until", "brainstorm"]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
        try:
            assert wait_for(lambda: len(server.created) == 1 and server.polls >= 3, timeout=300), proc.stderr
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        assert _teacher_rows(run_dir) == []
        server.release()
        p = run_cli("run", _config(tmp_path, server.url, True, "b"), "--run-dir", str(run_dir), "--until", "brainstorm")
        assert p.returncode == 0, p.stderr[-3000:]
        assert len(server.created) == 1  # the server's own count: collected, not submitted again
        rows = _teacher_rows(run_dir)
        assert len(rows) == len(server.created[0]["keys"]) == server.answered
        assert all(r["batch"] == server.created[0]["id"] for r in rows)


def test_an_expired_half_done_batch_resubmits_only_the_missing_requests(tmp_path, teacher_server):
    with BatchServer(teacher_server) as server:
        run_dir = tmp_path / "run"
        server.expire_after = 2
        p = run_cli("run", _config(tmp_path, server.url, True, "b"), "--run-dir", str(run_dir), "--until", "seed")
        assert p.returncode == 0, p.stderr[-3000:]
        first, second = server.created[:2]
        done = {r["custom_id"] for r in _output(server, first["id"])}
        assert len(done) == 2 and set(second["keys"]) == set(first["keys"]) - done
        rows = [r for r in _teacher_rows(run_dir) if r["stage"] == "brainstorm"]
        assert len(rows) == len(first["keys"]) and sorted(r["batch"] for r in rows).count(first["id"]) == 2
        assert server.batches[first["id"]]["status"] == "expired"


def _output(server, bid):
    import json

    fid = server.batches[bid]["output_file_id"]
    return [json.loads(x) for x in server.files[fid].decode().splitlines()] if fid else []
