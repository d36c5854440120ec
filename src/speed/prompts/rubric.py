"""The teacher's quality rubric for one finished example: 1-5 scores for query realism, positive
relevance and negative hardness (the study's teacher-judged signal), plus validity for the ``score``
stage (``SCORE_KEYS``). Calls are counted like any other."""

from __future__ import annotations

RUBRIC_KEYS = ("query_realism", "positive_relevance", "negative_hardness")
SCORE_KEYS = RUBRIC_KEYS + ("validity",)
CRITERIA = {
    "query_realism": "would a real user or system produce this query for the task?",
    "positive_relevance": "does the positive truly match or answer the query?",
    "negative_hardness": "is the hard negative on the same subject and close to the query, yet clearly "
                         "a worse match than the positive? (1 if it is unrelated, or if it matches the query as well as the positive)",
    "validity": "is it a well-formed example of the task: each part the kind of text the task asks for, "
                "no placeholders, no leftover instructions, no text cut off?",
}
_COUNT = {3: "three", 4: "four"}


def rubric_messages(kind: str, task: str, query: str, positive: str, negative: str | None,
                    keys: tuple[str, ...] = RUBRIC_KEYS) -> list[dict[str, str]]:
    """Ask for the 1-5 scores ``keys`` of one (query, positive, negative) example of ``task``."""
    neg = negative.strip() if negative else "(none: this kind has no hard negative; score it 1)"
    text = "\n\n".join([
        "You are checking training data for a text-embedding model. One example was written for this task:",
        f"<task>\n{task.strip()}\n</task>",
        f"<query>\n{query.strip()}\n</query>",
        f"<positive>\n{positive.strip()}\n</positive>",
        f"<hard_negative>\n{neg}\n</hard_negative>",
        f"Score it from 1 (very poor) to 5 (excellent) on {_COUNT.get(len(keys), len(keys))} criteria:\n"
        + "\n".join(f'- "{k}": {CRITERIA[k]}' for k in keys),
        f"Reply with a JSON object with exactly these {_COUNT.get(len(keys), len(keys))} integer keys, and nothing else.",
    ])
    return [{"role": "user", "content": text}]


def rubric_mean(scores: dict[str, int] | None) -> float | None:
    """The mean of one example's rubric scores (4 decimals); None when it has none."""
    return round(sum(scores.values()) / len(scores), 4) if scores else None
