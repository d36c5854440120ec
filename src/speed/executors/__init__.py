"""Where the shards of a generation stage run: here, one after the other, or on Ray workers.

``StageContext.map_shards`` lists the shards that have no done-marker yet and hands them to the
executor ``run.executor`` names. Every executor runs a shard with ``run_shard``: the rows of
``process(items, index)`` go to the shard's JSONL file (atomically), then its ``.done`` marker.
The files are the same whichever executor wrote them, so a stage started under one resumes under
the other. Ray is an extra (``pip install 'speed[ray]'``), imported only when ``executor: ray``.
"""

from __future__ import annotations

from .shards import Executor, Process, ShardTask, SharedWork, run_shard

__all__ = ["Executor", "Process", "ShardTask", "SharedWork", "check_available", "executor_for", "run_shard"]


def check_available(run_config) -> None:
    """Fail at once (one line, exit 2) when the configured executor cannot run here."""
    if getattr(run_config, "executor", "local") == "ray":
        from .ray_executor import import_ray

        import_ray()


def executor_for(config, stage: str) -> Executor:
    run = getattr(config, "run", None)
    if run is None or run.executor == "local":
        from .local import LocalExecutor

        return LocalExecutor()
    from .ray_executor import RayExecutor

    return RayExecutor(run, stage)
