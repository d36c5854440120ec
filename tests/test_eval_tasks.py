"""Task-folder reading and validation: valid folders load; malformed ones fail with file:line, exit 2."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from speed.errors import InputError
from speed.evaluate.tasks import TASK_TYPES, builtin_tasks, discover, load_task, load_tasks

FIX = Path(__file__).resolve().parent / "fixtures" / "eval"


def test_valid_fixtures_cover_every_type():
    tasks = load_tasks([FIX / "valid"])
    assert {t.type for t in tasks} == set(TASK_TYPES)
    by = {t.name: t for t in tasks}
    assert by["TinyClassification"].samples_per_label == 3  # task.json overrides the default
    r = by["TinyRetrieval"].data
    assert set(r["qrels"]) == {"q1", "q2", "q3"} and r["qrels"]["q3"] == {"d4": 1, "d5": 0}
    assert by["TinySTS"].instruction == "Retrieve semantically similar text."


def test_builtin_tasks_are_the_two_licensed_ones():
    names = sorted(load_task(p).name for p in builtin_tasks())
    assert names == ["Banking77Classification", "STSBenchmark"]
    for p in builtin_tasks():
        assert (p / "SOURCE.md").is_file()


def test_samples_per_label_defaults_follow_mteb(tmp_path):
    import json

    d = tmp_path / "AmazonCounterfactualClassification"
    d.mkdir()
    (d / "task.json").write_text(json.dumps({"name": d.name, "type": "classification"}))
    (d / "train.jsonl").write_text('{"text": "a", "label": 0}\n{"text": "b", "label": 1}\n')
    (d / "test.jsonl").write_text('{"text": "a", "label": 0}\n')
    assert load_task(d).samples_per_label == 32
    assert load_task(FIX / "valid" / "TinyClassification").n_experiments == 10


@pytest.mark.parametrize("folder, expected", [
    ("MissingFile", "MissingFile/test.jsonl: file not found"),
    ("BadJson", "BadJson/test.jsonl:3: not valid JSON"),
    ("UnknownType", "UnknownType/task.json:3: unknown task type 'summarization'"),
    ("UnknownDoc", "UnknownDoc/qrels/test.tsv:3: unknown document 'd9'"),
    ("MissingField", "MissingField/train.jsonl:3: missing field 'text'"),
    ("BrokenTaskJson", "BrokenTaskJson/task.json:4: not valid JSON"),
])
def test_malformed_folders_name_file_and_line(folder, expected):
    with pytest.raises(InputError) as exc:
        load_task(FIX / "bad" / folder)
    msg = str(exc.value)
    assert expected in msg, msg
    assert "\n" not in msg


def test_folder_of_tasks_with_a_folder_missing_task_json():
    with pytest.raises(InputError, match="NoTaskJson/task.json: file not found"):
        discover([FIX / "bad"])
    with pytest.raises(InputError, match="no such task folder"):
        discover([FIX / "nope"])


def test_cli_rejects_a_malformed_folder_with_exit_2():
    proc = subprocess.run([sys.executable, "-m", "speed.cli.eval_commands", "eval", "--model", "all-minilm-l6-v2",
                           "--tasks", str(FIX / "valid" / "TinySTS"), str(FIX / "bad" / "UnknownDoc")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "qrels/test.tsv:3: unknown document 'd9'" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_mteb_offline_is_one_line_exit_2():
    proc = subprocess.run([sys.executable, "-m", "speed.cli.eval_commands", "eval", "--model", "all-minilm-l6-v2",
                           "--mteb", "STSBenchmark"], capture_output=True, text=True, timeout=120,
                          env={**__import__("os").environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "not reachable" in proc.stderr


def test_builtin_task_names():
    from speed.errors import InputError
    from speed.evaluate.tasks import builtin_dir, discover

    assert discover(["builtin:STSBenchmark"]) == [builtin_dir() / "STSBenchmark"]
    with pytest.raises(InputError, match="builtin:Nope: no such built-in task"):
        discover(["builtin:Nope"])
