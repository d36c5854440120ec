"""Task kinds, the JSON keys of each kind's example, and JSON schemas for constrained decoding."""

from __future__ import annotations

from typing import Literal

TaskKind = Literal["retrieval", "classification", "sts", "short-short", "long-long"]

TASK_KINDS: tuple[str, ...] = ("retrieval", "classification", "sts", "short-short", "long-long")
# Kinds that brainstorm tasks first (STS has no brainstorm step; its prompt takes the topic).
ASYMMETRIC_KINDS: tuple[str, ...] = ("retrieval", "classification", "short-short", "long-long")

EXAMPLE_KEYS: dict[str, tuple[str, ...]] = {
    "retrieval": ("user_query", "positive_document", "hard_negative_document"),
    "classification": ("input_text", "label", "misleading_label"),
    "sts": ("S1", "S2", "S3"),
    "short-short": ("input", "positive_document"),
    "long-long": ("input", "positive_document"),
}

# Accept a few spellings of the kinds (config files, CLI flags).
_ALIASES = {
    "short-long": "retrieval", "long-short": "classification", "text-matching-short": "short-short",
    "text-matching-long": "long-long", "short_short": "short-short", "long_long": "long-long",
    "semantic-similarity": "sts",
}


def canonical_kind(kind: str) -> str:
    k = str(kind).strip().lower().replace(" ", "-")
    k = _ALIASES.get(k, k)
    if k not in TASK_KINDS:
        raise ValueError(f"unknown task kind {kind!r} (allowed: {', '.join(TASK_KINDS)})")
    return k


def _object(props: dict[str, dict]) -> dict:
    return {"type": "object", "properties": props, "required": list(props), "additionalProperties": False}


def example_schema(kind: str) -> dict:
    """JSON schema of one example of ``kind``: the kind's keys, all non-empty strings."""
    keys = EXAMPLE_KEYS[canonical_kind(kind)]
    return _object({k: {"type": "string", "minLength": 1} for k in keys})


BRAINSTORM_SCHEMA: dict = {"type": "array", "items": {"type": "string", "minLength": 1}, "minItems": 1}

JUDGE_SCHEMA: dict = _object({  # the decision first: a verdict cut at max_tokens keeps it
    "best": {"type": "integer", "minimum": 0},
    "worst": {"type": "integer", "minimum": 0},
    "reason": {"type": "string"},
})

REVISION_SCHEMA: dict = _object({"reason": {"type": "string"}, "revision": {"type": "string"}})
