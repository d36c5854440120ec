"""Rough plan estimates for ``speed run --dry-run``: model calls and tokens per stage, and a cost.

Token counts per call are calibrated on the paper's own accounting (appendix: 25K SFT signals
~10M teacher tokens, 10K preference signals ~12M, 10K revision signals ~10M, i.e. about 400,
1,200 and 1,000 tokens per call) and on our prompts' sizes; they are estimates, not promises.
"""

from __future__ import annotations

# (prompt tokens, completion tokens) per call, by stage
PER_CALL: dict[str, tuple[int, int]] = {
    "brainstorm": (260, 120),
    "seed": (250, 150),
    "root": (250, 150),
    "judge": (950, 250),
    "revise-signals": (600, 400),
    "synthesize": (250, 150),
    "revise": (600, 250),
}

def price_of(ref) -> tuple[float, float]:
    from .analysis.cost import DEFAULT_PRICES

    if ref is None or ref.backend != "openai":
        return (0.0, 0.0)
    return DEFAULT_PRICES.get(ref.model, (0.0, 0.0))


def _calls(config, name: str) -> int | None:
    stages = config.stages
    topics = config.stage("topics").count
    if name == "brainstorm":
        return topics * len(config.stage("brainstorm").kinds)
    if name == "seed":
        return config.stage("seed").count
    if name == "root":
        c = config.stage("root")
        return c.count * c.candidates_per_prompt
    if name == "judge":
        return config.stage("root").count
    if name == "revise-signals":
        return config.stage("root").count * config.stage("revise-signals").per_prompt
    if name == "synthesize":
        c = config.stage("synthesize")
        return c.count * c.samples_per_prompt
    if name == "revise":
        c = config.stage("synthesize")
        return c.count * c.samples_per_prompt
    del stages
    return None


ROLE_OF = {"brainstorm": "teacher", "seed": "teacher", "judge": "teacher", "revise-signals": "teacher",
           "root": "junior", "synthesize": "senior", "revise": "revisor"}


def estimate(config, name: str) -> dict | None:
    calls = _calls(config, name)
    if calls is None:
        return None
    role = ROLE_OF[name]
    p, c = PER_CALL[name]
    ref = config.models.get(role)
    pp, pc = price_of(ref)
    prompt_tokens, completion_tokens = calls * p, calls * c
    return {"role": role, "model": ref.model if ref else None, "calls": calls, "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "usd": round(prompt_tokens / 1e6 * pp + completion_tokens / 1e6 * pc, 2)}
