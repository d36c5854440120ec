"""A new stage is one new module plus its place in the order (issue #15).

The test copies the ``speed`` package, adds ``stages/hello.py`` (its declaration: reads the topics,
writes a greeting per topic, has a config section and a summary hook) and the name ``hello`` after
``topics`` in ``STAGE_ORDER``, and runs the copy: ``speed run --dry-run``, ``speed run`` and
``speed status`` all know the stage, and no other file of the package differs from the original.
"""

from __future__ import annotations

import filecmp
import json
import os
import shutil
from pathlib import Path

import speed
from conftest import run_cli

HELLO = '''"""Stage ``hello``: one greeting per sampled topic -> ``hello/greetings.jsonl``."""

from __future__ import annotations

from dataclasses import dataclass

from ..runtime.configschema import check
from . import Stage


@dataclass
class Config:
    greeting: str = "hello"

    def validate(self, where: str) -> None:
        check(bool(self.greeting), f"{where}.greeting", self.greeting, "must not be empty")


def run(ctx) -> None:
    rows = [{"id": t["id"], "text": f"{ctx.cfg.greeting}, {t['text']}"} for t in ctx.read_input("sampled-topics")]
    ctx.write_jsonl("greetings.jsonl", rows)
    ctx.counts["greetings"] = len(rows)


def summary(entry: dict, run_dir) -> list[str]:
    return [f"greetings written: {entry['counts']['greetings']}"]


STAGE = Stage("hello", Config, run, needs=("sampled-topics",), provides={"greetings": "greetings.jsonl"},
              summary=summary)
'''


def _differing(a: Path, b: Path) -> list[str]:
    """Files (relative paths) that differ between two trees, or exist in one only."""
    cmp = filecmp.dircmp(a, b, ignore=["__pycache__"])
    out = [str(Path(a.name) / n) for n in cmp.left_only + cmp.right_only + cmp.diff_files]
    for sub in cmp.common_dirs:
        out += [str(Path(a.name) / p) for p in _differing(a / sub, b / sub)]
    return out


def test_a_new_stage_in_one_module_runs_dry_runs_and_shows_in_status(tmp_path):
    original = Path(speed.__file__).parent
    copy = tmp_path / "src" / "speed"
    shutil.copytree(original, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "stages" / "hello.py").write_text(HELLO)
    order = copy / "stages" / "__init__.py"
    text = order.read_text()
    assert text.count('    "topics",\n') == 1
    order.write_text(text.replace('    "topics",\n', '    "topics",\n    "hello",\n'))
    changed = sorted(p.split("/", 1)[1] for p in _differing(original, copy))
    assert changed == ["stages/__init__.py", "stages/hello.py"]

    cfg = tmp_path / "hello.yaml"
    cfg.write_text("run: {name: hello, seed: 0}\ntopics: {source: 'builtin:iab-3.1', count: 3, max_depth: 3}\n"
                   "hello: {greeting: hi}\n")
    env = {"PYTHONPATH": str(tmp_path / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run_dir = tmp_path / "run"
    dry = run_cli("run", str(cfg), "--run-dir", str(run_dir), "--until", "hello", "--dry-run", "--json", env=env)
    assert dry.returncode == 0, dry.stderr
    assert [(r["stage"], r["action"]) for r in json.loads(dry.stdout)["stages"]] == [("topics", "run"), ("hello", "run")]
    assert not run_dir.exists()

    proc = run_cli("run", str(cfg), "--run-dir", str(run_dir), "--until", "hello", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "[hello] done" in proc.stdout and "greetings written: 3" in proc.stdout
    rows = [json.loads(line) for line in (run_dir / "hello" / "greetings.jsonl").read_text().splitlines()]
    topics = [json.loads(line) for line in (run_dir / "topics" / "topics.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == [f"hi, {t['text']}" for t in topics]

    st = run_cli("status", str(run_dir), "--json", env=env)
    assert st.returncode == 0, st.stderr
    hello = json.loads(st.stdout)["stages"]["hello"]
    assert hello["state"] == "done" and hello["rows"] == {"greetings.jsonl": 3} and hello["counts"]["greetings"] == 3
    again = run_cli("run", str(cfg), "--run-dir", str(run_dir), "--until", "hello", env=env)
    assert again.returncode == 0 and "[hello] done, skipped" in again.stdout
