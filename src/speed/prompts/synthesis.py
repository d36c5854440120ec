"""Synthesis prompts for the five task kinds (E5-mistral structure, SPEED's topic for STS).

The texts are our own wording of the published structures. A prompt is a pure function of
(kind, task, topic, attributes, guideline plan); the plan (order of the guidelines, and which
optional ones appear: each with probability 0.5, as in SPEED's release) and the attributes are
drawn from a per-item seeded ``random.Random``: see ``synthesis_prompt``.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

from .attributes import sample_attributes
from .schemas import EXAMPLE_KEYS, canonical_kind


@dataclass(frozen=True)
class Guideline:
    id: str
    text: str
    optional: bool = False  # included with probability 0.5


_G = Guideline

_KEY_DESCRIPTIONS: dict[str, dict[str, str]] = {
    "retrieval": {
        "user_query": "a string, a search query a user could plausibly issue for this task",
        "positive_document": "a string, a document that satisfies the query",
        "hard_negative_document": "a string, a document that seems to match the query but is less helpful",
    },
    "classification": {
        "input_text": "a string, a text of the sort the task is meant to classify",
        "label": "a string, the right label for the input text",
        "misleading_label": "a string, a wrong label that is still a plausible choice for this task",
    },
    "short-short": {
        "input": "a string, an input of the sort the task describes",
        "positive_document": 'a string, a text that matches the "input" under this task',
    },
    "long-long": {
        "input": "a string, an input of the sort the task describes",
        "positive_document": 'a string, a text that matches the "input" under this task',
    },
}

GUIDELINES: dict[str, tuple[Guideline, ...]] = {
    "retrieval": (
        _G("query", 'The "user_query" must be {query_type}, {query_length}, and {clarity}.'),
        _G("diverse", 'Let the "user_query" wander across subjects instead of the most obvious one.', True),
        _G("independent", "Write the documents on their own terms rather than around the query: do not repeat "
                          'the query word for word, and parts of the "positive_document" may stray from its '
                          "subject.", True),
        _G("length", "Each document must be at least {num_words} words long."),
        _G("negative", 'The "hard_negative_document" may carry some useful facts, but it has to be clearly '
                       'less useful or less complete than the "positive_document".'),
        _G("language", "Write the query and both documents in {language}."),
        _G("no_explain", "Never explain inside a document why it is or is not relevant to the query.", True),
        _G("difficulty", "The query and the documents should take {difficulty} level education to follow."),
    ),
    "classification": (
        _G("length", 'The "input_text" should be {num_words} words long, with varied wording.'),
        _G("misleading", 'The "misleading_label" has to be a label this task could use, but a poorer fit for '
                         'the "input_text" than the "label".'),
        _G("language", "Every value must be in {language}."),
        _G("no_leak", 'Keep the words of the "label" and the "misleading_label" out of the "input_text"; '
                      "otherwise the example is too easy.", True),
        _G("clarity", 'The "input_text" should be {clarity} and take {difficulty} level education to '
                      "understand."),
    ),
    "sts": (
        _G("keys", 'Use exactly the keys "S1", "S2" and "S3"; each value is a string in {language}; add no '
                   "other keys."),
        _G("overlap", "The three {unit}s should share a few words.", True),
        _G("high", "The similarity score of S1 and S2 should be {high_score}."),
        _G("low", "The similarity score of S1 and S3 should be {low_score}."),
        _G("difficulty", "The {unit}s should take {difficulty} level education to understand, and vary in "
                         "subject and length."),
    ),
    "short-short": (
        _G("language", "Every value must be in {language}."),
        _G("short", 'Keep both the "input" and the "positive_document" very short (one sentence or a phrase) '
                    "and avoid large word overlap between them, which would make the task too easy."),
        _G("independent", 'Make the "input" and the "positive_document" read as independent texts.', True),
    ),
    "long-long": (
        _G("language", "Every value must be in {language}."),
        _G("long", 'Make both the "input" and the "positive_document" long documents of at least 300 words, '
                   "with little word overlap between them, which would make the task too easy."),
        _G("independent", 'Make the "input" and the "positive_document" read as independent texts.', True),
    ),
}

_TASK_NOUN = {
    "retrieval": "text retrieval task",
    "classification": "text classification task",
    "short-short": "text matching task",
    "long-long": "text matching task",
}

_CLOSING = "Reply with the JSON object only; do not explain yourself or write anything else. Be creative!"


@dataclass
class SynthesisPrompt:
    """One synthesis prompt: what it was built from and the chat messages it renders to."""

    kind: str
    task: str
    topic: str
    attributes: dict[str, str]
    messages: list[dict[str, str]]
    guidelines: tuple[str, ...] = field(default_factory=tuple)

    @property
    def text(self) -> str:
        """The prompt as the judge and the revisor see it (the user message)."""
        return "\n\n".join(m["content"] for m in self.messages if m["role"] == "user")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["guidelines"] = list(self.guidelines)
        return d


def plan_guidelines(kind: str, rng: random.Random) -> tuple[str, ...]:
    """Which guidelines appear, in which order: optional ones kept with p=0.5, then shuffled."""
    kind = canonical_kind(kind)
    kept = [g.id for g in GUIDELINES[kind] if not g.optional or rng.random() < 0.5]
    rng.shuffle(kept)
    return tuple(kept)


def synthesis_messages(kind: str, task: str, topic: str, attributes: dict[str, str],
                       guidelines: tuple[str, ...] | None = None) -> list[dict[str, str]]:
    """Render the chat messages of a synthesis prompt (pure: no randomness inside).

    ``guidelines`` is a plan from ``plan_guidelines``; None means all of them, in the listed order.
    """
    kind = canonical_kind(kind)
    by_id = {g.id: g for g in GUIDELINES[kind]}
    ids = tuple(by_id) if guidelines is None else guidelines
    values = {"language": "English", **attributes, "topic": topic, "task": task}
    lines = ["- " + by_id[i].text.format(**values) for i in ids]
    if kind == "sts":
        head = (f"Write a triple of {values['unit']}s for the topic: {topic} with different degrees of "
                "semantic similarity, as a JSON object. Similarity is scored from 1 (least similar) to 5 "
                "(most similar).")
        closing = ('Reply with the JSON object only, with the three keys "S1", "S2" and "S3"; do not explain '
                   "yourself or write anything else. Be creative!")
        body = [head, "Follow these guidelines:\n" + "\n".join(lines), closing]
    else:
        keys = "\n".join(f'- "{k}": {_KEY_DESCRIPTIONS[kind][k]}.' for k in EXAMPLE_KEYS[kind])
        body = [
            f"You have been given a {_TASK_NOUN[kind]}: {task}",
            "Write one example for this task as a JSON object with exactly these keys:\n" + keys,
            "Follow these guidelines:\n" + "\n".join(lines),
            _CLOSING,
        ]
    return [{"role": "user", "content": "\n\n".join(body)}]


def synthesis_prompt(kind: str, task: str, topic: str, rng: random.Random,
                     language: str = "English") -> SynthesisPrompt:
    """Sample attributes and a guideline plan from ``rng``, then render (same rng -> same prompt)."""
    kind = canonical_kind(kind)
    attributes = sample_attributes(kind, rng, language=language)
    plan = plan_guidelines(kind, rng)
    return SynthesisPrompt(kind=kind, task=task, topic=topic, attributes=attributes,
                           messages=synthesis_messages(kind, task, topic, attributes, plan), guidelines=plan)
