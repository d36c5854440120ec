"""The MTEB 1.12 evaluation protocol, per task type, on embeddings (numpy / scikit-learn / pytrec_eval).

Each function takes embeddings already computed (so that it can be unit-tested against an
independent computation) and returns a dict of metrics, ``main_score`` included.

- STS (``STSEvaluator``): cosine similarity (and negated Manhattan / Euclidean distances, dot)
  against the gold scores; Spearman and Pearson; main score ``cosine_spearman``.
- Classification (``AbsTaskClassification`` + ``logRegClassificationEvaluator``): ``n_experiments``
  experiments; each one reshuffles the same index array with numpy's legacy RNG freshly seeded to
  ``seed`` (mteb's evaluators re-seed the global RNG to 42 in their constructor, after the task's own
  seeding), keeps the first ``samples_per_label`` training examples of each label in that order, fits
  ``LogisticRegression(max_iter=100, random_state=seed)`` and scores accuracy / macro-F1 (and AP for
  two labels) on the whole test split; the scores are averaged over the experiments.
- Pair classification (``PairClassificationEvaluator``): AP, best accuracy and best F1 of cosine,
  dot, negated Manhattan and Euclidean; ``max_ap`` is the best AP.
- Retrieval (``RetrievalEvaluator``): exact cosine search, top 1000 kept, pytrec_eval nDCG / MAP /
  recall / precision at 1, 3, 5, 10, 100, 1000 and MRR@10, averaged over the evaluated queries.
- Reranking (``RerankingEvaluator``): per query, AP and MRR@10 of the candidates ranked by cosine.
- Clustering (``ClusteringEvaluator``): MiniBatchKMeans (batch 500, n_init auto, the RNG seeded to
  ``seed``) with as many clusters as labels; V-measure per set, averaged.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from typing import Sequence

import numpy as np

K_VALUES = (1, 3, 5, 10, 100, 1000)


def _normalize(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(n == 0, 1.0, n)


# -- STS ---------------------------------------------------------------------------------------------
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
    return out


# -- classification ----------------------------------------------------------------------------------
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
    return out


# -- pair classification -----------------------------------------------------------------------------
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
    return out


# -- retrieval ---------------------------------------------------------------------------------------
def search(query_emb: np.ndarray, corpus_emb: np.ndarray, top_k: int = 1000, chunk: int = 256) -> list[list[tuple[int, float]]]:
    """Exact cosine search: per query, the top ``top_k`` (corpus index, score), best first."""
    q = _normalize(query_emb).astype(np.float32)
    c = _normalize(corpus_emb).astype(np.float32)
    k = min(top_k, c.shape[0])
    out = []
    for start in range(0, q.shape[0], chunk):
        sims = q[start:start + chunk] @ c.T
        if k < c.shape[0]:
            part = np.argpartition(-sims, k - 1, axis=1)[:, :k]
        else:
            part = np.tile(np.arange(c.shape[0]), (sims.shape[0], 1))
        for row, cand in zip(sims, part):
            order = cand[np.argsort(-row[cand], kind="stable")]
            out.append([(int(i), float(row[i])) for i in order])
    return out


def retrieval_scores(results: dict[str, dict[str, float]], qrels: dict[str, dict[str, int]],
                     k_values: Sequence[int] = K_VALUES, ignore_identical_ids: bool = False) -> dict:
    """pytrec_eval metrics of a run ``{qid: {doc_id: score}}`` against ``qrels``, mteb-style."""
    import pytrec_eval

    if ignore_identical_ids:
        results = {q: {d: s for d, s in docs.items() if d != q} for q, docs in results.items()}
    ks = [str(k) for k in k_values]
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"map_cut." + ",".join(ks), "ndcg_cut." + ",".join(ks),
                                                "recall." + ",".join(ks), "P." + ",".join(ks)})
    per_query = ev.evaluate(results)
    n = max(1, len(per_query))
    out: dict = {}
    for k in k_values:
        out[f"ndcg_at_{k}"] = sum(v[f"ndcg_cut_{k}"] for v in per_query.values()) / n
        out[f"map_at_{k}"] = sum(v[f"map_cut_{k}"] for v in per_query.values()) / n
        out[f"recall_at_{k}"] = sum(v[f"recall_{k}"] for v in per_query.values()) / n
        out[f"precision_at_{k}"] = sum(v[f"P_{k}"] for v in per_query.values()) / n
    # MRR@10 (mteb's evaluate_custom): reciprocal rank of the first relevant document in the top 10
    rr = []
    for qid, docs in results.items():
        if qid not in qrels:
            continue
        ranked = sorted(docs.items(), key=lambda x: x[1], reverse=True)[:10]
        rel = {d for d, s in qrels[qid].items() if s > 0}
        rr.append(next((1.0 / (i + 1) for i, (d, _) in enumerate(ranked) if d in rel), 0.0))
    out["mrr_at_10"] = float(np.mean(rr)) if rr else 0.0
    out["evaluated_queries"] = len(per_query)
    out["main_score"] = out["ndcg_at_10"]
    return out


# -- reranking ---------------------------------------------------------------------------------------
def reranking_scores(query_embs: Sequence[np.ndarray], cand_embs: Sequence[np.ndarray],
                     relevant: Sequence[Sequence[bool]], mrr_k: int = 10) -> dict:
    from sklearn.metrics import average_precision_score

    aps, mrrs = [], []
    for q, c, rel in zip(query_embs, cand_embs, relevant):
        rel = np.asarray(rel, dtype=bool)
        if rel.all() or not rel.any():
            continue  # mteb skips instances without a positive or without a negative
        sims = (_normalize(np.asarray(c)) @ _normalize(np.asarray(q)[None, :]).T).ravel()
        aps.append(float(average_precision_score(rel.astype(int), sims)))
        order = np.argsort(-sims, kind="stable")[:mrr_k]
        mrrs.append(next((1.0 / (r + 1) for r, i in enumerate(order) if rel[i]), 0.0))
    out = {"map": float(np.mean(aps)) if aps else 0.0, f"mrr_at_{mrr_k}": float(np.mean(mrrs)) if mrrs else 0.0,
           "evaluated_queries": len(aps)}
    out["main_score"] = out["map"]
    return out


# -- clustering --------------------------------------------------------------------------------------
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
