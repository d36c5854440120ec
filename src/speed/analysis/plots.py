"""Plots for the report, the scaling law and the generator comparison (matplotlib, Agg backend).

Every function returns PNG bytes; ``png_data_uri`` embeds them in a self-contained HTML page.
"""

from __future__ import annotations

import base64
import io
from typing import Sequence


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    plt = _plt()
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


def png_data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def bar_chart(labels: Sequence[str], series: dict[str, Sequence[float]], title: str, ylabel: str = "",
              ylim: tuple[float, float] | None = None, annotate: bool = True) -> bytes:
    """Grouped bars: one group per label, one bar per series."""
    import numpy as np

    plt = _plt()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * len(labels) * max(1, len(series)) + 2), 3.6))
    n = max(1, len(series))
    width = 0.8 / n
    x = np.arange(len(labels))
    for i, (name, values) in enumerate(series.items()):
        vals = [np.nan if v is None else v for v in values]
        bars = ax.bar(x + (i - (n - 1) / 2) * width, vals, width, label=name)
        if annotate:
            for b, v in zip(bars, vals):
                if v == v:  # not NaN
                    ax.annotate(f"{v:.3g}", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center",
                                va="bottom", fontsize=7)
    ax.set_xticks(x, labels, rotation=20 if len(labels) > 4 else 0, ha="right" if len(labels) > 4 else "center")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if ylim:
        ax.set_ylim(*ylim)
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def histogram(groups: dict[str, Sequence[float]], title: str, xlabel: str, bins: int = 20,
              vline: float | None = None) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 3.6))
    values = [v for vs in groups.values() for v in vs]
    if values:
        lo, hi = min(values), max(values)
        if lo == hi:
            lo, hi = lo - 0.5, hi + 0.5
        for name, vs in groups.items():
            if vs:
                ax.hist(vs, bins=bins, range=(lo, hi), alpha=0.55, label=f"{name} (n={len(vs)})")
        ax.legend(fontsize=8)
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)
    if vline is not None:
        ax.axvline(vline, color="red", linestyle="--", linewidth=1)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("examples")
    ax.grid(alpha=0.3)
    return _png(fig)


def funnel_chart(steps: Sequence[tuple[str, int]], title: str = "Data funnel") -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(steps) + 1.4))
    names = [s for s, _ in steps][::-1]
    vals = [v for _, v in steps][::-1]
    bars = ax.barh(names, vals, color="#4C72B0")
    top = max(vals) if vals else 1
    for b, v in zip(bars, vals):
        ax.annotate(f"{v:,}", (b.get_width(), b.get_y() + b.get_height() / 2), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=8)
    ax.set_xlim(0, top * 1.15 if top else 1)
    ax.set_title(title)
    ax.set_xlabel("rows")
    return _png(fig)


def scaling_plot(sizes: Sequence[float], scores: Sequence[float], fits: dict, title: str = "Scaling law",
                 ylabel: str = "score", target: float | None = None) -> bytes:
    """Points and each fitted curve (``fits``: name -> {"curve": (xs, ys), "band": (xs, lo, hi) | None})."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    ax.scatter(sizes, scores, color="black", zorder=3, label="measured")
    for name, f in fits.items():
        xs, ys = f["curve"]
        line, = ax.plot(xs, ys, label=name)
        band = f.get("band")
        if band is not None:
            bx, lo, hi = band
            ax.fill_between(bx, lo, hi, color=line.get_color(), alpha=0.15)
    if target is not None:
        ax.axhline(target, color="grey", linestyle=":", linewidth=1, label=f"target {target:g}")
    ax.set_xscale("log")
    ax.set_xlabel("training examples (log scale)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return _png(fig)
