"""Classification: ``train.jsonl`` and ``{split}.jsonl`` rows text, label (strings or integers, not mixed; two
labels at least); main score ``accuracy``.

Scored as mteb's ``AbsTaskClassification`` + ``logRegClassificationEvaluator``: ``n_experiments`` experiments;
each one reshuffles the same index array with numpy's legacy RNG freshly seeded to ``seed`` (mteb's evaluators
re-seed the global RNG to 42 in their constructor, after the task's own seeding), keeps the first
``samples_per_label`` training examples of each label in that order, fits ``LogisticRegression(max_iter=100,
random_state=seed)`` and scores accuracy / macro-F1 (and AP for two labels) on the whole test split; the scores
are averaged over the experiments."""

import warnings
from collections import defaultdict
from typing import Sequence

import numpy as np

from ...errors import InputError
from .base import TaskType, field, nonempty, read_rows

# mteb 1.12's per-task classification settings (its task metadata); 8 per label otherwise.
SAMPLES_PER_LABEL: dict[str, int] = {"AmazonCounterfactualClassification": 32,
                                     "TweetSentimentExtractionClassification": 32, "EmotionClassification": 16}


class Classification(TaskType):
    name, main_score = "classification", "accuracy"

    def load(self, task):
        data = {}
        for part in ("train", task.split):
            path = task.path / f"{part}.jsonl"
            texts, labels = [], []
            for ln, row in read_rows(path):
                texts.append(field(path, ln, row, "text", (str,), "a string"))
                labels.append(field(path, ln, row, "label", (str, int), "a string or an integer"))
            nonempty(path, texts)
            if len(set(map(type, labels))) > 1:
                raise InputError(f"{path}:1: labels mix strings and integers")
            data[f"{'train' if part == 'train' else 'test'}_text"] = texts
            data[f"{'train' if part == 'train' else 'test'}_label"] = labels
        if len(set(data["train_label"])) < 2:
            raise InputError(f"{task.path / 'train.jsonl'}:1: needs at least two distinct labels")
        return data

    def evaluate(self, encoder, task, ins):
        d, seed, per_label = task.data, int(task.meta.get("seed", 42)), task.samples_per_label
        # encode only the training rows the undersampled experiments use (as mteb does): the others never reach
        # the classifier
        rows = used_training_rows(d["train_label"], per_label, task.n_experiments, seed)
        te = encoder.encode(d["test_text"], ins)
        used = encoder.encode([d["train_text"][i] for i in rows], ins)
        tr = np.zeros((len(d["train_text"]), used.shape[1] if used.size else te.shape[1]), dtype=np.float32)
        tr[rows] = used
        m = classification_scores(tr, d["train_label"], te, d["test_label"], samples_per_label=per_label,
                                  n_experiments=task.n_experiments, seed=seed,
                                  max_iter=int(task.meta.get("max_iter", 100)))
        m["samples_per_label"] = per_label
        return m


def undersample(labels: Sequence, samples_per_label: int, idxs: np.ndarray | None, seed: int = 42):
    """mteb's ``_undersample_data``: shuffle ``idxs`` in place (RNG seeded to ``seed``), keep the first
    ``samples_per_label`` of each label in the shuffled order; return (selected positions, idxs)."""
    if idxs is None:
        idxs = np.arange(len(labels))
    np.random.RandomState(seed).shuffle(idxs)
    counter: dict = defaultdict(int)
    chosen = []
    for i in idxs:
        if counter[labels[i]] < samples_per_label:
            chosen.append(int(i))
            counter[labels[i]] += 1
    return chosen, idxs


def used_training_rows(labels: Sequence, samples_per_label: int, n_experiments: int, seed: int = 42) -> list[int]:
    """The training rows any of the ``n_experiments`` undersamplings picks (what mteb encodes).

    The picks depend on the labels alone, so only these rows need an embedding."""
    labels = list(labels)
    used: set[int] = set()
    idxs = None
    for _ in range(n_experiments):
        chosen, idxs = undersample(labels, samples_per_label, idxs, seed)
        used.update(chosen)
    return sorted(used)


def _logreg(seed: int, max_iter: int):
    from sklearn.linear_model import LogisticRegression

    # mteb also passes n_jobs=-1, which has no effect on the lbfgs solver (and is deprecated in
    # scikit-learn >= 1.8); the results are the same without it.
    return LogisticRegression(random_state=seed, max_iter=max_iter)


def classification_scores(train_emb: np.ndarray, train_labels: Sequence, test_emb: np.ndarray,
                          test_labels: Sequence, samples_per_label: int = 8, n_experiments: int = 10,
                          seed: int = 42, max_iter: int = 100) -> dict:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, average_precision_score, f1_score

    train_labels = list(train_labels)
    y_test = np.asarray(test_labels)
    X_test = np.asarray(test_emb)
    binary = len(set(train_labels)) == 2
    pos = sorted(set(train_labels), key=str)[-1] if binary else None
    experiments = []
    correct = np.zeros(len(y_test))
    idxs = None
    for _ in range(n_experiments):
        chosen, idxs = undersample(train_labels, samples_per_label, idxs, seed)
        X = np.asarray(train_emb)[chosen]
        y = np.asarray([train_labels[i] for i in chosen])
        clf = _logreg(seed, max_iter)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X, y)
        pred = clf.predict(X_test)
        correct += pred == y_test
        s = {"accuracy": float(accuracy_score(y_test, pred)), "f1": float(f1_score(y_test, pred, average="macro")),
             "f1_weighted": float(f1_score(y_test, pred, average="weighted"))}
        if binary:
            yt = (y_test == pos).astype(int)
            yp = (pred == pos).astype(int)
            s["ap"] = float(average_precision_score(yt, yp))
        experiments.append(s)
    out = {k: float(np.mean([e[k] for e in experiments])) for k in experiments[0]}
    out["accuracy_stderr"] = float(np.std([e["accuracy"] for e in experiments]))
    out["scores_per_experiment"] = experiments
    out["main_score"] = out["accuracy"]
    # per test row: the share of experiments that classified it right (their mean is the accuracy)
    out["items"] = {"stat": "mean", "values": (correct / n_experiments).tolist()}
    return out
