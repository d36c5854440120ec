"""The MTEB-protocol metrics against independent computations on fixed embeddings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from speed.evaluate.task_types.classification import classification_scores, undersample
from speed.evaluate.task_types.clustering import clustering_scores
from speed.evaluate.task_types.pair_classification import pair_classification_scores
from speed.evaluate.task_types.reranking import reranking_scores
from speed.evaluate.task_types.retrieval import retrieval_scores, search
from speed.evaluate.task_types.sts import sts_scores


def _rng(seed=0):
    return np.random.default_rng(seed)


def test_sts_matches_scipy_spearman_of_cosines():
    from scipy.stats import pearsonr, spearmanr

    r = _rng(1)
    e1, e2 = r.normal(size=(50, 8)), r.normal(size=(50, 8))
    gold = r.uniform(0, 5, 50)
    cos = np.sum(e1 * e2, 1) / (np.linalg.norm(e1, axis=1) * np.linalg.norm(e2, axis=1))
    m = sts_scores(e1, e2, gold, 0, 5)
    assert m["main_score"] == pytest.approx(spearmanr(gold, cos)[0], abs=1e-12)
    assert m["cosine_pearson"] == pytest.approx(pearsonr(gold, cos)[0], abs=1e-12)
    assert m["euclidean_spearman"] == pytest.approx(spearmanr(gold, -np.linalg.norm(e1 - e2, axis=1))[0], abs=1e-12)


def test_pair_classification_ap_matches_sklearn_and_hand_accuracy():
    from sklearn.metrics import average_precision_score

    r = _rng(2)
    e1 = r.normal(size=(40, 6))
    labels = r.integers(0, 2, 40)
    e2 = e1 + r.normal(scale=np.where(labels[:, None] == 1, 0.5, 2.0), size=(40, 6))
    cos = np.sum(e1 * e2, 1) / (np.linalg.norm(e1, axis=1) * np.linalg.norm(e2, axis=1))
    m = pair_classification_scores(e1, e2, labels)
    assert m["cosine_ap"] == pytest.approx(average_precision_score(labels, cos), abs=1e-12)
    assert m["euclidean_ap"] == pytest.approx(average_precision_score(labels, -np.linalg.norm(e1 - e2, axis=1)), abs=1e-12)
    assert m["main_score"] == max(m[f"{n}_ap"] for n in ("cosine", "manhattan", "euclidean", "dot"))
    # best accuracy over thresholds between consecutive cosine scores, by brute force
    s = np.sort(cos)
    best = max(np.mean((cos > t) == (labels == 1)) for t in (s[:-1] + s[1:]) / 2)
    assert m["cosine_accuracy"] == pytest.approx(best, abs=1e-12)


def test_undersampling_reproduces_mteb_global_rng_sequence():
    """mteb: np.random.seed(42) in the task/evaluator, then np.random.shuffle(idxs) on the same array."""
    from collections import defaultdict

    labels = [i % 5 for i in range(60)]
    ref_sel, idxs = [], np.arange(60)
    for _ in range(3):
        np.random.seed(42)  # the evaluator constructor of the previous experiment (or the task) re-seeds
        np.random.shuffle(idxs)
        counter, chosen = defaultdict(int), []
        for i in idxs:
            if counter[labels[i]] < 4:
                chosen.append(int(i))
                counter[labels[i]] += 1
        ref_sel.append(chosen)
    ours, idx = [], None
    for _ in range(3):
        chosen, idx = undersample(labels, 4, idx, 42)
        ours.append(chosen)
    assert ours == ref_sel
    assert ours[0] != ours[1]  # the experiments differ (the shuffle compounds)


def test_classification_is_deterministic_and_learns_separable_data():
    r = _rng(3)
    centers = r.normal(size=(3, 10)) * 5
    ytr = [f"c{i % 3}" for i in range(90)]
    Xtr = np.stack([centers[int(y[1])] + r.normal(size=10) for y in ytr])
    yte = [f"c{i % 3}" for i in range(30)]
    Xte = np.stack([centers[int(y[1])] + r.normal(size=10) for y in yte])
    a = classification_scores(Xtr, ytr, Xte, yte, samples_per_label=8)
    b = classification_scores(Xtr, ytr, Xte, yte, samples_per_label=8)
    assert a["accuracy"] == b["accuracy"] > 0.9
    assert len(a["scores_per_experiment"]) == 10 and "ap" not in a
    binary = classification_scores(Xtr[:60], [0, 1] * 30, Xte[:20], [0, 1] * 10, samples_per_label=4)
    assert "ap" in binary


def _ndcg_at_10(ranked: list[str], rel: dict[str, int]) -> float:
    dcg = sum((2 ** rel.get(d, 0) - 1) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
    ideal = sorted(rel.values(), reverse=True)[:10]
    idcg = sum((2 ** g - 1) / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def test_retrieval_ndcg_matches_a_hand_computation():
    r = _rng(4)
    corpus = r.normal(size=(30, 5))
    queries = r.normal(size=(4, 5))
    doc_ids = [f"d{i}" for i in range(30)]
    qids = [f"q{i}" for i in range(4)]
    qrels = {"q0": {"d3": 1, "d7": 2}, "q1": {"d0": 1}, "q2": {"d29": 1, "d1": 1, "d2": 0}, "q3": {"d15": 1}}
    hits = search(queries, corpus, top_k=1000)
    run = {q: {doc_ids[i]: s for i, s in h} for q, h in zip(qids, hits)}
    m = retrieval_scores(run, qrels)
    cn = corpus / np.linalg.norm(corpus, axis=1, keepdims=True)
    hand = []
    for qi, q in enumerate(qids):
        sims = cn @ (queries[qi] / np.linalg.norm(queries[qi]))
        ranked = [doc_ids[i] for i in np.argsort(-sims)]
        hand.append(_ndcg_at_10(ranked, qrels[q]))
    # pytrec_eval uses the standard gain (rel), not 2^rel - 1: equal here except for q0's grade 2
    std = []
    for qi, q in enumerate(qids):
        sims = cn @ (queries[qi] / np.linalg.norm(queries[qi]))
        ranked = [doc_ids[i] for i in np.argsort(-sims)]
        g = qrels[q]
        dcg = sum(g.get(d, 0) / math.log2(i + 2) for i, d in enumerate(ranked[:10]))
        idcg = sum(v / math.log2(i + 2) for i, v in enumerate(sorted(g.values(), reverse=True)[:10]))
        std.append(dcg / idcg)
    assert m["ndcg_at_10"] == pytest.approx(np.mean(std), abs=1e-6)
    assert np.mean(hand[1:]) == pytest.approx(np.mean(std[1:]), abs=1e-9)
    assert m["recall_at_1000"] == pytest.approx(1.0)
    assert len(hits[0]) == 30 and hits[0][0][1] >= hits[0][-1][1]


def test_search_top_k_keeps_the_best():
    r = _rng(5)
    c, q = r.normal(size=(200, 4)), r.normal(size=(3, 4))
    hits = search(q, c, top_k=10)
    cn = c / np.linalg.norm(c, axis=1, keepdims=True)
    for qi, h in enumerate(hits):
        sims = cn @ (q[qi] / np.linalg.norm(q[qi]))
        assert [i for i, _ in h] == list(np.argsort(-sims)[:10])


def test_reranking_map_and_mrr():
    from sklearn.metrics import average_precision_score

    q = [np.array([1.0, 0.0]), np.array([0.0, 1.0])]
    c = [np.array([[0.9, 0.1], [0.1, 0.9], [0.7, 0.7]]), np.array([[1.0, 0.0], [0.2, 1.0]])]
    rel = [[False, True, True], [False, True]]
    m = reranking_scores(q, c, rel)
    ap0 = average_precision_score([0, 1, 1], (c[0] / np.linalg.norm(c[0], axis=1, keepdims=True)) @ q[0])
    assert m["map"] == pytest.approx((ap0 + 1.0) / 2)
    assert m["mrr_at_10"] == pytest.approx((0.5 + 1.0) / 2)


def test_clustering_perfect_separation_gives_v_measure_1():
    emb = np.array([[0, 0], [0.1, 0], [10, 10], [10.1, 10], [-10, 10], [-10, 10.1]], dtype=float)
    m = clustering_scores([(emb, ["a", "a", "b", "b", "c", "c"])])
    assert m["v_measure"] == pytest.approx(1.0)
