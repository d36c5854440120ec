"""How an LLM client behaves once it is sent to another process (a Ray shard worker).

An ``LLMClient`` that is pickled leaves its loaded backend behind (it is reloaded lazily where it
lands); its request cache and ledger travel as their absolute paths and are reopened through
``open_cache`` / ``open_ledger``. Inside an executor worker a ``WorkerSlot`` is active: it says
which worker this process is (``rank`` of ``size``), and it may route the cache and the ledger to
a store that one process owns (so that SQLite and ``ledger.jsonl`` have a single writer, even when
the workers run on other machines). Outside a worker everything opens the files directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from .cache import RequestCache
from .ledger import Ledger


@dataclass
class WorkerSlot:
    rank: int
    size: int
    cache: Callable[[str], Any] | None = None  # path -> an object with get_many / put_many
    ledger: Callable[[str], Any] | None = None  # path -> an object with record_many


_SLOT: WorkerSlot | None = None


def activate(slot: WorkerSlot | None) -> None:
    """Make this process a worker (``None``: an ordinary process again)."""
    global _SLOT
    _SLOT = slot


def current() -> WorkerSlot | None:
    return _SLOT


def open_cache(path: str):
    if _SLOT is not None and _SLOT.cache is not None:
        return _SLOT.cache(path)
    return RequestCache(path)


def open_ledger(path: str):
    if _SLOT is not None and _SLOT.ledger is not None:
        return _SLOT.ledger(path)
    return Ledger(path)


def endpoint_share(urls: list[str], rank: int, size: int) -> list[str]:
    """The endpoints worker ``rank`` of ``size`` uses: a disjoint share when there are enough of
    them (worker r gets urls r, r+size, ...), else one each, round-robin."""
    if not urls or size <= 1:
        return list(urls)
    if len(urls) >= size:
        return list(urls[rank::size])
    return [urls[rank % len(urls)]]


def adopt(ref):
    """``ref`` as the current worker runs it: an endpoint pool narrowed to the worker's share."""
    if _SLOT is None or getattr(ref, "backend", None) != "openai" or not ref.base_urls:
        return ref
    import dataclasses

    share = endpoint_share(ref.base_urls, _SLOT.rank, _SLOT.size)
    return dataclasses.replace(ref, base_url=share if len(share) > 1 else share[0])
