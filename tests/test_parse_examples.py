"""Parsing and validation: every kind's schema, the repairs, brainstorm/judge/revision outputs."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from speed.prompts import EXAMPLE_KEYS, TASK_KINDS, parse_brainstorm, parse_example, parse_judge, parse_revision

GOOD = {
    "retrieval": {"user_query": "best hiking boots for wet weather",
                  "positive_document": "Waterproof boots with a Gore-Tex lining keep feet dry on muddy trails.",
                  "hard_negative_document": "Hiking is a popular outdoor activity in many countries."},
    "classification": {"input_text": "My parcel arrived broken and I want my money back.",
                       "label": "refund request", "misleading_label": "replacement request"},
    "sts": {"S1": "A cat sleeps on the warm windowsill.", "S2": "A cat naps on the sunny window ledge.",
            "S3": "A dog barks at the window."},
    "short-short": {"input": "break a leg", "positive_document": "good luck"},
    "long-long": {"input": "word " * 320, "positive_document": "other " * 310},
}


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_valid_example_per_kind(kind):
    r = parse_example(kind, json.dumps(GOOD[kind]))
    assert r.ok and r.reason is None and set(r.value) == set(EXAMPLE_KEYS[kind]) and r.repairs == []


@pytest.mark.parametrize("kind", TASK_KINDS)
@pytest.mark.parametrize("drop", [0, 1, -1])
def test_missing_key_per_kind(kind, drop):
    obj = dict(GOOD[kind])
    key = EXAMPLE_KEYS[kind][drop]
    del obj[key]
    r = parse_example(kind, json.dumps(obj))
    assert not r.ok and r.reason == "missing_key" and key in r.detail


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_empty_and_non_string_values(kind):
    key = EXAMPLE_KEYS[kind][-1]
    assert parse_example(kind, json.dumps({**GOOD[kind], key: "   "})).reason == "empty_value"
    assert parse_example(kind, json.dumps({**GOOD[kind], key: 3})).reason == "not_a_string"
    assert parse_example(kind, json.dumps({**GOOD[kind], key: ["a"]})).reason == "not_a_string"
    assert parse_example(kind, json.dumps({**GOOD[kind], key: "..."})).reason == "placeholder_value"
    assert parse_example(kind, json.dumps({**GOOD[kind], key: key})).reason == "placeholder_value"


@pytest.mark.parametrize("kind", TASK_KINDS)
def test_extra_keys_dropped_and_noted(kind):
    r = parse_example(kind, json.dumps({**GOOD[kind], "explanation": "because", "score": 4}))
    assert r.ok and r.dropped_keys == ["explanation", "score"] and "explanation" not in r.value


def test_kind_specific_rules():
    g = GOOD["retrieval"]
    r = parse_example("retrieval", json.dumps({**g, "hard_negative_document": g["positive_document"].upper()}))
    assert r.reason == "positive_equals_negative"
    r = parse_example("retrieval", json.dumps({**g, "user_query": g["positive_document"]}))
    assert r.reason == "query_equals_document"
    c = GOOD["classification"]
    assert parse_example("classification", json.dumps({**c, "misleading_label": " Refund  Request"})).reason == "bad_label"
    s = GOOD["sts"]
    assert parse_example("sts", json.dumps({**s, "S3": s["S1"]})).reason == "duplicate_sentences"
    assert parse_example("sts", json.dumps({**s, "S2": s["S3"]})).reason == "duplicate_sentences"
    for kind in ("short-short", "long-long"):
        m = GOOD[kind]
        assert parse_example(kind, json.dumps({**m, "input": m["positive_document"]})).reason == "input_equals_positive"


def test_length_flags_recorded_not_enforced():
    attrs = {"query_length": "less than 5 words", "num_words": "50"}
    r = parse_example("retrieval", json.dumps(GOOD["retrieval"]), attrs)
    assert r.ok and r.length_ok == {"user_query": False, "positive_document": False, "hard_negative_document": False}
    r = parse_example("retrieval", json.dumps({**GOOD["retrieval"], "user_query": "wet boots"}),
                      {"query_length": "5 to 15 words", "num_words": "8"})
    assert r.ok and r.length_ok == {"user_query": False, "positive_document": True, "hard_negative_document": True}
    r = parse_example("classification", json.dumps(GOOD["classification"]), {"num_words": "less than 10"})
    assert r.ok and r.length_ok == {"input_text": False}
    r = parse_example("classification", json.dumps(GOOD["classification"]), {"num_words": "at least 10"})
    assert r.length_ok == {"input_text": True}
    assert parse_example("long-long", json.dumps(GOOD["long-long"])).length_ok == {"input": True,
                                                                                 "positive_document": True}
    short = parse_example("long-long", json.dumps({"input": "a b", "positive_document": "c d"}))
    assert short.ok and short.length_ok == {"input": False, "positive_document": False}
    assert parse_example("short-short", json.dumps(GOOD["short-short"])).length_ok == {"input": True,
                                                                                     "positive_document": True}


S = '{"S1": "a cat sat", "S2": "a cat sits", "S3": "a dog ran"}'


@pytest.mark.parametrize("text,repair", [
    ("```json\n" + S + "\n```", "code_fence"),
    ("```\n" + S + "\n```\nHope this helps!", "code_fence"),
    ("Sure! Here is the triple:\n" + S + "\nLet me know.", "surrounding_text"),
    ('{"S1": "a cat sat", "S2": "a cat sits", "S3": "a dog ran",}', "trailing_comma"),
    ('{"S1": "a cat sat", "S2": "a cat sits", "S3": "a dog ran"', "closed_brackets"),
    ('{"S1": "a cat sat", "S2": "a cat sits", "S3": "a dog ran', "closed_brackets"),
    ("{'S1': 'a cat sat', 'S2': 'a cat sits', 'S3': \"a dog's bone\"}", "python_literal"),
    ('[' + S + ']', "first_of_list"),
    ('{"example": ' + S + '}', "unwrapped"),
])
def test_repairs(text, repair):
    r = parse_example("sts", text)
    assert r.ok, (r.reason, r.detail)
    assert repair in r.repairs and r.raw == text


@pytest.mark.parametrize("text,reason", [
    ("", "no_json"),
    ("I cannot help with that.", "no_json"),
    ("{not json at all: [}", "invalid_json"),
    ('"just a string"', "no_json"),
    ("[1, 2, 3]", "not_an_object"),
    ('{"S1": "a", "S2": ', "missing_key"),
])
def test_rejections_keep_raw(text, reason):
    r = parse_example("sts", text)
    assert not r.ok and r.reason == reason and r.raw == text


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(list('{}[]",:\'` \n\\abcS123.ty') + ["true", "null", "```json", '"S1": ']),
                max_size=80).map("".join))
def test_never_raises_on_json_like_noise(text):
    for kind in TASK_KINDS:
        r = parse_example(kind, text)
        assert r.raw == text and (r.ok or r.reason)
    assert parse_brainstorm(text).raw == text
    assert parse_judge(text, 3).raw == text
    assert parse_revision("sts", text).raw == text


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=300))
def test_never_raises_on_any_text(text):
    for kind in TASK_KINDS:
        parse_example(kind, text)
    parse_brainstorm(text)
    parse_judge(text, 4)
    parse_revision("retrieval", text)


def test_never_raises_on_pathological_inputs():
    for text in ["[" * 5000, "{" * 5000 + "}" * 10, '{"a": ' * 3000, "x" * 300_000, "{" + "'a'," * 10000 + "}"]:
        for kind in TASK_KINDS:
            assert not parse_example(kind, text).ok


# brainstorm --------------------------------------------------------------------------------------

def test_brainstorm_outputs():
    r = parse_brainstorm('["Find recipes by ingredient.", "Match reviews to products."]')
    assert r.ok and r.value == ["Find recipes by ingredient.", "Match reviews to products."]
    r = parse_brainstorm('```python\n["a task one", \'a task two\',]\n```')
    assert r.ok and r.value == ["a task one", "a task two"]
    r = parse_brainstorm('{"tasks": ["task a", "task a", 3, "", "task b"]}')
    assert r.ok and r.value == ["task a", "task b"] and "unwrapped" in r.repairs
    assert any(x.startswith("dropped_items") for x in r.repairs)
    r = parse_brainstorm('Here are some:\n["task a", "task b"')
    assert r.ok and r.value == ["task a", "task b"]
    assert parse_brainstorm("[]").reason == "empty_list"
    assert parse_brainstorm("[1, 2]").reason == "empty_list"
    assert parse_brainstorm('{"a": 1}').reason == "not_a_list"
    assert parse_brainstorm("no list here").reason == "no_json"
    r = parse_brainstorm('[{"task": "find a thing"}, {"task": "match two things"}]')
    assert r.ok and r.value == ["find a thing", "match two things"]


def test_brainstorm_markdown_lists_from_the_offline_teacher():
    # real answers of qwen2.5-coder-1.5b-instruct (llama.cpp) to the brainstorm prompt
    r = parse_brainstorm("- Find detailed land records for a specific property or area.\n"
                         "- Retrieve historical trends in agricultural practices in a particular region.\n")
    assert r.ok and r.value == ["Find detailed land records for a specific property or area.",
                                "Retrieve historical trends in agricultural practices in a particular region."]
    assert "markdown_list" in r.repairs
    r = parse_brainstorm("- **Identify Relevant Listings:** Given a list of listings, find a matching one.\n"
                         "- **Analyze Property Details:** Given a description, find similar properties.\n"
                         "  - a nested note that is not a task\n")
    assert r.ok and r.value == ["Identify Relevant Listings: Given a list of listings, find a matching one.",
                                "Analyze Property Details: Given a description, find similar properties."]
    r = parse_brainstorm("Tasks:\n1. Classify a medical condition by symptoms.\n2) Predict patient risk.\n")
    assert r.ok and r.value == ["Classify a medical condition by symptoms.", "Predict patient risk."]
    assert parse_brainstorm("- only one item").reason == "no_json"


# judge -------------------------------------------------------------------------------------------

def test_judge_outputs():
    r = parse_judge('{"reason": "0 follows the length rule", "best": 0, "worst": 2}', 3)
    assert r.ok and r.value == {"reason": "0 follows the length rule", "best": 0, "worst": 2}
    assert parse_judge('{"reason": "x", "best": "1", "worst": 2.0}', 3).value == {"reason": "x", "best": 1, "worst": 2}
    assert parse_judge('{"reason": "x", "best": 3, "worst": 0}', 3).reason == "bad_index"
    assert parse_judge('{"reason": "x", "best": -1, "worst": 0}', 3).reason == "bad_index"
    assert parse_judge('{"reason": "x", "best": "first", "worst": 0}', 3).reason == "bad_index"
    assert parse_judge('{"reason": "x", "best": true, "worst": 0}', 3).reason == "bad_index"
    assert parse_judge('{"reason": "x", "best": 1, "worst": 1}', 3).reason == "best_equals_worst"
    assert parse_judge('{"reason": "x", "best": 1}', 3).reason == "missing_key"
    assert parse_judge('{"reason": 5, "best": 1, "worst": 0}', 3).reason == "not_a_string"
    assert parse_judge('["reason", 1, 0]', 3).reason == "not_an_object"
    r = parse_judge('```json\n{"reason": "x", "best": 1, "worst": 0, "score": 9}\n```', 2)
    assert r.ok and r.dropped_keys == ["score"]


# revision ----------------------------------------------------------------------------------------

def test_revision_outputs():
    ex = GOOD["classification"]
    r = parse_revision("classification", json.dumps({"reason": "fine", "revision": json.dumps(ex)}))
    assert r.ok and r.value == {"reason": "fine", "revision": ex} and r.inner.ok
    r = parse_revision("classification", json.dumps({"reason": "fine", "revision": ex}))
    assert r.ok and r.value["revision"] == ex
    r = parse_revision("classification", json.dumps({"reason": {"relevance": "ok"}, "revision": ex}))
    assert r.ok and "reason_to_string" in r.repairs
    bad = {**ex, "misleading_label": ex["label"]}
    r = parse_revision("classification", json.dumps({"reason": "x", "revision": json.dumps(bad)}))
    assert not r.ok and r.reason == "bad_revision" and r.inner.reason == "bad_label"
    r = parse_revision("classification", json.dumps({"reason": "x", "revision": "I improved it."}))
    assert r.reason == "bad_revision" and r.inner.reason == "no_json"
    assert parse_revision("classification", '{"reason": "x"}').reason == "missing_key"
    assert parse_revision("retrieval", "nothing").reason == "no_json"


def test_revision_with_the_example_unescaped_inside_its_string():
    """Qwen2.5-Coder-0.5B as the study's teacher wrote 17 of 56 revisions with the example unescaped inside the
    revision string (the outer JSON then breaks): read by the keys' positions, as these real answers."""
    text = ('{\n  "reason": "The output does not address the task described in the prompt.",\n  "revision": "{\n'
            '    "S1": "The use of computers and internet in the past",\n    "S2": "The development of technology '
            'and internet in the present",\n    "S3": "The use of technology in the future"\n  }"\n}')
    r = parse_revision("sts", text)
    assert r.ok and "revision_by_key_position" in r.repairs
    assert r.value["reason"] == "The output does not address the task described in the prompt."
    assert r.value["revision"]["S2"] == "The development of technology and internet in the present"
    fenced = ('```json\n{\n  "reason": "Accurate.",\n  "revision": \'{"user_query": "What are side effects?", '
              '"positive_document": "Nausea and headache are common.", "hard_negative_document": "Leaflets are '
              'printed on paper."}\'\n}\n```')
    r = parse_revision("retrieval", fenced)
    assert r.ok and r.value["revision"]["user_query"] == "What are side effects?"
    # one level down: {"revision": {"example": {...}}}
    ex = GOOD["classification"]
    r = parse_revision("classification", json.dumps({"reason": "x", "revision": {"example": ex}}))
    assert r.ok and r.value["revision"] == ex and "revision_unwrapped" in r.repairs
    # a revision that is prose or empty stays a rejection, with its raw text
    r = parse_revision("sts", '{\n  "reason": "Incomplete.",\n  "revision": "{}"\n}')
    assert not r.ok and r.reason == "bad_revision" and r.raw.startswith("{")
    assert parse_revision("sts", '{"reason": "x", "revision": "{ "S1": "a" }"').reason == "bad_revision"


def test_duplicate_keys_of_a_looping_model():
    """A looping model writes its keys again: the first value of each key is the example (seen in a demo run:
    28 of 64 rejected SmolLM2 samples were such loops)."""
    text = '{"S1": "a", "S2": "b", "S3": "c", "S1": "d", "S2": "e"}'
    r = parse_example("sts", text)
    assert r.ok and r.value == {"S1": "a", "S2": "b", "S3": "c"} and "repeated_keys_first_kept" in r.repairs
    # the first values still meet the kind's rules
    r = parse_example("retrieval", '{"user_query": "q", "positive_document": "d", "hard_negative_document": "d", '
                                   '"user_query": "q2", "hard_negative_document": "n"}')
    assert not r.ok and r.reason == "positive_equals_negative"
    # repeats inside a nested value or of an extra key do not matter
    ok = '{"S1": "a", "S2": "b", "S3": "c", "note": 1, "note": 2}'
    assert parse_example("sts", ok).ok
    assert parse_example("sts", '{"S1": "a", "S2": "b", "S3": "c", "x": {"k": 1, "k": 2}}').ok


def test_truncation_repairs_are_labelled():
    r = parse_example("sts", '{"S1": "a cat sat", "S2": "a cat sits", "S3": "a dog ra')
    assert r.ok and {"closed_brackets", "closed_string"} <= set(r.repairs)
    r = parse_example("sts", '{"S1": "a cat sat", "S2": "a cat sits", "S3": "a dog ran", "no')
    assert r.ok and "cut_member" in r.repairs


def test_small_model_json_slips_are_repaired_and_named():
    """``\\'`` (not a JSON escape) and a missing comma before the next key, both seen from SmolLM2."""
    text = ('{\n  "user_query": "The medication\\\'s side effects",\n'
            '  "positive_document": "It lists the side effects of the medication in detail."\n'
            '  "hard_negative_document": "It lists the prices of the medication."\n}')
    p = parse_example("retrieval", text)
    assert p.ok, (p.reason, p.detail)
    assert p.value["user_query"] == "The medication's side effects"
    assert p.repairs == ["bad_escape", "missing_comma"]
    # an escaped backslash before a quote is left alone; a quote inside a value is still invalid
    assert parse_example("retrieval", '{"user_query": "a\\\\\'b", "positive_document": "x y", '
                                      '"hard_negative_document": "z w"}').value["user_query"] == "a\\'b"
    assert parse_example("retrieval", '{"user_query": "the "q" itself", "positive_document": "x y", '
                                      '"hard_negative_document": "z w"}').reason == "invalid_json"


def test_brainstorm_numbering_and_questions():
    """Seen in a demo run: "Task 1: Given a location ..." kept its numbering; a question became a task."""
    from speed.prompts.parse import clean_task, task_problem

    r = parse_brainstorm('["Task 1: Given a location and a search query, retrieve listings", "2. Retrieve recipes"]')
    assert r.value == ["Given a location and a search query, retrieve listings", "Retrieve recipes"]
    assert clean_task("(3) Classify reviews") == "Classify reviews"
    assert clean_task("Task: Identify the sentiment") == "Identify the sentiment"
    assert task_problem("What is the approximate cost of a property in this area?")[0] == "question_not_task"
    assert task_problem("Is this review positive") is not None
    assert task_problem("Given a question, retrieve passages that answer it") is None


def test_classification_input_far_below_its_sampled_length_is_rejected():
    ex = {"input_text": " ".join(["word"] * 25), "label": "a", "misleading_label": "b"}
    assert parse_example("classification", json.dumps(ex), {"num_words": "at least 100"}).reason == "too_short"
    assert parse_example("classification", json.dumps(ex), {"num_words": "at least 50"}).ok  # 25 = half: kept
    assert parse_example("classification", json.dumps(ex), {"num_words": "less than 10"}).ok  # flagged only


def test_rubric_scores():
    from speed.prompts.parse import parse_rubric
    from speed.prompts.rubric import RUBRIC_KEYS, rubric_messages

    r = parse_rubric('```json\n{"query_realism": 4, "positive_relevance": "5", "negative_hardness": 2.0}\n```')
    assert r.ok and r.value == {"query_realism": 4, "positive_relevance": 5, "negative_hardness": 2}
    assert parse_rubric('{"query_realism": 6, "positive_relevance": 5, "negative_hardness": 2}').reason == "bad_score"
    assert parse_rubric('{"query_realism": 3}').reason == "missing_key"
    assert parse_rubric("no idea").reason == "no_json"
    text = rubric_messages("sts", "Find paraphrases.", "A", "B", None)[0]["content"]
    assert all(k in text for k in RUBRIC_KEYS) and "has no hard negative" in text
