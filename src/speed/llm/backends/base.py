"""The backend protocol: batches of chat requests in, completions (text, finish reason, usage) out.

A backend never raises for one bad request: a request that still fails after the backend's retry
budget comes back as a ``Completion`` with ``error`` set. Each request asks for specific sample
indices; sample ``i`` of a request with seed ``s`` is generated with ``sample_seed(s, i)``, so each
sample is reproducible on its own (and is its own cache entry, see ``speed.llm.client``).
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol, Sequence, runtime_checkable

Message = dict[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}


@dataclass(frozen=True)
class SamplingParams:
    """Sampling settings shared by every backend (OpenAI semantics: no top-k unless given)."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 512
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        elif not isinstance(self.stop, tuple):
            object.__setattr__(self, "stop", tuple(self.stop))

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclass
class Request:
    """One prompt: messages, sampling, a per-item seed and the number of samples wanted.

    ``json_schema`` is the JSON schema of the expected output; it constrains decoding only when the
    model reference has ``json_mode: true``. ``meta`` is carried along untouched (not hashed).
    """

    messages: list[Message]
    sampling: SamplingParams = field(default_factory=SamplingParams)
    seed: int | None = None
    n: int = 1
    json_schema: dict | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class BackendRequest:
    """What a backend receives: a request and the sample indices still to generate."""

    messages: list[Message]
    sampling: SamplingParams
    seed: int | None
    indices: tuple[int, ...]
    json_schema: dict | None = None  # already None unless json_mode is on

    def seeds(self) -> list[int | None]:
        return [sample_seed(self.seed, i) for i in self.indices]


@dataclass
class Completion:
    """One generated sample (or the error that prevented it)."""

    text: str = ""
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    error: str | None = None
    cache_hit: bool = False
    endpoint: str | None = None  # the endpoint that answered (or the last one tried)
    attempts: int = 1
    index: int = 0
    endpoint_failures: dict[str, int] | None = None  # failed attempts per endpoint (openai pool)
    batch_id: str | None = None  # the Batch API batch that answered it (None: a live call)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Completion":
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in d.items() if k in names})


@runtime_checkable
class Backend(Protocol):
    """A model that turns batches of requests into completions.

    ``generate`` returns, for each request, one Completion per entry of ``request.indices``, in
    that order. ``name`` is a short label for logs; ``close`` frees the model.

    A backend whose samples finish one by one (an endpoint answering requests in parallel) may
    also offer ``as_completed(requests)``: an iterator of groups of ``(request position, position
    in its indices, completion)`` as they arrive. The client then caches and records each group at
    once, so that a killed run loses only the requests still in flight.
    """

    name: str

    def generate(self, requests: Sequence[BackendRequest]) -> list[list[Completion]]: ...

    def close(self) -> None: ...


def sample_seed(seed: int | None, index: int) -> int | None:
    """The seed of sample ``index`` of an item seeded ``seed`` (sample 0 uses the seed itself)."""
    if seed is None:
        return None
    if index == 0:
        return int(seed) % (2**31)
    h = hashlib.sha256(f"{int(seed)}:{int(index)}".encode()).digest()
    return int.from_bytes(h[:4], "big") % (2**31)


def error_text(exc: BaseException, limit: int = 300) -> str:
    """A one-line error description (type and message), never containing newlines."""
    msg = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {msg}"[:limit] if msg else type(exc).__name__
