"""The local executor: every shard in this process, in order (the default, ``run.executor: local``)."""

from __future__ import annotations

from typing import Callable

from .shards import Process, ShardTask, run_shard


class LocalExecutor:
    def run(self, tasks: list[ShardTask], process: Process, on_done: Callable[[ShardTask], None]) -> None:
        for task in tasks:
            run_shard(task, process)
            on_done(task)
