"""The Ray executor (``run.executor: ray``): a stage's shards spread over Ray workers.

For one ``map_shards`` call the driver (the ``speed run`` process) starts:

- for shard work that declares shared objects (``SharedWork``: for the model-calling stages, the
  run's request cache and ledger), one host actor on the driver's node, without CPUs: the only
  process that holds them while the workers run, so each has one writer with any number of workers
  on any number of machines (SQLite's WAL mode needs one machine);
- ``run.ray_workers`` shard workers (each ``ray_cpus_per_worker`` CPUs, ``ray_gpus_per_worker``
  GPUs). Each gets the stage's shard work pickled once and, explicitly, its rank and handles to the
  shared objects (``SharedWork.attach``); whatever the work holds (an LLM client that left its
  backend behind) loads its own state in the worker, reused for every shard the worker runs.

The executor knows nothing of what the shard work does.

The driver hands out one shard at a time to each free worker. A worker writes the shard's rows
and then its done-marker into the run directory, exactly as the local executor does (so the run
directory must be visible to every worker at the same path: a shared filesystem on a cluster).
The driver shows a bar over shards and, at the end, reads the rows back in shard order. A worker
that dies is restarted and its shard retried (``run.ray_max_restarts``); what it had finished is
then a cache hit. When the driver dies, Ray ends its workers; a rerun resumes under either
executor at the first shard without a marker.
"""

from __future__ import annotations

import collections
import dataclasses
import math
import os
import sys
import uuid
from typing import Any, Callable

from ..errors import SpeedError, require
from .shards import Process, ShardTask, SharedWork, run_shard


def import_ray():
    """``ray``, or a one-line error naming the extra to install."""
    return require("ray", "ray", "run.executor: ray")


def _one_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def connect(run) -> Any:
    """Connect to the cluster ``run.ray_address`` names, or start a local one (once per process)."""
    ray = import_ray()
    if ray.is_initialized():
        return ray
    try:
        if run.ray_address is None:
            num_cpus = math.ceil(run.ray_workers * run.ray_cpus_per_worker) if run.ray_workers else None
            # "local": a new cluster for this run, never one that `ray start` left on this machine
            ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                     object_store_memory=int(run.ray_object_store_mb) * 1024 * 1024)
        else:
            ray.init(address=run.ray_address)
    except Exception as exc:  # a refused connection, a cluster that cannot start here
        where = f"the Ray cluster at {run.ray_address}" if run.ray_address else "a local Ray cluster"
        raise SpeedError(f"cannot start or reach {where}: {_one_line(exc)}") from None
    return ray


def shutdown() -> None:
    """Disconnect from Ray (and stop a local cluster that this process started)."""
    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


class _Host:
    """Owns the shard work's shared objects (``SharedWork.shared``, e.g. a request cache and a
    ledger) while workers run: one process, so each has one writer. Workers call their methods."""

    def __init__(self, objects: dict[str, Any]):
        self.objects = objects

    def call(self, name: str, method: str, args: tuple, kwargs: dict):
        args = tuple(self.objects[a.name] if isinstance(a, Handle) else a for a in args)
        return getattr(self.objects[name], method)(*args, **kwargs)

    def close(self) -> None:
        for obj in self.objects.values():
            getattr(obj, "close", lambda: None)()


class Handle:
    """In a worker: shared object ``name``, its method calls run in the host process (a handle passed
    as an argument arrives there as the object it names, so a call on two objects is one step)."""

    def __init__(self, host, name: str):
        self.host, self.name = host, name

    def __getattr__(self, method: str):
        if method.startswith("__"):
            raise AttributeError(method)

        def call(*args, **kwargs):
            import ray

            return ray.get(self.host.call.remote(self.name, method, args, kwargs))

        return call


class _Worker:
    """One shard worker: the stage's shard work, unpickled once, with its own model backend."""

    def __init__(self, rank: int, size: int, host_name: str, payload: bytes):
        import ray
        import ray.cloudpickle as cloudpickle

        self.process = cloudpickle.loads(payload)
        if isinstance(self.process, SharedWork):
            host = ray.get_actor(host_name)  # by name: a restarted worker finds it again
            self.process.attach({name: Handle(host, name) for name in self.process.shared}, rank, size)

    def run_shard(self, task: ShardTask) -> dict:
        return run_shard(task, self.process)


_ACTORS: dict[str, Any] = {}


def _actor_classes(ray):
    if not _ACTORS:
        _ACTORS["host"] = ray.remote(_Host)
        _ACTORS["worker"] = ray.remote(_Worker)
    return _ACTORS["host"], _ACTORS["worker"]


class RayExecutor:
    def __init__(self, run, stage: str):
        self.run_config = run
        self.stage = stage

    def _n_workers(self, ray, n_tasks: int) -> int:
        run = self.run_config
        res = ray.cluster_resources()
        cpus, gpus = float(res.get("CPU", 0)), float(res.get("GPU", 0))
        fit = int(cpus // run.ray_cpus_per_worker)
        if run.ray_gpus_per_worker > 0:
            fit = min(fit, int(gpus // run.ray_gpus_per_worker))
        n = run.ray_workers or fit
        if n < 1:
            raise SpeedError(f"the Ray cluster has {cpus:g} CPUs and {gpus:g} GPUs: not enough for one worker of "
                             f"run.ray_cpus_per_worker={run.ray_cpus_per_worker:g}, "
                             f"run.ray_gpus_per_worker={run.ray_gpus_per_worker:g}")
        if n > fit:
            sys.stderr.write(f"speed: warning: run.ray_workers={n} needs more than the Ray cluster's {cpus:g} CPUs / "
                             f"{gpus:g} GPUs; workers wait for resources (or an autoscaler)\n")
        return max(1, min(n, n_tasks))

    def _payload(self, process: Process) -> bytes:
        import ray.cloudpickle as cloudpickle

        try:
            return cloudpickle.dumps(process)
        except Exception as exc:
            raise SpeedError(f"stage {self.stage}: its shard work cannot be sent to Ray workers "
                             f"({type(exc).__name__}: {_one_line(exc)}); use run.executor: local") from None

    def run(self, tasks: list[ShardTask], process: Process, on_done: Callable[[ShardTask], None]) -> None:
        if not tasks:
            return
        ray = connect(self.run_config)
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        payload = self._payload(process)
        host_cls, worker_cls = _actor_classes(ray)
        here = ray.get_runtime_context().get_node_id()
        host_name = f"speed-host-{uuid.uuid4().hex}"
        shared = process.shared if isinstance(process, SharedWork) else {}
        host = host_cls.options(name=host_name, num_cpus=0,
                                scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote(shared)
        n = self._n_workers(ray, len(tasks))
        run = self.run_config
        workers = [worker_cls.options(num_cpus=run.ray_cpus_per_worker, num_gpus=run.ray_gpus_per_worker,
                                      max_restarts=run.ray_max_restarts, max_task_retries=run.ray_max_restarts
                                      ).remote(rank, n, host_name, payload) for rank in range(n)]
        queue = collections.deque(dataclasses.replace(t, items=list(t.items), out=t.out.resolve(),
                                                      marker=t.marker.resolve()) for t in tasks)
        pending: dict[Any, tuple[Any, ShardTask]] = {}

        def submit(worker) -> None:
            if queue:
                task = queue.popleft()
                pending[worker.run_shard.remote(task)] = (worker, task)

        ok = False
        try:
            for w in workers:
                submit(w)
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                worker, task = pending.pop(ref)
                self._collect(ray, ref, task)
                on_done(task)
                submit(worker)
            ray.get(host.close.remote())
            ok = True
        finally:
            for w in workers:
                ray.kill(w)
            if not ok:
                ray.kill(host)

    def _collect(self, ray, ref, task: ShardTask) -> None:
        try:
            ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, SpeedError):
                raise cause from None
            raise
        except ray.exceptions.RayActorError as exc:
            raise SpeedError(f"a Ray worker died while running shard {task.index} of stage {self.stage} "
                             f"({_one_line(exc)}); the finished shards are kept: rerun to resume") from None
        if not (os.path.exists(task.marker) and os.path.exists(task.out)):
            raise SpeedError(f"shard {task.index} of stage {self.stage} was written by a Ray worker but {task.out} "
                             "is not visible here: the run directory must be on a filesystem that every node "
                             "shares, at the same path")
