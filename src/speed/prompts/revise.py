"""The revision prompt: a data prompt and one output -> {reason, revision}."""

from __future__ import annotations


def revise_messages(data_prompt: str, example: str) -> list[dict[str, str]]:
    """Ask for an evaluation (relevance, completeness, accuracy) and a corrected example."""
    text = "\n\n".join([
        "A language model was given the following prompt:",
        f"<prompt>\n{data_prompt.strip()}\n</prompt>",
        "It produced this output:",
        f"<output>\n{example.strip()}\n</output>",
        "Evaluate the output on three points:\n"
        "1. Relevance: does it address the task that the prompt describes?\n"
        "2. Completeness: does it contain everything the prompt asks for?\n"
        "3. Accuracy: is it factually correct, and does it follow the prompt's guidelines?",
        "Explain each point briefly, then write a corrected version of the output.",
        "Reply with a JSON object that has these keys:\n"
        '- "reason": a string, your evaluation.\n'
        '- "revision": a string, the corrected output: a JSON object with the same keys as the '
        "original output, written as a string.",
        "Reply with the valid JSON object only; add no other explanation or text.",
    ])
    return [{"role": "user", "content": text}]
