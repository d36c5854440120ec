import math
from collections import Counter

from speed.synth.planning import PAPER_PROPORTIONS, STS_TASK, allocate, plan_prompts
from speed.prompts import ATTRIBUTES

TASKS = [{"id": f"t{k}{i}", "kind": k, "task": f"Do {k} thing number {i}", "topic": f"Topic {i}", "topic_id": f"x{i}"}
         for k in ("retrieval", "classification", "short-short", "long-long") for i in range(5)]
TOPICS = [{"id": f"x{i}", "text": f"Topic {i}"} for i in range(5)]


def test_allocation_follows_the_paper_proportion_exactly():
    assert allocate(23, PAPER_PROPORTIONS) == {"retrieval": 7, "classification": 7, "sts": 7, "short-short": 1,
                                               "long-long": 1}
    alloc = allocate(1000, PAPER_PROPORTIONS)
    assert sum(alloc.values()) == 1000
    for k, w in PAPER_PROPORTIONS.items():
        assert abs(alloc[k] - 1000 * w / 23) < 1
    assert allocate(3, {"sts": 1}) == {"sts": 3}


def test_plan_is_deterministic_and_salted():
    a = plan_prompts(0, "seed", 40, PAPER_PROPORTIONS, TASKS, TOPICS)
    b = plan_prompts(0, "seed", 40, PAPER_PROPORTIONS, list(reversed(TASKS)), TOPICS)
    c = plan_prompts(0, "synthesize", 40, PAPER_PROPORTIONS, TASKS, TOPICS)
    assert [p.to_dict() for p in a] == [p.to_dict() for p in b]
    assert [p.messages for p in a] != [p.messages for p in c]
    assert all(p.task == STS_TASK for p in a if p.kind == "sts")
    assert all(p.topic in p.messages[0]["content"] for p in a if p.kind == "sts")


def test_kinds_without_tasks_are_counted_not_silently_dropped():
    stats = {}
    plan = plan_prompts(0, "seed", 23, PAPER_PROPORTIONS, [t for t in TASKS if t["kind"] == "retrieval"], TOPICS, stats)
    assert stats["not_planned_no_task"] == {"classification": 7, "short-short": 1, "long-long": 1}
    assert len(plan) == stats["planned"] == 14


def test_proportions_and_attributes_match_the_weights_on_a_large_draw():
    n = 23 * 400
    stats = {}
    plan = plan_prompts(7, "synthesize", n, PAPER_PROPORTIONS, TASKS, TOPICS, stats)
    kinds = Counter(p.kind for p in plan)
    for k, w in PAPER_PROPORTIONS.items():
        assert abs(kinds[k] - n * w / 23) <= 1
    for kind in ("retrieval", "classification", "sts"):
        rows = [p.attributes for p in plan if p.kind == kind]
        for attr in ATTRIBUTES[kind]:
            counts = Counter(r[attr.name] for r in rows)
            for value, prob in zip(attr.values, attr.probabilities()):
                expected = len(rows) * prob
                sd = math.sqrt(len(rows) * prob * (1 - prob))
                assert abs(counts[value] - expected) <= 4 * sd + 1, (kind, attr.name, value, counts[value], expected)
