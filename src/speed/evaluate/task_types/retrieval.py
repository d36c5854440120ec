"""Retrieval: ``corpus.jsonl`` (_id, title, text), ``queries.jsonl`` (_id, text) and ``qrels/{split}.tsv``
(query-id, corpus-id, score, after that header); main score ``ndcg_at_10``. Scored as mteb's ``RetrievalEvaluator``:
the judged queries against every "title text" document (never given the instruction), exact cosine search, top 1000
kept, pytrec_eval nDCG / MAP / recall / precision at 1, 3, 5, 10, 100, 1000 and MRR@10, averaged over the queries."""

from typing import Sequence

import numpy as np

from ...errors import InputError
from .base import TaskType, field, nonempty, normalize, read_rows

K_VALUES = (1, 3, 5, 10, 100, 1000)


class Retrieval(TaskType):
    name, main_score = "retrieval", "ndcg_at_10"

    def load(self, task):
        cpath, qpath = task.path / "corpus.jsonl", task.path / "queries.jsonl"
        rpath = task.path / "qrels" / f"{task.split}.tsv"
        corpus: dict[str, dict] = {}
        for ln, row in read_rows(cpath):
            did = field(cpath, ln, row, "_id", (str, int), "a document id")
            text = field(cpath, ln, row, "text", (str,), "a string")
            title = "" if row.get("title") is None else row["title"]
            if not isinstance(title, str):
                raise InputError(f"{cpath}:{ln}: field 'title' = {title!r} is not a string")
            if str(did) in corpus:
                raise InputError(f"{cpath}:{ln}: duplicate document id {did!r}")
            corpus[str(did)] = {"title": title, "text": text}
        nonempty(cpath, list(corpus))
        queries: dict[str, str] = {}
        for ln, row in read_rows(qpath):
            qid = field(qpath, ln, row, "_id", (str, int), "a query id")
            if str(qid) in queries:
                raise InputError(f"{qpath}:{ln}: duplicate query id {qid!r}")
            queries[str(qid)] = field(qpath, ln, row, "text", (str,), "a string")
        nonempty(qpath, list(queries))
        if not rpath.is_file():
            raise InputError(f"{rpath}: file not found")
        qrels: dict[str, dict[str, int]] = {}
        with open(rpath, encoding="utf-8") as fh:
            for ln, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                parts = line.rstrip("\n").split("\t")
                if ln == 1 and parts[:2] == ["query-id", "corpus-id"]:
                    continue
                if ln == 1:
                    raise InputError(f"{rpath}:1: expected the header 'query-id<TAB>corpus-id<TAB>score'")
                if len(parts) != 3:
                    raise InputError(f"{rpath}:{ln}: expected 3 tab-separated fields (query-id, corpus-id, score), "
                                     f"got {len(parts)}")
                qid, did, score = parts
                try:
                    rel = int(float(score))
                except ValueError:
                    raise InputError(f"{rpath}:{ln}: score {score!r} is not a number") from None
                if qid not in queries:
                    raise InputError(f"{rpath}:{ln}: unknown query {qid!r} (not in queries.jsonl)")
                if did not in corpus:
                    raise InputError(f"{rpath}:{ln}: unknown document {did!r} (not in corpus.jsonl)")
                qrels.setdefault(qid, {})[did] = rel
        if not qrels:
            raise InputError(f"{rpath}:1: no relevance judgements")
        return {"corpus": corpus, "queries": queries, "qrels": qrels}

    def evaluate(self, encoder, task, ins):
        d = task.data
        qids = [q for q in d["queries"] if q in d["qrels"]]  # mteb encodes only judged queries
        doc_ids = list(d["corpus"])
        docs = [(d["corpus"][i]["title"] + " " + d["corpus"][i]["text"]).strip() for i in doc_ids]
        qe = encoder.encode([d["queries"][q] for q in qids], ins)
        ce = encoder.encode(docs, None)  # documents never get the instruction
        hits = search(qe, ce, top_k=int(task.meta.get("top_k", 1000)))
        run = {q: {doc_ids[i]: s for i, s in h} for q, h in zip(qids, hits)}
        return retrieval_scores(run, d["qrels"], ignore_identical_ids=bool(task.meta.get("ignore_identical_ids")))


def search(query_emb: np.ndarray, corpus_emb: np.ndarray, top_k: int = 1000, chunk: int = 256) -> list[list[tuple[int, float]]]:
    """Exact cosine search: per query, the top ``top_k`` (corpus index, score), best first."""
    q = normalize(query_emb).astype(np.float32)
    c = normalize(corpus_emb).astype(np.float32)
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
    names = (("ndcg_at", "ndcg_cut"), ("map_at", "map_cut"), ("recall_at", "recall"), ("precision_at", "P"))
    for k in k_values:
        for ours, theirs in names:  # mteb's metric names for pytrec_eval's
            out[f"{ours}_{k}"] = sum(v[f"{theirs}_{k}"] for v in per_query.values()) / n
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
    # per judged query (sorted by id): nDCG@10, whose mean is the main score
    out["items"] = {"stat": "mean", "values": [per_query[q]["ndcg_cut_10"] for q in sorted(per_query)]}
    return out
