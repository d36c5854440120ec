"""The teacher's quality rubric for one finished example: 1-5 scores for query realism, positive
relevance and negative hardness (the study's teacher-judged signal; calls counted like any other)."""

from __future__ import annotations

RUBRIC_KEYS = ("query_realism", "positive_relevance", "negative_hardness")


def rubric_messages(kind: str, task: str, query: str, positive: str, negative: str | None) -> list[dict[str, str]]:
    """Ask for the three 1-5 scores of one (query, positive, negative) example of ``task``."""
    neg = negative.strip() if negative else "(none: this kind has no hard negative; score it 1)"
    text = "\n\n".join([
        "You are checking training data for a text-embedding model. One example was written for this task:",
        f"<task>\n{task.strip()}\n</task>",
        f"<query>\n{query.strip()}\n</query>",
        f"<positive>\n{positive.strip()}\n</positive>",
        f"<hard_negative>\n{neg}\n</hard_negative>",
        "Score it from 1 (very poor) to 5 (excellent) on three criteria:\n"
        '- "query_realism": would a real user or system produce this query for the task?\n'
        '- "positive_relevance": does the positive truly match or answer the query?\n'
        '- "negative_hardness": is the hard negative on the same subject and close to the query, yet clearly '
        "a worse match than the positive? (1 if it is unrelated, or if it matches the query as well as the positive)",
        "Reply with a JSON object with exactly these three integer keys, and nothing else.",
    ])
    return [{"role": "user", "content": text}]
