"""A full disk and an unwritable run directory, simulated inside a real ``speed run`` subprocess.

The run directory holds a done topics + brainstorm run (teacher: a loopback OpenAI-compatible
server). A rerun with a changed brainstorm config meets ENOSPC / EACCES / EROFS at one file
(``os.fsync`` or ``tempfile.mkstemp`` fails for paths matching ``FAULT_AT``; for the request cache,
SQLite reports a full disk). Each must end with one line naming the file, exit 2, no traceback, no
temp file left, a manifest that still reads, and the done topics stage untouched; a fault at the
first write leaves every file as it was. Without the fault, the same command then completes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap

import pytest

from fake_openai import FakeOpenAI
from speed.runtime.rundir import RunDir

WRAPPER = textwrap.dedent("""
    import errno, os, sys, tempfile
    pat, code, op = os.environ["FAULT_AT"], getattr(errno, os.environ["FAULT_ERRNO"]), os.environ["FAULT_OP"]
    if op == "fsync":
        real = os.fsync
        def fsync(fd):
            try:
                name = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                name = ""
            if pat in name:
                raise OSError(code, os.strerror(code))
            return real(fd)
        os.fsync = fsync
    elif op == "mkstemp":
        real_mk = tempfile.mkstemp
        def mkstemp(suffix=None, prefix=None, dir=None, text=False):
            if pat in (prefix or ""):
                raise OSError(code, os.strerror(code), os.path.join(dir or "", prefix or ""))
            return real_mk(suffix=suffix, prefix=prefix, dir=dir, text=text)
        tempfile.mkstemp = mkstemp
    elif op == "sqlite":
        import sqlite3
        from speed.llm.cache import RequestCache
        def put_many(self, items):
            raise sqlite3.OperationalError("database or disk is full")
        RequestCache.put_many = put_many
    from speed.cli.main import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.fixture(scope="module")
def done_run(tmp_path_factory):
    """A done topics + brainstorm run directory, and the command that reruns it with a change."""
    base = tmp_path_factory.mktemp("disk")
    (base / "topics.txt").write_text("Gardening\nAstronomy\nBeekeeping\n")
    with FakeOpenAI() as server:
        cfg = base / "run.yaml"
        cfg.write_text(f"""
run: {{name: disk, until: brainstorm}}
models:
  teacher: {{backend: openai, model: fake, base_url: '{server.url}', max_retries: 0}}
topics: {{source: 'paths:{base / "topics.txt"}', count: 3}}
brainstorm: {{kinds: [retrieval, classification], shard_size: 2}}
""")
        (base / "wrapper.py").write_text(WRAPPER)
        run_dir = base / "done"
        proc = subprocess.run([sys.executable, "-m", "speed", "run", str(cfg), "--run-dir", str(run_dir)],
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr
        yield {"base": base, "cfg": cfg, "run_dir": run_dir, "server": server}


def _snapshot(run_dir):
    return {p.relative_to(run_dir): p.read_bytes() for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}


def _run(done, run_dir, env_extra=None):
    import os

    env = {**os.environ, **(env_extra or {})}
    entry = [str(done["base"] / "wrapper.py")] if env_extra else ["-m", "speed"]
    cmd = [sys.executable, *entry, "run"]
    cmd += [str(done["cfg"]), "--run-dir", str(run_dir), "--set", "brainstorm.tasks_asked=6"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


CASES = [
    # (op, FAULT_AT, errno, the file the message names, everything unchanged?)
    ("fsync", "config.yaml", "ENOSPC", "config.yaml", True),
    ("mkstemp", "config.yaml", "EACCES", "config.yaml", True),
    ("mkstemp", "config.yaml", "EROFS", "config.yaml", True),
    ("fsync", "manifest.json", "ENOSPC", "manifest.json", False),
    ("fsync", "ledger.jsonl", "ENOSPC", "ledger.jsonl", False),
    ("mkstemp", "part-00001", "ENOSPC", "brainstorm/shards/part-00001.jsonl", False),
    ("fsync", "tasks.jsonl", "EDQUOT", "brainstorm/tasks.jsonl", False),
    ("sqlite", "-", "ENOSPC", "cache.sqlite", False),
]


@pytest.mark.parametrize("op,at,code,names,unchanged", CASES, ids=[f"{c[0]}-{c[1]}-{c[2]}" for c in CASES])
def test_write_fault_is_one_line_and_keeps_the_state(done_run, tmp_path, op, at, code, names, unchanged):
    run_dir = tmp_path / "run"
    shutil.copytree(done_run["run_dir"], run_dir)
    before = _snapshot(run_dir)
    manifest_before = RunDir(run_dir).read_manifest()
    proc = _run(done_run, run_dir, {"FAULT_AT": at, "FAULT_ERRNO": code, "FAULT_OP": op})
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert lines[0].startswith("speed: error: ") and "cannot write" in lines[0]
    assert str(run_dir / names) in lines[0], lines[0]
    after = _snapshot(run_dir)
    assert not [p for p in after if p.name.endswith(".tmp")], "a temp file was left behind"
    manifest = RunDir(run_dir).read_manifest()  # still valid: checksum intact
    assert manifest["stages"]["topics"] == manifest_before["stages"]["topics"]
    topics = [p for p in before if p.parts[0] == "topics"]
    assert topics and all(after[p] == before[p] for p in topics)
    if unchanged:
        assert after == before
    else:
        assert manifest["stages"]["brainstorm"]["status"] in ("running", "done")
    if op == "fsync" and at == "ledger.jsonl":  # the fault gone, the same command completes
        again = _run(done_run, run_dir)
        assert again.returncode == 0, again.stderr[-3000:]
        assert RunDir(run_dir).read_manifest()["stages"]["brainstorm"]["status"] == "done"
