"""The one place every stage calls a model: cache lookup, batching, the ledger, progress.

``LLMClient(ref, role, stage, cache, ledger).generate(requests)`` returns, for each request, its
``n`` samples in order. Sample ``i`` of a request is its own cache entry, keyed by the model
identity, messages, sampling, constraint, seed and ``i``; hits cost nothing and are recorded in
the ledger as cache hits (with their original token counts). Misses go to the backend; every
answer is cached (if it succeeded) and gets one ledger row as soon as the client has it: per
completion from a backend that streams them (``as_completed``: the openai endpoint pool), else
per chunk of the backend's batch size (one sample for llama.cpp). A killed run thus re-asks only
the requests in flight (or the batch being generated). Under an executor worker each ledger row
names the worker (``worker``: its rank). A request that fails after the backend's retries comes
back as a Completion with ``error`` set; failures are never cached.

With ``batch: true`` on the model (openai backend) the misses go through the provider's Batch API
instead (``speed.llm.batch``): same keys, same cache and ledger path, each ledger row marked with
its batch id. ``prefetch(requests)`` asks a whole stage's misses up front (``ask_in_shards`` calls
it), so that the stage waits for one set of batches, not one per shard.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Sequence

from ..errors import SpeedError
from ..io import stable_hash
from .backends.base import Backend, BackendRequest, Completion, Request, error_text
from .cache import RequestCache, adapter_sha256, model_identity
from .ledger import Ledger, UsageRecord

CACHE_VERSION = 1
PROGRESS_MIN = 2  # show a per-sample progress bar from this many uncached samples on


def constraint_for(ref, request: Request) -> dict | None:
    """The JSON schema that constrains decoding: only with ``json_mode`` on."""
    if not getattr(ref, "json_mode", False):
        return None
    return request.json_schema or {"type": "object"}


def cache_key(model_id: str, adapter_sha: str | None, request: Request, index: int,
              constraint: dict | None, engine: dict[str, Any] | None = None) -> str:
    return stable_hash({
        "v": CACHE_VERSION,
        "model": model_id,
        "adapter": adapter_sha,
        "messages": request.messages,
        "sampling": request.sampling.to_dict(),
        "engine": engine or {},
        "constraint": constraint,
        "seed": request.seed,
        "index": index,
    })


@dataclass
class _Slot:
    request: int
    index: int
    key: str


class LLMClient:
    """A model in a role, for one stage: ``generate(requests) -> list[list[Completion]]``."""

    def __init__(self, ref, role: str, stage: str, cache: RequestCache | None = None,
                 ledger: Ledger | None = None, backend: Backend | None = None, show_progress: bool = True,
                 batch_journal: str | None = None):
        self.ref = ref
        self.role = role
        self.stage = stage
        self.cache = cache
        self.ledger = ledger
        self.show_progress = show_progress
        self._backend = backend
        self.model_id = model_identity(ref)
        self.adapter_sha256 = adapter_sha256(ref.adapter)
        opts = ref.options or {}
        self._engine = {k: opts[k] for k in ("sampler", "cache_salt") if k in opts}
        self.calls = 0  # samples sent to the backend by this client
        self.worker: int | None = None  # the executor worker this client runs in (see attach)
        # batch: true -> the Batch API (speed.llm.batch); its journal lives next to the ledger
        self.batch_journal = batch_journal or (str(ledger.path.with_name("batches.jsonl")) if ledger else None)
        self._prefetched: dict[str, Completion] = {}  # answers a batch prefetch got, recorded already

    def __getstate__(self) -> dict:
        """Pickled (to go to a worker process), a client leaves its loaded backend behind."""
        state = dict(self.__dict__)
        state["_backend"] = None
        return state

    def shared(self) -> dict:
        """What an executor worker must reach through one process (single writers): cache and ledger."""
        return {"cache": self.cache, "ledger": self.ledger}

    def attach(self, shared: dict, rank: int, size: int) -> None:
        """In executor worker ``rank`` of ``size``: the cache and ledger handles the executor passes
        (see ``shared``), the worker's share of an endpoint pool, and no progress bars of its own."""
        self.cache, self.ledger, self.worker = shared["cache"], shared["ledger"], rank
        self.ref = worker_ref(self.ref, rank, size)
        self.show_progress = False

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            from .backends import make_backend

            self._backend = make_backend(self.ref)
            describe = getattr(self._backend, "describe", None)
            if self.show_progress and callable(describe):  # which engine each model got, in one line
                print(f"[{self.stage}] {self.role} {self.ref.model} on {describe()}", flush=True)
        return self._backend

    def key(self, request: Request, index: int) -> str:
        return cache_key(self.model_id, self.adapter_sha256, request, index, constraint_for(self.ref, request),
                         self._engine)

    def _chunk_size(self) -> int:
        size = getattr(self._backend, "preferred_batch", None) if self._backend is not None else None
        if not size:
            if self.ref.backend == "openai":
                size = 4 * self.ref.max_concurrency
            else:
                size = self.ref.batch_size
        return max(1, int(size))

    def _usage(self, comps: Sequence[Completion], hits: bool) -> list[UsageRecord]:
        worker = self.worker
        return [UsageRecord(
            stage=self.stage, role=self.role, model=self.ref.model, prompt_tokens=int(c.prompt_tokens),
            completion_tokens=int(c.completion_tokens), latency_s=0.0 if hits else round(float(c.latency_s), 4),
            cache_hit=hits, error=c.error, endpoint=c.endpoint, adapter_sha256=self.adapter_sha256, n=1,
            attempts=0 if hits else int(c.attempts),
            endpoint_failures=None if hits else c.endpoint_failures, worker=worker,
            batch=None if hits else c.batch_id) for c in comps]

    def _record(self, comps: Sequence[Completion], hits: bool) -> None:
        if self.ledger is None or not comps:
            return
        self.ledger.record_many(self._usage(comps, hits))

    def _commit(self, to_cache: list, fresh: list[Completion]) -> None:
        """Record every new answer in the ledger, then cache the successes (in one step where the
        cache and the ledger live in one store process, as under the Ray executor). The ledger goes
        first so that a kill between the two writes can only make it count a request that is then
        asked (and paid) again, never miss one that was paid."""
        if self.cache is not None and self.ledger is not None and to_cache and fresh:
            self.cache.put_many_and_record(to_cache, self.ledger, self._usage(fresh, hits=False))
            return
        self._record(fresh, hits=False)
        if to_cache:
            self.cache.put_many(to_cache)

    def generate(self, requests: Sequence[Request], desc: str | None = None) -> list[list[Completion]]:
        """For each request, its ``n`` samples in order (cache hits, new completions or errors)."""
        results: list[list[Completion | None]] = [[None] * max(0, int(r.n)) for r in requests]
        slots = [_Slot(ri, i, self.key(r, i)) for ri, r in enumerate(requests) for i in range(max(0, int(r.n)))]
        if self._prefetched:  # answered by this stage's batch prefetch (recorded then): no second ledger row
            rest = []
            for s in slots:
                c = self._prefetched.pop(s.key, None)
                if c is None:
                    rest.append(s)
                else:
                    results[s.request][s.index] = c
            slots = rest
        cached = self.cache.get_many([s.key for s in slots]) if self.cache is not None and slots else {}
        hits: list[Completion] = []
        missing: list[_Slot] = []
        for s in slots:
            if s.key in cached:
                c = Completion.from_dict(cached[s.key])
                c.cache_hit, c.index = True, s.index
                results[s.request][s.index] = c
                hits.append(c)
            else:
                missing.append(s)
        self._record(hits, hits=True)
        if missing:
            self._run_missing(requests, missing, results, desc)
        return [[c for c in row if c is not None] for row in results]  # every slot is filled

    def _run_missing(self, requests: Sequence[Request], missing: list[_Slot],
                     results: list[list[Completion | None]], desc: str | None) -> None:
        if getattr(self.ref, "batch", False):
            self._run_batch(requests, missing, results)
            return
        bar = None
        if self.show_progress and len(missing) >= PROGRESS_MIN:
            from ..progress import progress

            bar = progress(total=len(missing), desc=desc or f"{self.stage} ({self.role})", unit="sample")
        try:
            stream = getattr(self.backend, "as_completed", None)
            if callable(stream):  # each answer is kept as it arrives
                self._run_streamed(stream, requests, missing, results, bar)
                return
            size = self._chunk_size()
            for start in range(0, len(missing), size):
                chunk = missing[start:start + size]
                self._run_chunk(requests, chunk, results)
                if bar is not None:
                    bar.update(len(chunk))
        finally:
            if bar is not None:
                bar.close()

    # -- batch: true -----------------------------------------------------------------------------

    def prefetch(self, requests: Sequence[Request]) -> None:
        """With ``batch: true``: ask every uncached sample of ``requests`` through the Batch API now,
        in as few batches as the provider's limits allow, so that a stage's shards then find their
        answers at once (each recorded in the ledger once, here). A no-op for a live model."""
        if not getattr(self.ref, "batch", False) or not requests:
            return
        slots = [_Slot(ri, i, self.key(r, i)) for ri, r in enumerate(requests) for i in range(max(0, int(r.n)))]
        cached = self.cache.get_many([s.key for s in slots]) if self.cache is not None and slots else {}
        missing = [s for s in slots if s.key not in cached and s.key not in self._prefetched]
        if not missing:
            return
        results: list[list[Completion | None]] = [[None] * max(0, int(r.n)) for r in requests]
        self._run_batch(requests, missing, results)
        for s in missing:
            c = results[s.request][s.index]
            if c is not None:
                self._prefetched[s.key] = c

    def _run_batch(self, requests: Sequence[Request], missing: list[_Slot],
                   results: list[list[Completion | None]]) -> None:
        """The missing samples through the Batch API (speed.llm.batch): each answer or rejection goes
        through ``_keep`` (cache and ledger) as its batch is collected. Samples with equal keys
        (the same request twice) are asked once; the copies are recorded as cache hits."""
        from .backends.base import sample_seed
        from .backends.openai_backend import chat_params
        from .batch import BatchLine, BatchRunner

        if self.batch_journal is None:
            raise SpeedError(f"{self.ref.model}: batch mode needs a run directory for its batch journal")
        by_key: dict[str, list[_Slot]] = {}
        for s in missing:
            by_key.setdefault(s.key, []).append(s)
        lines = []
        for key, group in by_key.items():
            s = group[0]
            r = requests[s.request]
            breq = BackendRequest(messages=r.messages, sampling=r.sampling, seed=r.seed, indices=(s.index,),
                                  json_schema=constraint_for(self.ref, r))
            lines.append(BatchLine(key, chat_params(self.ref, breq, sample_seed(r.seed, s.index), merged=True)))

        def keep(pairs):
            self._keep([(by_key[k][0], c) for k, c in pairs], results)
            copies = []
            for k, c in pairs:
                for s in by_key[k][1:]:
                    dup = Completion.from_dict(c.to_dict())
                    dup.cache_hit, dup.index = True, s.index
                    results[s.request][s.index] = dup
                    copies.append(dup)
            self._record(copies, hits=True)

        runner = BatchRunner(self.ref, self.batch_journal, self.stage, self.role, show_progress=self.show_progress)
        try:
            runner.run(lines, keep)
        finally:
            runner.close()

    def _backend_requests(self, requests: Sequence[Request], slots: list[_Slot]
                          ) -> tuple[list[list[_Slot]], list[BackendRequest]]:
        """The slots grouped by request (in first-seen order) and one BackendRequest per group."""
        groups: dict[int, list[_Slot]] = {}
        for s in slots:
            groups.setdefault(s.request, []).append(s)
        breqs = []
        for ri, group in groups.items():
            r = requests[ri]
            breqs.append(BackendRequest(messages=r.messages, sampling=r.sampling, seed=r.seed,
                                        indices=tuple(s.index for s in group),
                                        json_schema=constraint_for(self.ref, r)))
        return list(groups.values()), breqs

    def _keep(self, pairs: Sequence[tuple[_Slot, Completion]], results: list[list[Completion | None]]) -> None:
        """Put new completions in their slots, cache the successes and record every one."""
        to_cache = []
        fresh: list[Completion] = []
        for s, c in pairs:
            c.index, c.cache_hit = s.index, False
            results[s.request][s.index] = c
            fresh.append(c)
            if c.error is None and self.cache is not None:
                to_cache.append((s.key, self.model_id, c.to_dict()))
        self.calls += len(fresh)
        self._commit(to_cache, fresh)

    @staticmethod
    def _failed(slots: Sequence[_Slot], exc: BaseException, t0: float) -> list[tuple[_Slot, Completion]]:
        """A whole-batch failure: every slot in it is reported failed with the same error."""
        err = error_text(exc)
        dt = (time.monotonic() - t0) / max(1, len(slots))
        return [(s, Completion(error=err, latency_s=dt, index=s.index)) for s in slots]

    def _run_streamed(self, stream, requests: Sequence[Request], missing: list[_Slot],
                      results: list[list[Completion | None]], bar) -> None:
        groups, breqs = self._backend_requests(requests, missing)
        t0 = time.monotonic()
        answers = iter(stream(breqs))
        try:
            while True:
                try:
                    arrived = next(answers, None)
                except SpeedError:
                    raise
                except Exception as exc:  # the stream broke: what had not arrived is reported failed
                    left = [s for s in missing if results[s.request][s.index] is None]
                    self._keep(self._failed(left, exc, t0), results)
                    if bar is not None:
                        bar.update(len(left))
                    break
                if arrived is None:
                    break
                self._keep([(groups[pos][k], c) for pos, k, c in arrived], results)  # a cache error stops the stage
                if bar is not None:
                    bar.update(len(arrived))
        finally:
            close = getattr(answers, "close", None)
            if close is not None:
                close()  # a stage stopped by an error: what was still queued is not sent
        left = [s for s in missing if results[s.request][s.index] is None]
        if left:
            self._keep(self._failed(left, RuntimeError("backend returned the wrong number of completions"), t0),
                       results)

    def _run_chunk(self, requests: Sequence[Request], chunk: list[_Slot],
                   results: list[list[Completion | None]]) -> None:
        groups, breqs = self._backend_requests(requests, chunk)
        t0 = time.monotonic()
        try:
            out = self.backend.generate(breqs)
            if len(out) != len(breqs) or any(len(o) != len(b.indices) for o, b in zip(out, breqs)):
                raise RuntimeError("backend returned the wrong number of completions")
        except SpeedError:
            raise
        except Exception as exc:  # a whole-batch failure: every sample in it is reported failed
            self._keep(self._failed(chunk, exc, t0), results)
            return
        self._keep([(s, c) for group, comps in zip(groups, out) for s, c in zip(group, comps)], results)

    def close(self) -> None:
        if self._backend is not None:
            self._backend.close()
            self._backend = None


def endpoint_share(urls: list[str], rank: int, size: int) -> list[str]:
    """The endpoints worker ``rank`` of ``size`` uses: a disjoint share when there are enough of
    them (worker r gets urls r, r+size, ...), else one each, round-robin."""
    if not urls or size <= 1:
        return list(urls)
    if len(urls) >= size:
        return list(urls[rank::size])
    return [urls[rank % len(urls)]]


def worker_ref(ref, rank: int, size: int):
    """``ref`` as worker ``rank`` of ``size`` runs it: an endpoint pool narrowed to the worker's share."""
    if getattr(ref, "backend", None) != "openai" or not ref.base_urls:
        return ref
    import dataclasses

    share = endpoint_share(ref.base_urls, rank, size)
    return dataclasses.replace(ref, base_url=share if len(share) > 1 else share[0])
