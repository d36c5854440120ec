"""Clustering: ``{split}.jsonl`` rows sentences [..], labels [..] (strings or integers), each row a set of its own;
main score ``v_measure``. Scored as mteb's ``ClusteringEvaluator``: MiniBatchKMeans (batch 500, n_init auto, the
RNG seeded to ``seed``) with as many clusters as labels; V-measure per set, averaged."""

from typing import Sequence

import numpy as np

from ...errors import InputError
from .base import TaskType, field, nonempty, read_rows, str_list


class Clustering(TaskType):
    name, main_score = "clustering", "v_measure"

    def load(self, task):
        path = task.path / f"{task.split}.jsonl"
        sets = []
        for ln, row in read_rows(path):
            sents = str_list(path, ln, row, "sentences")
            labels = field(path, ln, row, "labels", (list,), "a list of labels")
            if len(sents) != len(labels):
                raise InputError(f"{path}:{ln}: {len(sents)} sentences but {len(labels)} labels")
            if not all(isinstance(v, (str, int)) and not isinstance(v, bool) for v in labels):
                raise InputError(f"{path}:{ln}: field 'labels' is not a list of strings or integers")
            sets.append({"sentences": sents, "labels": labels})
        nonempty(path, sets)
        return {"sets": sets}

    def evaluate(self, encoder, task, ins):
        sets = [(encoder.encode(s["sentences"], ins), s["labels"]) for s in task.data["sets"]]
        return clustering_scores(sets, seed=int(task.meta.get("seed", 42)))


def clustering_scores(sets: Sequence[tuple[np.ndarray, Sequence]], seed: int = 42, batch_size: int = 500) -> dict:
    from sklearn.cluster import MiniBatchKMeans
    from sklearn.metrics import v_measure_score

    scores = []
    for emb, labels in sets:
        km = MiniBatchKMeans(n_clusters=len(set(labels)), batch_size=batch_size, n_init="auto",
                             random_state=np.random.RandomState(seed))
        km.fit(np.asarray(emb))
        scores.append(float(v_measure_score(list(labels), km.labels_)))
    out = {"v_measure": float(np.mean(scores)), "v_measure_std": float(np.std(scores)), "sets": len(scores)}
    out["main_score"] = out["v_measure"]
    return out
