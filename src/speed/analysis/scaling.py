"""The scaling law of the embedder in the size of its synthetic training data.

``run_scaling`` trains the embedder on nested subsets of the final data (a seeded permutation; the
subset of size N is its first N rows, so every subset contains the smaller ones), evaluates each
model on the task folders, appends one row per size to ``results.csv`` (a rerun skips the sizes
already there for the same settings), then fits

- a log-linear law ``score = a + b ln N`` (what the paper observes), and
- a saturating power law ``score = c - k N^-alpha`` (c: the asymptote),

both with ``scipy.optimize.curve_fit``, with bootstrap confidence intervals (points resampled with
replacement), R^2 and RMSE, and the data size each predicts for a target score. Outputs in the
scaling folder: ``results.csv``, ``fit.json``, ``scaling.png``.
"""

from __future__ import annotations

import csv
import json
import math
import os
import shutil
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..errors import InputError, SpeedError


# -- the laws ----------------------------------------------------------------------------------------
def loglinear(n, a, b):
    return a + b * np.log(n)


def saturating(n, c, k, alpha):
    return c - k * np.power(n, -alpha)


LAWS = {
    "loglinear": {"f": loglinear, "params": ("a", "b"), "min_points": 2, "formula": "score = a + b ln N"},
    "saturating": {"f": saturating, "params": ("c", "k", "alpha"), "min_points": 3,
                   "formula": "score = c - k N^-alpha"},
}


def _sat_jac(n, c, k, alpha):
    p = np.power(n, -alpha)
    return np.stack([np.ones_like(n), -p, k * p * np.log(n)], axis=1)


def _fit_once(law: str, x: np.ndarray, y: np.ndarray, starts: Sequence[Sequence[float]] | None = None) -> np.ndarray:
    from scipy.optimize import curve_fit

    f = LAWS[law]["f"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if law == "loglinear":
            b0, a0 = np.polyfit(np.log(x), y, 1)
            p, _ = curve_fit(f, x, y, p0=[a0, b0], jac=lambda n, a, b: np.stack([np.ones_like(n), np.log(n)], 1),
                             maxfev=2000)
            return p
        span = max(float(np.ptp(y)), 1e-3)
        # the asymptote is bounded (10 spans above the best point) so that a curve with no visible
        # saturation ends at the bound instead of running off to infinity
        lower, upper = [float(np.max(y)) - span, 0.0, 1e-3], [float(np.max(y)) + 10 * span, np.inf, 5.0]
        if starts is None:
            starts = []
            for alpha0 in (0.2, 0.5, 1.0):
                c0 = float(np.max(y)) + 0.5 * span
                starts.append([c0, max((c0 - float(np.min(y))) * float(np.min(x)) ** alpha0, 1e-6), alpha0])
        best, best_err = None, math.inf
        for p0 in starts:
            p0 = np.clip(np.asarray(p0, dtype=float), np.asarray(lower) + 1e-9, np.asarray(upper) - 1e-9)
            try:
                p, _ = curve_fit(f, x, y, p0=p0, jac=_sat_jac, bounds=(lower, upper), method="trf", maxfev=2000)
            except (RuntimeError, ValueError):
                continue
            err = float(np.sum((f(x, *p) - y) ** 2))
            if err < best_err:
                best, best_err = p, err
        if best is None:
            raise RuntimeError("saturating fit did not converge")
        return best


def goodness(law: str, params, x: np.ndarray, y: np.ndarray) -> dict:
    pred = LAWS[law]["f"](x, *params)
    ss_res = float(np.sum((y - pred) ** 2))
    ss_tot = float(np.sum((y - np.mean(y)) ** 2))
    return {"r2": 1.0 - ss_res / ss_tot if ss_tot > 0 else (1.0 if ss_res == 0 else 0.0),
            "rmse": math.sqrt(ss_res / len(y))}


def size_for(law: str, params, target: float) -> float:
    """The data size at which the law reaches ``target`` (inf when it never does)."""
    if law == "loglinear":
        a, b = params
        if b <= 0:
            return math.inf
        v = (target - a) / b
        return math.exp(v) if v < 700 else math.inf
    c, k, alpha = params
    if target >= c or k <= 0:
        return math.inf
    return float((k / (c - target)) ** (1.0 / alpha))


@dataclass
class Fit:
    law: str
    params: dict[str, float]
    ci: dict[str, tuple[float, float]]
    r2: float
    rmse: float
    n_boot: int
    target: float | None = None
    size_for_target: float | None = None
    size_for_target_ci: tuple[float, float] | None = None
    boot_params: list[list[float]] = field(default_factory=list, repr=False)

    def predict(self, n):
        return LAWS[self.law]["f"](np.asarray(n, dtype=float), *self.params.values())

    def to_dict(self) -> dict:
        d = {"law": self.law, "formula": LAWS[self.law]["formula"], "params": self.params,
             "ci95": {k: list(v) for k, v in self.ci.items()}, "r2": self.r2, "rmse": self.rmse,
             "n_boot": self.n_boot}
        if self.target is not None:
            d.update({"target": self.target, "size_for_target": _finite(self.size_for_target),
                      "size_for_target_ci95": [_finite(v) for v in self.size_for_target_ci]
                      if self.size_for_target_ci else None})
        return d


def _finite(v):
    return None if v is None or not math.isfinite(v) else float(v)


def fit_law(law: str, sizes: Sequence[float], scores: Sequence[float], n_boot: int = 1000, seed: int = 0,
            target: float | None = None) -> Fit:
    x = np.asarray(sizes, dtype=float)
    y = np.asarray(scores, dtype=float)
    need = LAWS[law]["min_points"]
    if len(np.unique(x)) < need:
        raise SpeedError(f"the {law} law needs at least {need} distinct sizes (got {len(np.unique(x))})")
    p = _fit_once(law, x, y)
    g = goodness(law, p, x, y)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(x), len(x))
        if len(np.unique(x[idx])) < need:
            continue
        try:
            boots.append(_fit_once(law, x[idx], y[idx], starts=[p] if law == "saturating" else None))
        except (RuntimeError, ValueError, np.linalg.LinAlgError):
            continue
    names = LAWS[law]["params"]
    ci = {}
    if boots:
        arr = np.asarray(boots)
        for i, name in enumerate(names):
            ci[name] = (float(np.percentile(arr[:, i], 2.5)), float(np.percentile(arr[:, i], 97.5)))
    else:
        ci = {name: (float(v), float(v)) for name, v in zip(names, p)}
    fit = Fit(law=law, params={n: float(v) for n, v in zip(names, p)}, ci=ci, r2=g["r2"], rmse=g["rmse"],
              n_boot=len(boots), boot_params=[list(map(float, b)) for b in boots])
    if target is not None:
        fit.target = float(target)
        fit.size_for_target = size_for(law, p, target)
        if boots:
            vals = np.asarray([size_for(law, b, target) for b in boots])
            # "never" (inf) sorts last; nearest-rank percentiles keep it from turning into NaN
            fit.size_for_target_ci = (float(np.percentile(vals, 2.5, method="nearest")),
                                      float(np.percentile(vals, 97.5, method="nearest")))
    return fit


def fit_all(sizes, scores, n_boot: int = 1000, seed: int = 0, target: float | None = None) -> dict:
    out = {}
    for law in LAWS:
        try:
            out[law] = fit_law(law, sizes, scores, n_boot=n_boot, seed=seed, target=target)
        except (SpeedError, RuntimeError) as exc:
            out[law] = {"error": str(exc)}
    return out


def band(fit: Fit, xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pointwise 95% band of the fitted curve over the bootstrap fits."""
    if not fit.boot_params:
        y = fit.predict(xs)
        return y, y
    f = LAWS[fit.law]["f"]
    curves = np.asarray([f(xs, *b) for b in fit.boot_params])
    return np.percentile(curves, 2.5, axis=0), np.percentile(curves, 97.5, axis=0)


# -- the fit document (fit.json), its table and plot -------------------------------------------------
def fit_document(points: list[dict], fits: dict, metric: str, target: float | None) -> dict:
    doc = {"metric": metric, "target": target, "points": points, "fits": {}}
    for law, f in fits.items():
        if isinstance(f, Fit):
            d = f.to_dict()
            xs = np.geomspace(min(p["size"] for p in points), max(p["size"] for p in points) * 4, 60)
            lo, hi = band(f, xs)
            d["curve"] = {"x": xs.tolist(), "y": f.predict(xs).tolist(), "lo": lo.tolist(), "hi": hi.tolist()}
            doc["fits"][law] = d
        else:
            doc["fits"][law] = f
    return doc


def fit_table(doc: dict) -> list[str]:
    lines = ["| size | score |", "|---|---|"]
    lines += [f"| {p['size']} | {p['score']:.4f} |" for p in doc["points"]]
    lines += ["", "| law | parameters (95% CI) | R^2 | RMSE | size for target |", "|---|---|---|---|---|"]
    for law, f in doc["fits"].items():
        if "error" in f:
            lines.append(f"| {law} | fit failed: {f['error']} | - | - | - |")
            continue
        ps = "; ".join(f"{k} = {v:.4g} [{f['ci95'][k][0]:.4g}, {f['ci95'][k][1]:.4g}]" for k, v in f["params"].items())
        n = f.get("size_for_target")
        nci = f.get("size_for_target_ci95")
        target = "-" if f.get("target") is None else (
            _size(n) if n is not None else "never (beyond the asymptote)")
        if nci and f.get("target") is not None:
            target += " [" + ", ".join("inf" if v is None else _size(v) for v in nci) + "]"
        lines.append(f"| {f['formula']} | {ps} | {f['r2']:.4f} | {f['rmse']:.4f} | {target} |")
    if doc.get("target") is not None:
        lines += ["", f"Target score: {doc['target']} ({doc['metric']})."]
    return lines


def _size(v: float) -> str:
    return f"{v:,.0f}" if v >= 1000 else f"{v:.3g}"


def plot_fit(doc: dict) -> bytes:
    from .plots import scaling_plot

    fits = {}
    for law, f in doc["fits"].items():
        if "curve" in f:
            c = f["curve"]
            fits[f"{law}: {f['formula']} (R^2 {f['r2']:.3f})"] = {"curve": (c["x"], c["y"]), "band": (c["x"], c["lo"], c["hi"])}
    return scaling_plot([p["size"] for p in doc["points"]], [p["score"] for p in doc["points"]], fits,
                        title="Embedder score vs synthetic data size", ylabel=doc.get("metric", "score"),
                        target=doc.get("target"))


# -- the experiment ----------------------------------------------------------------------------------
CSV_FIELDS = ("size", "score", "metric", "settings", "train_seconds", "eval_seconds", "tasks", "scores")


def doubling_sizes(n_rows: int, min_size: int = 32, factor: float = 2.0, max_size: int | None = None) -> list[int]:
    top = min(n_rows, max_size or n_rows)
    sizes, s = [], float(min_size)
    while int(s) < top:
        sizes.append(int(s))
        s *= factor
    sizes.append(top)
    return sorted(set(x for x in sizes if x >= 1))


def read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _append_csv(path: Path, row: dict) -> None:
    new = not path.is_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS)
        if new:
            w.writeheader()
        w.writerow(row)
        fh.flush()
        os.fsync(fh.fileno())


def run_scaling(rows: Sequence[dict], base_model: str, out_dir: str | os.PathLike, sizes: Sequence[int],
                task_dirs: Sequence[str] | None = None, train_config=None, seed: int = 0,
                instruction: bool | None = None, target: float | None = None, n_boot: int = 1000,
                cache_dir: str | None = None, keep_models: bool = False, log: Callable[[str], None] = print,
                trainer: Callable | None = None) -> dict:
    """Train (``trainer`` or the pipeline's ``train.embedder.train_embedder`` with the train-embedder stage's
    Config ``train_config``) and evaluate one embedder per size (skipping sizes in ``results.csv``), fit, plot."""
    from ..evaluate.runner import evaluate_model
    from ..evaluate.tasks import load_tasks
    from ..io import stable_hash
    from ..stages.train_embedder import Config
    from ..train import embedder

    cfg = train_config or Config()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tasks = load_tasks(task_dirs or None)
    rows = list(rows)
    if not rows:
        raise InputError("no training data (the run's exported data.jsonl is empty or missing)")
    sizes = sorted(set(int(s) for s in sizes))
    too_big = [s for s in sizes if s > len(rows) or s < 1]
    if too_big:
        raise InputError(f"sizes {too_big} are outside 1..{len(rows)} (the number of final examples)")
    order = np.random.default_rng(seed).permutation(len(rows))
    skey = stable_hash({"base": base_model, "train": dict(asdict(cfg), seed=seed, instruction=instruction),
                        "tasks": sorted(t.name for t in tasks),
                        "data": stable_hash([rows[i].get("id") or rows[i].get("query") for i in order])})[:16]
    csv_path = out / "results.csv"
    done = {int(r["size"]): r for r in read_csv(csv_path) if r.get("settings") == skey}
    train_fn = trainer or embedder.train_embedder
    for n in sizes:
        if n in done:
            log(f"[scaling] size {n}: done before (score {float(done[n]['score']):.4f}), skipped")
            continue
        subset = [rows[i] for i in order[:n]]
        mdir = out / "models" / f"n{n:07d}"
        t0 = time.time()
        log(f"[scaling] size {n}: training ...")
        path = train_fn(base_model, subset, mdir, cfg, seed, instruction)["model"]
        t1 = time.time()  # evaluated with the instruction it was trained with (its speed_embedder.json)
        res = evaluate_model(str(path), tasks=tasks, configured_instruction=instruction, cache_dir=cache_dir)
        t2 = time.time()
        row = {"size": n, "score": f"{res['average']:.6f}", "metric": "average main score", "settings": skey,
               "train_seconds": f"{t1 - t0:.1f}", "eval_seconds": f"{t2 - t1:.1f}",
               "tasks": ";".join(res["results"]),
               "scores": json.dumps({k: round(v["main_score"], 6) for k, v in res["results"].items()})}
        _append_csv(csv_path, row)
        done[n] = row
        log(f"[scaling] size {n}: score {res['average']:.4f} (train {t1 - t0:.0f}s, eval {t2 - t1:.0f}s)")
        if not keep_models:
            shutil.rmtree(mdir, ignore_errors=True)
    points = [{"size": n, "score": float(done[n]["score"]), "scores": json.loads(done[n]["scores"])}
              for n in sorted(done) if n in sizes]
    return finish(points, out, target=target, n_boot=n_boot, metric="average main score")


def finish(points: list[dict], out: Path, target: float | None = None, n_boot: int = 1000,
           metric: str = "score") -> dict:
    """Fit both laws to ``points`` and write ``fit.json`` and ``scaling.png`` into ``out``."""
    from ..io import atomic_write_text, atomic_writer

    fits = fit_all([p["size"] for p in points], [p["score"] for p in points], n_boot=n_boot, target=target)
    doc = fit_document(points, fits, metric, target)
    atomic_write_text(out / "fit.json", json.dumps(doc, indent=2) + "\n")
    with atomic_writer(out / "scaling.png", "wb") as fh:
        fh.write(plot_fit(doc))
    doc["paths"] = {"csv": str(out / "results.csv"), "fit": str(out / "fit.json"), "plot": str(out / "scaling.png")}
    return doc
