"""Bootstrap intervals of evaluation scores, paired across models (the same resampled rows for both).

A task's per-item values (``evaluate_model(..., keep_items=True)``) are resampled with replacement
and its main statistic recomputed on each resample: Spearman of gold vs cosine (STS), the mean of
per-row correctness (classification) or of per-query nDCG@10 (retrieval), the cosine AP (pair
classification). Two models evaluated on the same task share the resampled rows, so the interval of
their difference is paired. A suite average resamples each task independently and averages the tasks.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np


def _stat(items: Mapping, idx: np.ndarray) -> float:
    kind = items["stat"]
    if kind == "mean":
        return float(np.asarray(items["values"], dtype=np.float64)[idx].mean())
    gold = np.asarray(items["gold"], dtype=np.float64)[idx]
    pred = np.asarray(items["pred"], dtype=np.float64)[idx]
    if kind == "spearman":
        from scipy.stats import rankdata

        g, p = rankdata(gold), rankdata(pred)
        g, p = g - g.mean(), p - p.mean()
        den = np.sqrt((g * g).sum() * (p * p).sum())
        return float((g * p).sum() / den) if den > 0 else 0.0
    if kind == "ap":
        from sklearn.metrics import average_precision_score

        return float(average_precision_score(gold.astype(int), pred)) if gold.min() != gold.max() else 0.0
    raise ValueError(f"unknown item statistic {kind!r}")


def _size(items: Mapping) -> int:
    return len(items["values"] if items["stat"] == "mean" else items["gold"])


def _resamples(n_items: int, n: int, rng: np.random.Generator) -> list[np.ndarray]:
    return [rng.integers(0, n_items, n_items) for _ in range(n)]


def replicate_scores(tasks: Mapping[str, Mapping[str, Mapping]], n: int = 1000, seed: int = 0
                     ) -> dict[str, dict[str, np.ndarray]]:
    """``tasks``: task -> model -> items. Per task and model, ``n`` scores on shared resamples."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for t_i, (task, models) in enumerate(sorted(tasks.items())):
        sizes = {_size(it) for it in models.values()}
        if len(sizes) != 1:
            raise ValueError(f"{task}: the models were evaluated on different rows ({sorted(sizes)})")
        idxs = _resamples(sizes.pop(), n, np.random.default_rng([seed, t_i]))
        out[task] = {m: np.array([_stat(it, ix) for ix in idxs]) for m, it in models.items()}
    return out


def interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    a = (1 - level) / 2
    lo, hi = np.quantile(values, [a, 1 - a])
    return float(lo), float(hi)


def summarize(tasks: Mapping[str, Mapping[str, Mapping]], pairs: list[tuple[str, str]], n: int = 1000,
              seed: int = 0) -> dict:
    """Per model: each task's score and 95% interval, and the suite average's; per (a, b) pair: the
    difference b - a per task and on the average, with its paired 95% interval."""
    reps = replicate_scores(tasks, n, seed)
    models = sorted({m for per in tasks.values() for m in per})
    full = {task: {m: _stat(it, np.arange(_size(it))) for m, it in per.items()} for task, per in tasks.items()}
    scores = {}
    for m in models:
        per_task = {t: {"score": full[t][m], "ci": interval(reps[t][m])} for t in sorted(tasks) if m in tasks[t]}
        avg = np.mean([reps[t][m] for t in per_task], axis=0)
        scores[m] = {"tasks": per_task, "average": {"score": float(np.mean([v["score"] for v in per_task.values()])),
                                                   "ci": interval(avg)}}
    diffs = []
    for a, b in pairs:
        common = [t for t in sorted(tasks) if a in tasks[t] and b in tasks[t]]
        per_task = {}
        for t in common:
            d = reps[t][b] - reps[t][a]
            per_task[t] = {"diff": full[t][b] - full[t][a], "ci": interval(d), "p_le_0": float(np.mean(d <= 0))}
        d_avg = np.mean([reps[t][b] - reps[t][a] for t in common], axis=0)
        diffs.append({"a": a, "b": b, "tasks": per_task,
                      "average": {"diff": float(np.mean([per_task[t]["diff"] for t in common])),
                                  "ci": interval(d_avg), "p_le_0": float(np.mean(d_avg <= 0))}})
    return {"n_bootstrap": n, "seed": seed, "scores": scores, "differences": diffs}
