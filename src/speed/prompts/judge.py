"""The preference-judge prompt: a data prompt and an indexed list of outputs -> {reason, best, worst}."""

from __future__ import annotations

from typing import Sequence


def judge_messages(data_prompt: str, candidates: Sequence[str]) -> list[dict[str, str]]:
    """Ask which candidate (indices from 0) fits ``data_prompt`` best and which worst."""
    if len(candidates) < 2:
        raise ValueError("the judge needs at least two candidates")
    listing = "\n\n".join(f"[{i}]\n{c.strip()}" for i, c in enumerate(candidates))
    text = "\n\n".join([
        "A language model was given the following prompt:",
        f"<prompt>\n{data_prompt.strip()}\n</prompt>",
        f"It produced these {len(candidates)} outputs, numbered from 0:",
        f"<outputs>\n{listing}\n</outputs>",
        "Your job is to decide which output fits the prompt best and which fits it worst, and to "
        "say why in one or two sentences.",
        "Reply with a JSON object that has these keys, in this order (the decision first):\n"
        '- "best": an integer, the index of the output that fits the prompt best (indices start at 0).\n'
        '- "worst": an integer, the index of the output that fits the prompt worst.\n'
        '- "reason": a string, why you picked them (one or two sentences).',
        "Reply with the JSON object only, and nothing else.",
    ])
    return [{"role": "user", "content": text}]
