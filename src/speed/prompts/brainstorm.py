"""Task-brainstorm prompts for the asymmetric kinds, each asking for tasks for one topic."""

from __future__ import annotations

from .schemas import ASYMMETRIC_KINDS, canonical_kind

_SPEC: dict[str, dict] = {
    "retrieval": {
        "what": "text retrieval tasks",
        "examples": [
            "Given a question about a medication's side effects, find patient leaflets that answer it.",
            "Given the name of a hiking trail, retrieve trip reports that describe its current conditions.",
        ],
        "guidelines": [
            "Say what the query is and what the documents to be found are.",
            "Each task should allow a wide range of queries; do not make it too narrow.",
        ],
        "item": "retrieval task",
    },
    "classification": {
        "what": "text classification tasks",
        "examples": [
            "Decide whether a customer support message asks for a refund, a replacement or information.",
            "Classify a recipe by the cooking technique it relies on most.",
        ],
        "guidelines": [
            "Each task should sort texts into a small, well-defined set of labels.",
            "Stay away from the overused kinds of task: sentiment, topic, spam, genre, language and "
            "urgency classification.",
        ],
        "item": "classification task",
    },
    "short-short": {
        "what": "text matching tasks where both the query and the document are very short "
                "(a phrase or one sentence)",
        "examples": [
            "Given a product title, find the title of a compatible accessory.",
            "Given an idiom, find a short phrase with the same meaning.",
        ],
        "guidelines": [
            "Say what the query is and what the matching text is.",
            "Both sides of every task must be short: a phrase or a single sentence.",
        ],
        "item": "text matching task",
    },
    "long-long": {
        "what": "text matching tasks where both the query and the document are long passages "
                "(at least 300 words)",
        "examples": [
            "Given a news article, find another article that covers the same event from a different outlet.",
            "Given a research abstract, find the abstract of a study that repeats its experiments.",
        ],
        "guidelines": [
            "Say what the query is and what the matching document is.",
            "Both sides of every task must be long documents, not sentences.",
        ],
        "item": "text matching task",
    },
}


def brainstorm_messages(kind: str, topic: str, n_tasks: int = 5) -> list[dict[str, str]]:
    """Chat messages asking for a JSON list of about ``n_tasks`` task descriptions for ``topic``."""
    kind = canonical_kind(kind)
    if kind not in ASYMMETRIC_KINDS:
        raise ValueError(f"task kind {kind!r} has no brainstorm step (allowed: {', '.join(ASYMMETRIC_KINDS)})")
    spec = _SPEC[kind]
    parts = [
        f"Brainstorm a list of potentially useful {spec['what']} for the topic: {topic}",
        "Two examples, for reference only:\n" + "\n".join(f"- {e}" for e in spec["examples"]),
        "Follow these guidelines:\n" + "\n".join(f"- {g}" for g in spec["guidelines"]),
        f"Every task in the list must be for the topic: {topic}",
        f"Reply with a JSON list of strings only, with about {n_tasks} elements; each element is a "
        f"distinct {spec['item']} described in one sentence of about 10 words. Do not explain yourself "
        "or write anything else. Be creative!",
        'Your whole answer is one JSON list, for example: ["first task ...", "second task ..."]',
    ]
    return [{"role": "user", "content": "\n\n".join(parts)}]
