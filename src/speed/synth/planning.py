"""Synthesis prompt planning shared by ``seed``, ``root`` and ``synthesize``.

A plan is ``count`` prompts whose kinds follow the configured proportions exactly (largest
remainder, then a seeded shuffle), each built from (kind, task, topic, attributes) with the
attributes and guideline order drawn from an RNG seeded by (run seed, stage, salt, item index),
so that a resumed shard plans exactly the prompts an uninterrupted run would.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from ..io import stable_hash
from ..prompts import ASYMMETRIC_KINDS, TASK_KINDS, synthesis_prompt

# The paper's proportion: classification : STS : retrieval : matching = 7 : 7 : 7 : 2,
# matching split evenly between short-short and long-long.
PAPER_PROPORTIONS: dict[str, float] = {"classification": 7, "sts": 7, "retrieval": 7, "short-short": 1,
                                       "long-long": 1}
STS_TASK = "Retrieve semantically similar text."


def check_proportions(props: dict[str, float], where: str) -> None:
    from ..runtime.configschema import check

    for k, v in props.items():
        check(k in TASK_KINDS, f"{where}.{k}", v, "a task kind: " + ", ".join(TASK_KINDS))
        check(v >= 0, f"{where}.{k}", v, "must be >= 0")
    check(sum(props.values()) > 0, where, props, "at least one kind with a weight > 0")


def allocate(count: int, proportions: dict[str, float]) -> dict[str, int]:
    """Split ``count`` over kinds by weight (largest remainder; ties in TASK_KINDS order)."""
    total = float(sum(proportions.values()))
    exact = {k: count * proportions.get(k, 0) / total for k in TASK_KINDS}
    out = {k: int(v) for k, v in exact.items()}
    rest = count - sum(out.values())
    for k in sorted(TASK_KINDS, key=lambda k: (-(exact[k] - out[k]), TASK_KINDS.index(k)))[:rest]:
        out[k] += 1
    return {k: v for k, v in out.items() if v}


@dataclass
class PlannedPrompt:
    id: str
    kind: str
    task: str
    topic: str
    topic_id: str
    attributes: dict[str, Any]
    guidelines: list[str]
    messages: list[dict[str, str]]

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @property
    def text(self) -> str:
        return "\n\n".join(m["content"] for m in self.messages if m["role"] == "user")


def _rng(seed: int, *item: Any) -> random.Random:
    return random.Random(int(stable_hash([seed, *item])[:16], 16))


def plan_prompts(seed: int, salt: str, count: int, proportions: dict[str, float], tasks: list[dict],
                 topics: list[dict], stats: dict | None = None) -> list[PlannedPrompt]:
    """``count`` synthesis prompts. ``tasks``: brainstorm rows {kind, task, topic, topic_id};
    ``topics``: topic rows {id, text}. Kinds with no task are not planned (counted in ``stats``)."""
    alloc = allocate(count, proportions)
    kinds = [k for k in TASK_KINDS for _ in range(alloc.get(k, 0))]
    _rng(seed, salt, "order").shuffle(kinds)
    by_kind: dict[str, list[dict]] = {k: [] for k in ASYMMETRIC_KINDS}
    for t in tasks:
        by_kind.setdefault(t["kind"], []).append(t)
    pools = {}
    for k, rows in by_kind.items():
        rows = sorted(rows, key=lambda r: r["id"])
        _rng(seed, salt, "tasks", k).shuffle(rows)
        pools[k] = rows
    topic_pool = sorted(topics, key=lambda r: r["id"])
    _rng(seed, salt, "topics").shuffle(topic_pool)
    used = {k: 0 for k in TASK_KINDS}
    out: list[PlannedPrompt] = []
    missing: dict[str, int] = {}
    for i, kind in enumerate(kinds):
        j = used[kind]
        used[kind] += 1
        if kind == "sts":
            if not topic_pool:
                missing[kind] = missing.get(kind, 0) + 1
                continue
            top = topic_pool[j % len(topic_pool)]
            task, topic, topic_id = STS_TASK, top["text"], top["id"]
        else:
            pool = pools.get(kind) or []
            if not pool:
                missing[kind] = missing.get(kind, 0) + 1
                continue
            row = pool[j % len(pool)]
            task, topic, topic_id = row["task"], row["topic"], row.get("topic_id", "")
        rng = _rng(seed, salt, "prompt", i)
        sp = synthesis_prompt(kind, task, topic, rng)
        out.append(PlannedPrompt(id=f"{salt}-{i:06d}", kind=kind, task=task, topic=topic, topic_id=topic_id,
                                 attributes=dict(sp.attributes), guidelines=list(sp.guidelines),
                                 messages=sp.messages))
    if stats is not None:
        stats["planned"] = len(out)
        stats["by_kind"] = {k: sum(p.kind == k for p in out) for k in TASK_KINDS if any(p.kind == k for p in out)}
        if missing:
            stats["not_planned_no_task"] = missing
    return out


def prompt_messages(row: dict) -> list[dict[str, str]]:
    """The synthesis prompt of a stored row (pure re-render from kind, task, topic, attributes)."""
    from ..prompts import synthesis_messages

    return synthesis_messages(row["kind"], row["task"], row["topic"], row["attributes"], tuple(row["guidelines"]))
