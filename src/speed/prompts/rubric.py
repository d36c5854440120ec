"""The teacher's quality rubric for one finished example: 1-5 scores for query realism, positive
relevance and negative hardness (the study's teacher-judged signal), plus validity for the ``score``
stage (``SCORE_KEYS``). Calls are counted like any other."""

from __future__ import annotations

RUBRIC_KEYS = ("query_realism", "positive_relevance", "negative_hardness")
SCORE_KEYS = RUBRIC_KEYS + ("validity",)
# each criterion as a 1-5 scale with its ends described: phrased as yes/no questions ("does the positive truly
# match the query?"), the study's 0.5B teacher answered 1 or true for every criterion of every example, real and
# shuffled positives alike (README, "Is the data any good?"; with this wording it parses, but still rates alike)
CRITERIA = {
    "query_realism": "1 = not something a real user or system would write for this task (nonsense, an "
                     "instruction, a copy of the document); 3 = plausible but odd; 5 = exactly what a real user "
                     "would write",
    "positive_relevance": "1 = the positive is about something else and does not match or answer the query; "
                          "3 = partly matches; 5 = fully matches or answers the query",
    "negative_hardness": "1 = the hard negative is unrelated to the query, or matches it as well as the "
                         "positive (or there is none); 3 = same broad subject, easy to tell apart; 5 = same "
                         "subject and close to the query, yet clearly a worse match than the positive",
    "validity": "1 = malformed (placeholders, leftover instructions, text cut off, a part that is not the kind of "
                "text the task asks for); 3 = minor problems; 5 = a well-formed example of the task",
}
_COUNT = {3: "three", 4: "four"}


def rubric_messages(kind: str, task: str, query: str, positive: str, negative: str | None,
                    keys: tuple[str, ...] = RUBRIC_KEYS) -> list[dict[str, str]]:
    """Ask for the 1-5 scores ``keys`` of one (query, positive, negative) example of ``task``."""
    neg = negative.strip() if negative else "(none: this kind has no hard negative)"
    count = _COUNT.get(len(keys), len(keys))
    text = "\n\n".join([
        "You are checking training data for a text-embedding model. One example was written for this task:",
        f"<task>\n{task.strip()}\n</task>",
        f"<query>\n{query.strip()}\n</query>",
        f"<positive>\n{positive.strip()}\n</positive>",
        f"<hard_negative>\n{neg}\n</hard_negative>",
        f"Rate the example on {count} scales, each an integer from 1 to 5:\n"
        + "\n".join(f'- "{k}": {CRITERIA[k]}' for k in keys),
        "Compare the texts above before you rate; use the whole scale. Reply with only a JSON object: "
        + "{" + ", ".join(f'"{k}": N' for k in keys) + "}, where each N is your integer rating from 1 to 5.",
    ])
    return [{"role": "user", "content": text}]


def rubric_mean(scores: dict[str, int] | None) -> float | None:
    """The mean of one example's rubric scores (4 decimals); None when it has none."""
    return round(sum(scores.values()) / len(scores), 4) if scores else None
