"""STS: ``{split}.jsonl`` rows sentence1, sentence2, score (in task.json's min_score..max_score, 0..5 by default);
main score ``cosine_spearman``. Scored as mteb's ``STSEvaluator``: Spearman and Pearson of the gold scores with the
cosine similarity, negated Manhattan / Euclidean distances and dot product."""

from typing import Sequence

import numpy as np

from ...errors import InputError
from .base import TaskType, field, nonempty, read_rows


class STS(TaskType):
    name, main_score = "sts", "cosine_spearman"

    def load(self, task):
        lo, hi = task.meta.get("min_score", 0), task.meta.get("max_score", 5)
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (lo, hi)) or lo >= hi:
            raise InputError(f"{task.path / 'task.json'}:1: min_score / max_score must be numbers with min < max")
        path = task.path / f"{task.split}.jsonl"
        s1, s2, gold = [], [], []
        for ln, row in read_rows(path):
            s1.append(field(path, ln, row, "sentence1", (str,), "a string"))
            s2.append(field(path, ln, row, "sentence2", (str,), "a string"))
            score = field(path, ln, row, "score", (int, float), "a number")
            if not lo - 1e-9 <= score <= hi + 1e-9:
                raise InputError(f"{path}:{ln}: score {score} is outside [{lo}, {hi}] (task.json min_score/max_score)")
            gold.append(float(score))
        nonempty(path, gold)
        return {"sentence1": s1, "sentence2": s2, "score": gold}

    def evaluate(self, encoder, task, ins):
        e1, e2 = encoder.encode(task.data["sentence1"], ins), encoder.encode(task.data["sentence2"], ins)
        lo, hi = float(task.meta.get("min_score", 0)), float(task.meta.get("max_score", 5))
        return sts_scores(e1, e2, task.data["score"], lo, hi)


def sts_scores(emb1: np.ndarray, emb2: np.ndarray, gold: Sequence[float], min_score: float = 0.0,
               max_score: float = 5.0) -> dict:
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics.pairwise import paired_cosine_distances, paired_euclidean_distances, paired_manhattan_distances

    gold = (np.asarray(gold, dtype=np.float64) - min_score) / (max_score - min_score)
    e1, e2 = np.asarray(emb1, dtype=np.float64), np.asarray(emb2, dtype=np.float64)
    sims = {"cosine": 1 - paired_cosine_distances(e1, e2), "manhattan": -paired_manhattan_distances(e1, e2),
            "euclidean": -paired_euclidean_distances(e1, e2), "dot": np.einsum("ij,ij->i", e1, e2)}
    out = {}
    for name, s in sims.items():
        out[f"{name}_pearson"] = float(pearsonr(gold, s)[0])
        out[f"{name}_spearman"] = float(spearmanr(gold, s)[0])
    out["main_score"] = out["cosine_spearman"]
    # per pair, for paired bootstrap intervals (speed.evaluate.bootstrap): Spearman of gold vs cosine
    out["items"] = {"stat": "spearman", "gold": gold.tolist(), "pred": sims["cosine"].tolist()}
    return out
