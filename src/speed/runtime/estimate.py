"""Rough plan estimates for ``speed run --dry-run``: model calls and tokens per stage, and a cost.

A stage's declaration gives its calls (``calls(config, cfg)``) and tokens per call
(``tokens_per_call``), calibrated on the paper's own accounting (appendix: 25K SFT signals ~10M
teacher tokens, 10K preference signals ~12M, 10K revision signals ~10M, i.e. about 400, 1,200 and
1,000 tokens per call) and on our prompts' sizes; they are estimates, not promises.
"""

from __future__ import annotations

from ..stages import declaration


def price_of(ref, batch: bool = False) -> tuple[float, float]:
    """USD per 1M (prompt, completion) tokens of ``ref``: its list price, or its Batch API price."""
    from ..analysis.cost import PriceTable

    if ref is None or ref.backend != "openai":
        return (0.0, 0.0)
    table = PriceTable.load()
    return (table.batch_price(ref.model) if batch else table.price(ref.model)) or (0.0, 0.0)


def estimate(config, name: str) -> dict | None:
    stage = declaration(name)
    if stage.calls is None:
        return None
    calls, role = stage.calls(config, config.stage(name)), stage.roles[0]
    p, c = stage.tokens_per_call
    ref = config.models.get(role)
    prompt_tokens, completion_tokens = calls * p, calls * c

    def usd(batch: bool) -> float:
        pp, pc = price_of(ref, batch)
        return round(prompt_tokens / 1e6 * pp + completion_tokens / 1e6 * pc, 2)

    batch = bool(getattr(ref, "batch", False))
    return {"role": role, "model": ref.model if ref else None, "calls": calls, "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens, "batch": batch, "usd_live": usd(False), "usd_batch": usd(True),
            "usd": usd(batch)}
