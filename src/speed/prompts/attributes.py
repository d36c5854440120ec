"""The attributes sampled for each synthesis example, with SPEED's weights (METHOD.md).

Attributes without published weights are drawn uniformly. Sampling is a pure function of the
``random.Random`` passed in (seed it per item); draws happen in a fixed order, so the same seed
gives the same attributes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from .schemas import canonical_kind


@dataclass(frozen=True)
class Attribute:
    name: str
    values: tuple[str, ...]
    weights: tuple[float, ...] | None = None  # None: uniform

    def probabilities(self) -> list[float]:
        if self.weights is None:
            return [1.0 / len(self.values)] * len(self.values)
        total = float(sum(self.weights))
        return [w / total for w in self.weights]

    def sample(self, rng: random.Random) -> str:
        if self.weights is None:
            return self.values[rng.randrange(len(self.values))]
        return rng.choices(self.values, weights=self.weights, k=1)[0]


_CLARITY = Attribute("clarity", ("clear", "understandable with some effort", "ambiguous"), (0.6, 0.2, 0.2))

ATTRIBUTES: dict[str, tuple[Attribute, ...]] = {
    "retrieval": (
        Attribute("query_type", ("extremely long-tail", "long-tail", "common"), (0.4, 0.5, 0.1)),
        Attribute("query_length", ("less than 5 words", "5 to 15 words", "at least 10 words"), (0.4, 0.4, 0.2)),
        _CLARITY,
        Attribute("num_words", ("50", "100", "200", "300", "400", "500")),
        Attribute("difficulty", ("high school", "college", "PhD")),
    ),
    "classification": (
        Attribute("num_words", ("less than 10", "at least 10", "at least 50", "at least 100", "at least 200"),
                  (0.1, 0.3, 0.2, 0.2, 0.2)),
        Attribute("difficulty", ("high school", "college", "PhD")),
        _CLARITY,
    ),
    "sts": (
        Attribute("unit", ("sentence", "phrase", "passage"), (0.9, 0.05, 0.05)),
        Attribute("high_score", ("4", "4.5", "5")),
        Attribute("low_score", ("2.5", "3", "3.5")),
        Attribute("difficulty", ("elementary school", "high school", "college")),
    ),
    "short-short": (),
    "long-long": (),
}


def attribute_space(kind: str) -> tuple[Attribute, ...]:
    return ATTRIBUTES[canonical_kind(kind)]


def sample_attributes(kind: str, rng: random.Random, language: str = "English") -> dict[str, str]:
    """Draw one value per attribute of ``kind`` from ``rng``; ``language`` is fixed, not drawn."""
    out = {a.name: a.sample(rng) for a in attribute_space(kind)}
    out["language"] = language
    return out
