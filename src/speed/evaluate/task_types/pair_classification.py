"""Pair classification: ``{split}.jsonl`` rows sentence1, sentence2, label (0 or 1); main score ``max_ap``.
Scored as mteb's ``PairClassificationEvaluator``: AP, best accuracy and best F1 of cosine, dot, negated Manhattan
and Euclidean; ``max_ap`` is the best AP."""

from typing import Sequence

import numpy as np

from ...errors import InputError
from .base import TaskType, field, nonempty, read_rows


class PairClassification(TaskType):
    name, main_score = "pair_classification", "max_ap"

    def load(self, task):
        path = task.path / f"{task.split}.jsonl"
        s1, s2, lab = [], [], []
        for ln, row in read_rows(path):
            s1.append(field(path, ln, row, "sentence1", (str,), "a string"))
            s2.append(field(path, ln, row, "sentence2", (str,), "a string"))
            label = field(path, ln, row, "label", (int,), "0 or 1")
            if label not in (0, 1):
                raise InputError(f"{path}:{ln}: field 'label' = {label!r} is not 0 or 1")
            lab.append(label)
        nonempty(path, lab)
        return {"sentence1": s1, "sentence2": s2, "label": lab}

    def evaluate(self, encoder, task, ins):
        e1, e2 = encoder.encode(task.data["sentence1"], ins), encoder.encode(task.data["sentence2"], ins)
        return pair_classification_scores(e1, e2, task.data["label"])


def best_accuracy(scores: np.ndarray, labels: np.ndarray, high_more_similar: bool) -> tuple[float, float]:
    rows = sorted(zip(scores, labels), key=lambda x: x[0], reverse=high_more_similar)
    max_acc, best_t = 0.0, -1.0
    pos_so_far, rem_neg = 0, int(np.sum(labels == 0))
    for i in range(len(rows) - 1):
        if rows[i][1] == 1:
            pos_so_far += 1
        else:
            rem_neg -= 1
        acc = (pos_so_far + rem_neg) / len(labels)
        if acc > max_acc:
            max_acc, best_t = acc, (rows[i][0] + rows[i + 1][0]) / 2
    return float(max_acc), float(best_t)


def best_f1(scores: np.ndarray, labels: np.ndarray, high_more_similar: bool) -> tuple[float, float, float, float]:
    rows = sorted(zip(scores, labels), key=lambda x: x[0], reverse=high_more_similar)
    best = (0.0, 0.0, 0.0, 0.0)
    n_extract = n_correct = 0
    total = int(np.sum(labels))
    for i in range(len(rows) - 1):
        n_extract += 1
        if rows[i][1] == 1:
            n_correct += 1
        if n_correct > 0:
            p, r = n_correct / n_extract, n_correct / total
            f1 = 2 * p * r / (p + r)
            if f1 > best[0]:
                best = (f1, p, r, (rows[i][0] + rows[i + 1][0]) / 2)
    return tuple(float(v) for v in best)


def pair_classification_scores(emb1: np.ndarray, emb2: np.ndarray, labels: Sequence[int]) -> dict:
    from sklearn.metrics import average_precision_score
    from sklearn.metrics.pairwise import paired_cosine_distances, paired_euclidean_distances, paired_manhattan_distances

    e1, e2 = np.asarray(emb1, dtype=np.float64), np.asarray(emb2, dtype=np.float64)
    labels = np.asarray(labels, dtype=int)
    out: dict = {}
    for name, s, high in (("cosine", 1 - paired_cosine_distances(e1, e2), True),
                          ("manhattan", paired_manhattan_distances(e1, e2), False),
                          ("euclidean", paired_euclidean_distances(e1, e2), False),
                          ("dot", np.einsum("ij,ij->i", e1, e2), True)):
        acc, acc_t = best_accuracy(s, labels, high)
        f1, p, r, f1_t = best_f1(s, labels, high)
        out.update({f"{name}_accuracy": acc, f"{name}_accuracy_threshold": acc_t, f"{name}_f1": f1,
                    f"{name}_precision": p, f"{name}_recall": r, f"{name}_f1_threshold": f1_t,
                    f"{name}_ap": float(average_precision_score(labels, s * (1 if high else -1)))})
    for m in ("accuracy", "f1", "ap"):
        out[f"max_{m}"] = max(out[f"{n}_{m}"] for n in ("cosine", "manhattan", "euclidean", "dot"))
    out["main_score"] = out["max_ap"]
    # per pair, for bootstrap intervals: AP of the cosine similarity (max_ap is the cosine AP or close to it)
    out["items"] = {"stat": "ap", "gold": labels.tolist(), "pred": (1 - paired_cosine_distances(e1, e2)).tolist()}
    return out
