"""Prompts: every prompt kind renders for every task kind, deterministically per seed."""

from __future__ import annotations

import random

import pytest

from speed.prompts import (ASYMMETRIC_KINDS, ATTRIBUTES, EXAMPLE_KEYS, GUIDELINES, TASK_KINDS, SynthesisPrompt,
                           brainstorm_messages, judge_messages, revise_messages, sample_attributes,
                           synthesis_messages, synthesis_prompt)

TOPIC = "Arts/Movies/36_Hours_-_1964/Cast_and_Crew"
TASK = "Given a film title, find reviews that discuss its cast."


def _chat(messages):
    assert isinstance(messages, list) and messages
    for m in messages:
        assert set(m) == {"role", "content"} and m["role"] in ("system", "user") and m["content"].strip()
    return messages[-1]["content"]


@pytest.mark.parametrize("kind", ASYMMETRIC_KINDS)
def test_brainstorm_renders_with_topic(kind):
    text = _chat(brainstorm_messages(kind, TOPIC, n_tasks=5))
    assert text.splitlines()[0].endswith(f"for the topic: {TOPIC}")
    assert f"Every task in the list must be for the topic: {TOPIC}" in text
    assert text.rstrip().endswith('["first task ...", "second task ..."]')  # the format comes last
    assert "JSON list" in text and "about 5" in text
    if kind == "classification":
        assert "sentiment" in text  # the release's "avoid overused tasks" instruction


def test_brainstorm_refuses_sts():
    with pytest.raises(ValueError):
        brainstorm_messages("sts", TOPIC)


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_synthesis_renders_keys_and_attributes(kind):
    p = synthesis_prompt(kind, TASK, TOPIC, random.Random(3))
    assert isinstance(p, SynthesisPrompt) and p.kind == kind and p.topic == TOPIC and p.task == TASK
    text = _chat(p.messages)
    for key in EXAMPLE_KEYS[kind]:
        assert f'"{key}"' in text
    for name, value in p.attributes.items():
        if name == "language":
            assert "English" in text
            continue
        # every required guideline that uses an attribute appears, so its value is in the text
        assert value in text, (name, value)
    if kind == "sts":
        assert f"for the topic: {TOPIC}" in text
    else:
        assert TASK in text
    assert "{query_type}" not in text and "{num_words}" not in text and "{unit}" not in text


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_synthesis_deterministic_and_seed_dependent(kind):
    a = synthesis_prompt(kind, TASK, TOPIC, random.Random(11))
    b = synthesis_prompt(kind, TASK, TOPIC, random.Random(11))
    assert a.to_dict() == b.to_dict()
    variants = {(tuple(sorted(p.attributes.items())), p.guidelines)
                for p in (synthesis_prompt(kind, TASK, TOPIC, random.Random(s)) for s in range(40))}
    assert len(variants) > 1
    if ATTRIBUTES[kind]:
        attrs = {tuple(sorted(synthesis_prompt(kind, TASK, TOPIC, random.Random(s)).attributes.items()))
                 for s in range(40)}
        assert len(attrs) > 1


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_synthesis_render_is_pure(kind):
    p = synthesis_prompt(kind, TASK, TOPIC, random.Random(5))
    assert synthesis_messages(kind, TASK, TOPIC, p.attributes, p.guidelines) == p.messages
    full = synthesis_messages(kind, TASK, TOPIC, p.attributes)  # no plan: every guideline
    assert full[0]["content"].count("\n- ") >= len(GUIDELINES[kind])


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_guideline_plan_shuffles_and_drops_optional(kind):
    required = {g.id for g in GUIDELINES[kind] if not g.optional}
    optional = {g.id for g in GUIDELINES[kind] if g.optional}
    plans = [synthesis_prompt(kind, TASK, TOPIC, random.Random(s)).guidelines for s in range(400)]
    for plan in plans:
        assert required <= set(plan) and len(set(plan)) == len(plan)
    assert len({p for p in plans}) > 1
    for g in optional:
        share = sum(g in p for p in plans) / len(plans)
        assert 0.4 < share < 0.6, (g, share)


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_judge_and_revise_render(kind):
    p = synthesis_prompt(kind, TASK, TOPIC, random.Random(1))
    cands = ['{"a": "first"}', '{"a": "second"}', '{"a": "third"}']
    j = _chat(judge_messages(p.text, cands))
    assert p.text.strip() in j and "[0]" in j and "[2]" in j and '"best"' in j and '"worst"' in j
    assert "start at 0" in j
    r = _chat(revise_messages(p.text, cands[0]))
    assert p.text.strip() in r and cands[0] in r and '"revision"' in r and '"reason"' in r
    with pytest.raises(ValueError):
        judge_messages(p.text, cands[:1])


def test_language_is_fixed_not_drawn():
    a = sample_attributes("retrieval", random.Random(0), language="French")
    assert a["language"] == "French"
    text = synthesis_prompt("short-short", TASK, TOPIC, random.Random(0), language="French").messages[0]["content"]
    assert "French" in text
