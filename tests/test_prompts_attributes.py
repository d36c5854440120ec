"""Attribute sampling follows SPEED's weights (uniform where none are published)."""

from __future__ import annotations

import math
import random

import pytest

from speed.prompts import ATTRIBUTES, sample_attributes

N = 20_000


@pytest.mark.parametrize("kind", ["retrieval", "classification", "sts"])
def test_attribute_frequencies_match_weights(kind):
    rng = random.Random(1234)
    draws = [sample_attributes(kind, rng) for _ in range(N)]
    for attr in ATTRIBUTES[kind]:
        counts = {v: 0 for v in attr.values}
        for d in draws:
            counts[d[attr.name]] += 1
        assert sum(counts.values()) == N
        chi2 = 0.0
        for value, p in zip(attr.values, attr.probabilities()):
            expected = N * p
            sigma = math.sqrt(N * p * (1 - p))
            assert abs(counts[value] - expected) <= 4 * sigma, (attr.name, value, counts[value], expected)
            chi2 += (counts[value] - expected) ** 2 / expected
        # chi-square with k-1 dof: far below the 0.9999 quantile (mean k-1, sd sqrt(2(k-1)))
        dof = len(attr.values) - 1
        assert chi2 < dof + 8 * math.sqrt(2 * dof), (attr.name, chi2)


def test_published_weights():
    w = {a.name: a.probabilities() for a in ATTRIBUTES["retrieval"]}
    assert w["query_type"] == pytest.approx([0.4, 0.5, 0.1])
    assert w["query_length"] == pytest.approx([0.4, 0.4, 0.2])
    assert w["clarity"] == pytest.approx([0.6, 0.2, 0.2])
    assert w["num_words"] == pytest.approx([1 / 6] * 6)
    c = {a.name: a.probabilities() for a in ATTRIBUTES["classification"]}
    assert c["num_words"] == pytest.approx([0.1, 0.3, 0.2, 0.2, 0.2])
    s = {a.name: a.probabilities() for a in ATTRIBUTES["sts"]}
    assert s["unit"] == pytest.approx([0.9, 0.05, 0.05])
    assert ATTRIBUTES["short-short"] == () and ATTRIBUTES["long-long"] == ()


def test_sampling_is_a_pure_function_of_the_rng():
    assert [sample_attributes("retrieval", random.Random(s)) for s in range(50)] == \
        [sample_attributes("retrieval", random.Random(s)) for s in range(50)]
    assert sample_attributes("long-long", random.Random(0)) == {"language": "English"}
