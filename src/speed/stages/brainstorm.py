"""Stage ``brainstorm``: the teacher proposes task descriptions per (topic, asymmetric kind).

Output ``brainstorm/tasks.jsonl`` (one row per kept task: id, kind, task, topic, topic_id,
topic_path) and ``brainstorm/rejected.jsonl`` (unparseable answers with their raw text, tasks
dropped as duplicates, and questions offered as tasks: ``question_not_task``). List numbering such
as "Task 1:" is stripped by the parser. ``tasks_per_topic`` (default 1, the paper's best) are kept per (topic, kind).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..prompts import ASYMMETRIC_KINDS, BRAINSTORM_SCHEMA, brainstorm_messages, parse_brainstorm
from ..prompts.parse import task_problem
from ..runtime.configschema import check
from ..synth.records import Rejection
from . import Stage, provider
from .generation import GenerationConfig, ask_in_shards, count_reason, llm_client, model_label, request


@dataclass
class Config(GenerationConfig):
    kinds: list[str] = field(default_factory=lambda: list(ASYMMETRIC_KINDS))
    tasks_per_topic: int = 1
    tasks_asked: int = 5
    max_tokens: int = 384

    def validate(self, where: str) -> None:
        super().validate(where)
        for i, k in enumerate(self.kinds):
            check(k in ASYMMETRIC_KINDS, f"{where}.kinds[{i}]", k, "one of " + ", ".join(ASYMMETRIC_KINDS))
        check(bool(self.kinds), f"{where}.kinds", self.kinds, "at least one kind")
        check(self.tasks_per_topic >= 1, f"{where}.tasks_per_topic", self.tasks_per_topic, "must be >= 1")
        check(self.tasks_asked >= self.tasks_per_topic, f"{where}.tasks_asked", self.tasks_asked,
              "must be >= tasks_per_topic")


def normalise_task(text: str) -> str:
    return " ".join(text.split()).strip().rstrip(".").strip()


def _key(text: str) -> str:
    return "".join(ch for ch in text.lower() if ch.isalnum() or ch == " ").strip()


def run(ctx) -> None:
    cfg: Config = ctx.cfg
    topics = list(ctx.read_input("sampled-topics"))
    items = [(t, k) for t in topics for k in cfg.kinds]

    def build(item):
        t, k = item
        return request(brainstorm_messages(k, t["text"], cfg.tasks_asked), cfg.sampling(),
                       seed=ctx.item_seed(t["id"], k), schema=BRAINSTORM_SCHEMA)

    def handle(item, comps):
        comp = comps[0]
        parsed = parse_brainstorm(comp.text) if comp.ok else None
        return [{"topic": item[0], "kind": item[1], "raw": comp.text, "error": comp.error,
                 "tasks": parsed.value if parsed is not None and parsed.ok else None,
                 "reason": None if parsed is None else parsed.reason,
                 "detail": comp.error or ("" if parsed is None else parsed.detail)}]

    answers = ask_in_shards(ctx, llm_client(ctx, "teacher"), items, build, handle)
    kept, rejected, seen = [], [], {}
    model = model_label(ctx, "teacher")
    for a in answers:
        t, k = a["topic"], a["kind"]
        rid = f"{t['id']}-{k}"
        if a["tasks"] is None:
            reason = "llm_error" if a["error"] else a["reason"]
            rejected.append(Rejection(id=rid, stage=ctx.name, reason=reason, raw=a["raw"], detail=a["detail"],
                                      kind=k, model=model))
            count_reason(ctx.counts, "rejected", reason)
            continue
        n = 0
        for task in a["tasks"]:
            if n >= cfg.tasks_per_topic:
                break
            task = normalise_task(task)
            problem = task_problem(task) if task else None
            if problem is not None:
                rejected.append(Rejection(id=rid, stage=ctx.name, reason=problem[0], raw=task, detail=problem[1],
                                          kind=k, model=model))
                count_reason(ctx.counts, "rejected", problem[0])
                continue
            key = (k, _key(task))
            if not task or key in seen:
                rejected.append(Rejection(id=rid, stage=ctx.name, reason="duplicate_task", raw=task,
                                          detail=f"same as {seen.get(key, '')}", kind=k, model=model))
                count_reason(ctx.counts, "rejected", "duplicate_task")
                continue
            tid = f"{rid}-{n}"
            seen[key] = tid
            kept.append({"id": tid, "kind": k, "task": task, "topic": t["text"], "topic_id": t["id"],
                         "topic_path": t["path"]})
            n += 1
    ctx.write_jsonl("tasks.jsonl", kept)
    ctx.write_jsonl("rejected.jsonl", rejected)
    ctx.counts.update({"requests": len(items), "tasks": len(kept),
                       "by_kind": {k: sum(r["kind"] == k for r in kept) for k in cfg.kinds}})


STAGE = Stage("brainstorm", Config, run, needs=("sampled-topics",), provides={"tasks": "tasks.jsonl"}, roles=("teacher",),
              calls=lambda config, cfg: config.stage(provider("sampled-topics").name).count * len(cfg.kinds),
              tokens_per_call=(260, 120))
