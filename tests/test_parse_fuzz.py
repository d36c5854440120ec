"""Property-based fuzzing of the output parser: it never raises, and never accepts an invalid example."""

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speed.prompts import EXAMPLE_KEYS, TASK_KINDS, parse_brainstorm, parse_example, parse_judge, parse_revision

VALID = {
    "retrieval": {"user_query": "how do tides work", "positive_document": "Tides are caused by the moon's gravity.",
                  "hard_negative_document": "Waves are caused by wind blowing over the sea."},
    "classification": {"input_text": "The battery died after two days.", "label": "negative",
                       "misleading_label": "positive"},
    "sts": {"S1": "A man is playing a guitar.", "S2": "A man plays the guitar.", "S3": "A woman is cooking rice."},
    "short-short": {"input": "cheap flights to rome", "positive_document": "Low-cost airfare to Rome, Italy"},
    "long-long": {"input": "A long essay about rivers and their deltas.",
                  "positive_document": "A long survey of sediment transport in river deltas."},
}


def _assert_valid(kind, value):
    keys = EXAMPLE_KEYS[kind]
    assert isinstance(value, dict) and set(value) == set(keys)
    for k in keys:
        assert isinstance(value[k], str) and value[k].strip()
    assert len({" ".join(value[k].lower().split()) for k in keys}) == len(keys)  # no two fields the same


def _mutate(text: str, ops: list[tuple[int, int, str]]) -> str:
    for kind, pos, chunk in ops:
        pos = pos % (len(text) + 1)
        if kind == 0:
            text = text[:pos] + chunk + text[pos:]  # insert
        elif kind == 1:
            text = text[:pos] + text[pos + len(chunk) + 1:]  # delete
        elif kind == 2:
            text = text[:pos]  # truncate
        else:
            text = text[:pos] + chunk + text[pos + len(chunk):]  # overwrite
    return text


OPS = st.lists(st.tuples(st.integers(0, 3), st.integers(0, 10_000),
                         st.text(alphabet=st.sampled_from('{}[]",:\' \n`abc0\\'), max_size=6)), max_size=6)
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(kind=st.sampled_from(TASK_KINDS), text=st.text(max_size=400))
def test_random_text_never_raises_and_is_never_wrongly_accepted(kind, text):
    r = parse_example(kind, text)
    assert r.raw == text
    if r.ok:
        _assert_valid(kind, r.value)
    else:
        assert r.reason
    for res in (parse_brainstorm(text), parse_judge(text, 3), parse_revision(kind, text)):
        assert res.ok or res.reason


@FUZZ
@given(kind=st.sampled_from(TASK_KINDS), ops=OPS, fence=st.booleans(), prose=st.booleans())
def test_mutations_of_valid_outputs_parse_or_are_rejected_with_a_reason(kind, ops, fence, prose):
    text = json.dumps(VALID[kind], indent=2)
    if fence:
        text = "```json\n" + text + "\n```"
    if prose:
        text = "Here is the example:\n" + text + "\nHope this helps."
    mutated = _mutate(text, ops)
    r = parse_example(kind, mutated)
    if r.ok:
        _assert_valid(kind, r.value)
    else:
        assert r.reason and r.raw == mutated


@FUZZ
@given(n=st.integers(2, 6), best=st.integers(-3, 9), worst=st.integers(-3, 9), ops=OPS)
def test_judge_verdicts_are_in_range_and_distinct(n, best, worst, ops):
    text = _mutate(json.dumps({"reason": "because", "best": best, "worst": worst}), ops)
    r = parse_judge(text, n)
    if r.ok:
        assert 0 <= r.value["best"] < n and 0 <= r.value["worst"] < n and r.value["best"] != r.value["worst"]
