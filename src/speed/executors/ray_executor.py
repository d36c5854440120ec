"""The Ray executor (``run.executor: ray``): a stage's shards spread over Ray workers.

For one ``map_shards`` call the driver (the ``speed run`` process) starts:

- one store actor, on the driver's node, without CPUs: the only process that writes the run's
  request cache (SQLite) and ``ledger.jsonl`` while the workers run, so both stay correct with any
  number of workers on any number of machines (SQLite's WAL mode needs one machine);
- ``run.ray_workers`` shard workers (each ``ray_cpus_per_worker`` CPUs, ``ray_gpus_per_worker``
  GPUs). Each gets the stage's shard work pickled once; the LLM client inside it left its backend
  behind and loads its own in the worker (llama.cpp or vLLM in the worker, or the worker's share of
  an ``openai`` endpoint pool, see ``speed.llm.remote``), reused for every shard the worker runs.

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
from . import Process, ShardTask, run_shard


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


class _Store:
    """Owns the run's request caches and ledgers while workers run (one process: one writer)."""

    def __init__(self) -> None:
        self._caches: dict[str, Any] = {}
        self._ledgers: dict[str, Any] = {}

    def _cache(self, path: str):
        from ..llm.cache import RequestCache

        if path not in self._caches:
            self._caches[path] = RequestCache(path)
        return self._caches[path]

    def get_many(self, path: str, keys: list[str]) -> dict[str, dict]:
        return self._cache(path).get_many(keys)

    def put_many(self, path: str, items: list) -> int:
        return self._cache(path).put_many(items)

    def record_many(self, path: str, recs: list) -> None:
        from ..llm.ledger import Ledger

        if path not in self._ledgers:
            self._ledgers[path] = Ledger(path)
        self._ledgers[path].record_many(recs)

    def put_many_and_record(self, cache_path: str, items: list, ledger_path: str, recs: list) -> None:
        """Answers' cache rows and their ledger lines in one call: a worker that dies sends both or neither."""
        self.record_many(ledger_path, recs)  # the ledger first, as in LLMClient._commit
        self.put_many(cache_path, items)

    def close(self) -> None:
        for cache in self._caches.values():
            cache.close()
        self._caches.clear()


class StoreCache:
    """In a worker: the request cache at ``path``, read and written through the store actor."""

    def __init__(self, store, path: str):
        self.store, self.path = store, path

    def get_many(self, keys) -> dict[str, dict]:
        import ray

        return ray.get(self.store.get_many.remote(self.path, list(keys)))

    def get(self, key: str) -> dict | None:
        return self.get_many([key]).get(key)

    def put_many(self, items) -> int:
        import ray

        items = list(items)
        return ray.get(self.store.put_many.remote(self.path, items)) if items else 0

    def put_many_and_record(self, items, ledger, recs) -> None:
        import ray

        if isinstance(ledger, StoreLedger) and ledger.store is self.store:
            ray.get(self.store.put_many_and_record.remote(self.path, list(items), ledger.path, list(recs)))
        else:
            self.put_many(items)
            ledger.record_many(recs)

    def close(self) -> None:
        pass


class StoreLedger:
    """In a worker: the ledger at ``path``, appended to by the store actor."""

    def __init__(self, store, path: str):
        self.store, self.path = store, path

    def record_many(self, recs) -> None:
        import ray

        recs = list(recs)
        if recs:
            ray.get(self.store.record_many.remote(self.path, recs))

    def record(self, rec) -> None:
        self.record_many([rec])


class _Worker:
    """One shard worker: the stage's shard work, unpickled once, with its own model backend."""

    def __init__(self, rank: int, size: int, store_name: str, payload: bytes):
        import ray
        import ray.cloudpickle as cloudpickle

        from ..llm import remote

        store = ray.get_actor(store_name)  # by name: a restarted worker finds it again

        remote.activate(remote.WorkerSlot(rank=rank, size=size, cache=lambda p: StoreCache(store, p),
                                          ledger=lambda p: StoreLedger(store, p)))
        self.process = cloudpickle.loads(payload)

    def run_shard(self, task: ShardTask) -> dict:
        return run_shard(task, self.process)


_ACTORS: dict[str, Any] = {}


def _actor_classes(ray):
    if not _ACTORS:
        _ACTORS["store"] = ray.remote(_Store)
        _ACTORS["worker"] = ray.remote(_Worker)
    return _ACTORS["store"], _ACTORS["worker"]


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
        store_cls, worker_cls = _actor_classes(ray)
        here = ray.get_runtime_context().get_node_id()
        store_name = f"speed-store-{uuid.uuid4().hex}"
        store = store_cls.options(name=store_name, num_cpus=0,
                                  scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False)).remote()
        n = self._n_workers(ray, len(tasks))
        run = self.run_config
        workers = [worker_cls.options(num_cpus=run.ray_cpus_per_worker, num_gpus=run.ray_gpus_per_worker,
                                      max_restarts=run.ray_max_restarts, max_task_retries=run.ray_max_restarts
                                      ).remote(rank, n, store_name, payload) for rank in range(n)]
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
            ray.get(store.close.remote())
            ok = True
        finally:
            for w in workers:
                ray.kill(w)
            if not ok:
                ray.kill(store)

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
