"""The ``TaskType`` interface of an evaluation task type, and the field checks the types' readers share."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ...errors import InputError
from ...io import read_jsonl_numbered

if TYPE_CHECKING:
    from ..encoder import Encoder
    from ..tasks import Task

read_rows = read_jsonl_numbered  # (line number, row) per non-empty line of a JSONL file, the types' reader


class TaskType:
    """A task type, as mteb's ``AbsTask`` subclasses: ``name`` (a ``type`` of task.json), its default ``main_score``,
    how to read and how to score a task of that type. Stateless: ``TASK_TYPES[task.type]().evaluate(...)``."""

    name: ClassVar[str]
    main_score: ClassVar[str]

    def load(self, task: Task) -> dict[str, Any]:
        """The data of ``task`` (its folder, split and task.json are set), read from its files and validated:
        any problem is an ``InputError`` naming the file and line."""
        raise NotImplementedError

    def evaluate(self, encoder: Encoder, task: Task, instruction: str | None) -> dict[str, Any]:
        """The MTEB 1.12 metrics of a loaded ``task``, ``main_score`` included (the instruction is for queries)."""
        raise NotImplementedError


def field(path: Path, lineno: int, row: dict, key: str, kinds: tuple, what: str):
    if key not in row:
        raise InputError(f"{path}:{lineno}: missing field '{key}' ({what})")
    value = row[key]
    if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
        raise InputError(f"{path}:{lineno}: field '{key}' = {value!r} is not {what}")
    return value


def str_list(path: Path, lineno: int, row: dict, key: str) -> list[str]:
    value = field(path, lineno, row, key, (list,), "a list of strings")
    if not all(isinstance(v, str) for v in value):
        raise InputError(f"{path}:{lineno}: field '{key}' is not a list of strings")
    return value


def nonempty(path: Path, items: list) -> None:
    if not items:
        raise InputError(f"{path}:1: no rows (empty file)")


def normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n == 0, 1.0, n)
