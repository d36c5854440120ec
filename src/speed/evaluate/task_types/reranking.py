"""Reranking: ``{split}.jsonl`` rows query, positive [..], negative [..]; main score ``map``. Scored as mteb's
``RerankingEvaluator``: per query, AP and MRR@10 of its candidates (never given the instruction) ranked by cosine."""

from typing import Sequence

import numpy as np

from .base import TaskType, field, nonempty, normalize, read_rows, str_list


class Reranking(TaskType):
    name, main_score = "reranking", "map"

    def load(self, task):
        path = task.path / f"{task.split}.jsonl"
        instances = [{"query": field(path, ln, row, "query", (str,), "a string"),
                      "positive": str_list(path, ln, row, "positive"), "negative": str_list(path, ln, row, "negative")}
                     for ln, row in read_rows(path)]
        nonempty(path, instances)
        return {"instances": instances}

    def evaluate(self, encoder, task, ins):
        instances = task.data["instances"]
        qe = encoder.encode([r["query"] for r in instances], ins)
        fe = encoder.encode([t for r in instances for t in r["positive"] + r["negative"]], None)
        cands, rel, pos = [], [], 0
        for r in instances:
            n = len(r["positive"]) + len(r["negative"])
            cands.append(fe[pos:pos + n])
            rel.append([True] * len(r["positive"]) + [False] * len(r["negative"]))
            pos += n
        return reranking_scores(list(qe), cands, rel)


def reranking_scores(query_embs: Sequence[np.ndarray], cand_embs: Sequence[np.ndarray],
                     relevant: Sequence[Sequence[bool]], mrr_k: int = 10) -> dict:
    from sklearn.metrics import average_precision_score

    aps, mrrs = [], []
    for q, c, rel in zip(query_embs, cand_embs, relevant):
        rel = np.asarray(rel, dtype=bool)
        if rel.all() or not rel.any():
            continue  # mteb skips instances without a positive or without a negative
        sims = (normalize(np.asarray(c)) @ normalize(np.asarray(q)[None, :]).T).ravel()
        aps.append(float(average_precision_score(rel.astype(int), sims)))
        order = np.argsort(-sims, kind="stable")[:mrr_k]
        mrrs.append(next((1.0 / (r + 1) for r, i in enumerate(order) if rel[i]), 0.0))
    out = {"map": float(np.mean(aps)) if aps else 0.0, f"mrr_at_{mrr_k}": float(np.mean(mrrs)) if mrrs else 0.0,
           "evaluated_queries": len(aps)}
    out["main_score"] = out["map"]
    return out
