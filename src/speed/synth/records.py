"""Typed rows that flow between the data stages (written as JSONL in the run directory)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# kind -> the JSON keys that play query, positive and negative (None: no negative; in-batch only)
TRIPLET_KEYS: dict[str, tuple[str, str, str | None]] = {
    "retrieval": ("user_query", "positive_document", "hard_negative_document"),
    "classification": ("input_text", "label", "misleading_label"),
    "sts": ("S1", "S2", "S3"),
    "short-short": ("input", "positive_document", None),
    "long-long": ("input", "positive_document", None),
}


def triplet(kind: str, fields: dict[str, str]) -> tuple[str, str, str]:
    """(query, positive, negative) of an example; negative is "" for kinds without one."""
    q, p, n = TRIPLET_KEYS[kind]
    return fields.get(q, ""), fields.get(p, ""), (fields.get(n, "") if n else "")


@dataclass
class Example:
    """One synthesized example (valid JSON for its kind), with where it came from."""

    id: str
    kind: str
    task: str
    topic: str
    fields: dict[str, str]
    attributes: dict[str, Any] = field(default_factory=dict)
    model: str = ""
    revised: bool = False
    length_ok: dict[str, bool] = field(default_factory=dict)
    prompt_id: str = ""
    sample: int = 0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def query(self) -> str:
        return triplet(self.kind, self.fields)[0]

    @property
    def positive(self) -> str:
        return triplet(self.kind, self.fields)[1]

    @property
    def negative(self) -> str:
        return triplet(self.kind, self.fields)[2]

    def full_text(self) -> str:
        """Everything the example says (what dedup compares)."""
        return "\n".join(t for t in triplet(self.kind, self.fields) if t)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["query"], d["positive"], d["negative"] = triplet(self.kind, self.fields)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Example":
        names = cls.__dataclass_fields__.keys()
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class Rejection:
    """A row that did not make it, with its raw text and the reason (never silently dropped)."""

    id: str
    stage: str
    reason: str
    raw: str
    detail: str = ""
    kind: str = ""
    prompt_id: str = ""
    sample: int = 0
    model: str = ""

    def to_dict(self) -> dict:
        return asdict(self)
