"""What every executor runs: a shard task, shard work (plain, or with shared objects), and
``run_shard`` (the rows, then the marker)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol, Sequence

Process = Callable[[Sequence[Any], int], Iterable[Any]]


@dataclass
class ShardTask:
    index: int
    items: Sequence[Any]
    out: Path
    marker: Path


class SharedWork:
    """Shard work with objects that every worker must reach through one process (single writers,
    e.g. a request cache and a ledger): ``shared`` names them, and an executor that runs shards in
    other processes hosts them once and calls ``attach(handles, rank, size)`` in each worker with
    handles to them. In this process (the local executor) it is just ``process``."""

    def __init__(self, process: Process, shared: dict[str, Any], attach: Callable[[dict, int, int], None]):
        self.process, self.shared, self.attach = process, shared, attach

    def __call__(self, items: Sequence[Any], index: int) -> Iterable[Any]:
        return self.process(items, index)


class Executor(Protocol):
    def run(self, tasks: list[ShardTask], process: Process, on_done: Callable[[ShardTask], None]) -> None:
        """Run every task (shard); call ``on_done(task)`` once a task's marker is written."""


def run_shard(task: ShardTask, process: Process) -> dict:
    """Process one shard and write its rows, then its marker; return the marker."""
    from ..io import atomic_write_json, atomic_write_jsonl, now, sha256_file

    rows = list(process(task.items, task.index))
    n = atomic_write_jsonl(task.out, rows)
    marker = {"rows": n, "sha256": sha256_file(task.out), "finished_at": now()}
    atomic_write_json(task.marker, marker)
    return marker
