"""Evaluation task folders (the format of ``shared/eval/README.md``): ``task.json`` (name, type, main_score, split,
language, instruction and its type's settings) and the data files of its type, which its ``TASK_TYPES`` entry reads
and validates. Every problem (a missing file, a broken JSON line, a missing or ill-typed field, an unknown type,
qrels naming an unknown document) is an ``InputError`` naming the file and line."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from .task_types import TASK_TYPES
from .task_types.classification import SAMPLES_PER_LABEL


@dataclass
class Task:
    name: str
    type: str
    main_score: str
    path: Path
    instruction: str | None = None
    split: str = "test"
    language: str = "en"
    meta: dict[str, Any] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def samples_per_label(self) -> int:
        return int(self.meta.get("samples_per_label") or SAMPLES_PER_LABEL.get(self.name, 8))

    @property
    def n_experiments(self) -> int:
        return int(self.meta.get("n_experiments") or 10)

    def size(self) -> dict[str, int]:
        return {k: len(v) for k, v in self.data.items() if isinstance(v, (list, dict))}


TYPE_KEY, INSTRUCTION_KEY = '"type"', '"instruction"'


def _line_of(text: str, needle: str) -> int:
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    return 1


def read_task_json(folder: Path) -> dict:
    path = folder / "task.json"
    if not path.is_file():
        raise InputError(f"{path}: file not found (a task folder needs task.json)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InputError(f"{path}:1: not UTF-8 text (task.json is a JSON object)") from None
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    if not isinstance(meta, dict):
        raise InputError(f"{path}:1: expected a JSON object")
    for key in ("name", "type"):
        if not isinstance(meta.get(key), str) or not meta.get(key):
            raise InputError(f"{path}:1: missing or empty key '{key}'")
    if meta["type"] not in TASK_TYPES:
        raise InputError(f"{path}:{_line_of(text, TYPE_KEY)}: unknown task type {meta['type']!r} "
                         f"(allowed: {', '.join(TASK_TYPES)})")
    if meta.get("instruction") is not None and not isinstance(meta["instruction"], str):
        raise InputError(f"{path}:{_line_of(text, INSTRUCTION_KEY)}: 'instruction' must be a string")
    return meta


def load_task(folder: str | Path) -> Task:
    """Read and validate one task folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"{folder}: not a folder (expected a task folder with task.json)")
    meta = read_task_json(folder)
    kind = TASK_TYPES[meta["type"]]()
    task = Task(name=meta["name"], type=kind.name, main_score=meta.get("main_score") or kind.main_score, path=folder,
                instruction=meta.get("instruction"), split=meta.get("split") or "test",
                language=meta.get("language") or "en", meta=meta)
    task.data = kind.load(task)
    return task


def is_task_folder(path: Path) -> bool:
    return (path / "task.json").is_file()


def discover(paths) -> list[Path]:
    """Task folders from ``paths``: each a task folder, or a folder whose sub-folders are tasks, or
    ``builtin:NAME`` (a built-in task: STSBenchmark, Banking77Classification)."""
    out: list[Path] = []
    for p in paths:
        if str(p).startswith("builtin:"):
            name = str(p)[len("builtin:"):]
            p = builtin_dir() / name
            if not is_task_folder(p):
                names = ", ".join(sorted(d.name for d in builtin_dir().iterdir() if is_task_folder(d)))
                raise InputError(f"builtin:{name}: no such built-in task (built-in: {names})")
        p = Path(p)
        if not p.exists():
            raise InputError(f"{p}: no such task folder")
        if is_task_folder(p):
            out.append(p)
            continue
        if not p.is_dir():
            raise InputError(f"{p}: not a task folder")
        subs = sorted(d for d in p.iterdir() if d.is_dir() and not d.name.startswith((".", "_")))
        tasks = [d for d in subs if is_task_folder(d)]
        if not tasks:
            raise InputError(f"{p / 'task.json'}: file not found (neither a task folder nor a folder of tasks)")
        for d in subs:
            if d not in tasks and any(d.glob("*.jsonl")):
                raise InputError(f"{d / 'task.json'}: file not found (a task folder needs task.json)")
        out.extend(tasks)
    return out


def builtin_dir() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "eval"


def builtin_tasks() -> list[Path]:
    return discover([builtin_dir()])


def load_tasks(paths=None) -> list[Task]:
    """Validate every folder first (so a malformed one fails before any encoding), then return them."""
    folders = discover(paths) if paths else builtin_tasks()
    tasks = [load_task(f) for f in folders]
    names: dict[str, Path] = {}
    for t in tasks:
        if t.name in names:
            raise InputError(f"{t.path / 'task.json'}:1: task name {t.name!r} is also used by {names[t.name]}")
        names[t.name] = t.path
    return tasks
