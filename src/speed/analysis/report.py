"""The run report: one Markdown file and one self-contained HTML page in the report stage's folder.

It shows whatever is done: the stages, the data funnel, quality signals by kind (margin
histogram, false-negative rate, length adherence), cost (from the ledger, against the paper's
figures), the evaluation against the base model, and the scaling curve where ``speed scaling``
has written one. Plots are PNGs (matplotlib Agg): files beside the Markdown, base64 in the HTML.
"""

from __future__ import annotations

import html
import json
import os
import time
from pathlib import Path

from ..errors import SpeedError
from ..io import atomic_write_text, read_jsonl
from . import plots
from .cost import PriceTable, cost_markdown, cost_report


def _load_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _rate(values) -> float | None:
    vals = [bool(v) for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def gather(run_dir: str | os.PathLike, prices: PriceTable | None = None) -> dict:
    """Everything the report shows, as plain data."""
    from ..runtime.rundir import RunDir
    from ..stages import STAGE_ORDER, artifact_path, provider

    rd = RunDir(run_dir)
    if not rd.manifest_path.exists():
        raise SpeedError(f"{run_dir} is not a run directory (no manifest.json)")
    manifest = rd.read_manifest()
    stages = []
    for name in STAGE_ORDER:
        e = manifest["stages"].get(name)
        if e is None:
            continue
        rows = {k: v.get("rows") for k, v in (e.get("outputs") or {}).items() if v.get("rows") is not None}
        stages.append({"stage": name, "status": e.get("status"), "seconds": e.get("seconds"), "rows": rows})
    data = {"run": manifest.get("run") or rd.path.name, "run_dir": str(rd.path), "stages": stages,
            "generated_at": time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime())}
    exp = manifest["stages"].get(provider("training-data").name) or {}
    data_path = artifact_path(rd.path, "training-data")
    rows = list(read_jsonl(data_path)) if data_path.is_file() else []
    funnel = (exp.get("counts") or {}).get("funnel") or {}
    if not funnel:
        syn = (manifest["stages"].get(provider("synthetic-examples").name) or {}).get("counts") or {}
        funnel = {"prompted": syn.get("samples"), "parsed": syn.get("parsed"), "valid": syn.get("valid"),
                  "kept": len(rows) if rows else None}
    order = ["prompted", "parsed", "valid", "revised", "after_dedup", "kept"]
    keys = [k for k in order if k in funnel] + [k for k in funnel if k not in order]
    data["funnel"] = {k: funnel[k] for k in keys if funnel[k] is not None}
    kinds = sorted({r.get("kind", "?") for r in rows})
    quality = {}
    for k in kinds + ["all"]:
        sel = rows if k == "all" else [r for r in rows if r.get("kind") == k]
        margins = [r["margin"] for r in sel if r.get("margin") is not None]
        quality[k] = {"rows": len(sel), "mean_margin": sum(margins) / len(margins) if margins else None,
                      "false_negative_rate": _rate(r.get("false_negative") for r in sel),
                      "length_adherence": _rate(r.get("length_ok") for r in sel),
                      "revised": _rate(r.get("revised") for r in sel), "margins": margins}
    data["quality"] = quality if rows else {}
    data["cost"] = cost_report(rd.path, prices, examples=len(rows) if rows else None)
    data["evaluation"] = _load_json(artifact_path(rd.path, "eval-results"))
    data["scaling"] = _load_json(rd.path / "scaling" / "fit.json")
    return data


def _fmt(v, digits: int = 4) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _table(header: list[str], rows: list[list]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(_fmt(c) for c in r) + " |" for r in rows]
    return out


def sections(data: dict) -> list[dict]:
    """Report sections: {title, markdown lines, plots: [(name, png bytes, caption)]}."""
    out = []
    out.append({"title": "Stages", "md": _table(["stage", "status", "seconds", "rows"], [
        [s["stage"], s["status"], "-" if s["seconds"] is None else f"{s['seconds']:.1f}", ", ".join(f"{k}: {v}" for k, v in s["rows"].items()) or "-"]
        for s in data["stages"]]), "plots": []})
    if data["funnel"]:
        steps = list(data["funnel"].items())
        out.append({"title": "Funnel", "md": _table(["step", "rows"], [list(s) for s in steps]),
                    "plots": [("funnel", plots.funnel_chart(steps), "prompted -> parsed -> valid -> revised -> kept")]})
    if data["quality"]:
        q = data["quality"]
        kinds = [k for k in q if k != "all"]
        md = _table(["kind", "rows", "mean margin", "false-negative rate", "length adherence", "revised"],
                    [[k, q[k]["rows"], q[k]["mean_margin"], q[k]["false_negative_rate"], q[k]["length_adherence"],
                      q[k]["revised"]] for k in kinds + ["all"]])
        md += ["", "Margin = cos(query, positive) - cos(query, negative) by the reference embedder; a margin <= 0 "
               "marks a likely false negative. Kinds without a negative have no margin."]
        pl = [("margins", plots.histogram({k: q[k]["margins"] for k in kinds}, "Hard-negative margin by kind",
                                          "cos(q, pos) - cos(q, neg)", vline=0.0), "margin histogram by kind")]
        rates = {"false-negative rate": [q[k]["false_negative_rate"] for k in kinds],
                 "length adherence": [q[k]["length_adherence"] for k in kinds]}
        pl.append(("rates", plots.bar_chart(kinds, rates, "Quality signals by kind", "rate", ylim=(0, 1.05)),
                   "false-negative rate and length adherence by kind"))
        out.append({"title": "Quality", "md": md, "plots": pl})
    cost = data["cost"]
    md = cost_markdown(cost).splitlines()
    pl = []
    if cost["by_stage"]:
        stages = list(cost["by_stage"])
        roles = sorted({r for v in cost["by_stage"].values() for r in v})
        series = {r: [(cost["by_stage"][s].get(r) or {}).get("prompt_tokens", 0)
                      + (cost["by_stage"][s].get(r) or {}).get("completion_tokens", 0) for s in stages] for r in roles}
        pl.append(("cost", plots.bar_chart(stages, series, "Tokens by stage and role", "tokens", annotate=False),
                   "model tokens per stage (cache hits excluded)"))
    out.append({"title": "Cost", "md": md, "plots": pl})
    ev = data["evaluation"]
    if ev:
        tr, base = ev.get("trained") or {}, ev.get("base") or {}
        tasks = list((tr.get("results") or {}))
        rows = []
        for t in tasks:
            r = tr["results"][t]
            b = (base.get("results") or {}).get(t) if base else None
            rows.append([t, r["metric"], r["main_score"], b["main_score"] if b else None,
                         (r["main_score"] - b["main_score"]) if b else None])
        md = _table(["task", "metric", "trained", "base", "delta"], rows)
        md += ["", f"Trained: `{tr.get('model')}`; base: `{(base or {}).get('model')}`; "
               f"instruction: {tr.get('instruction')}; protocol {tr.get('protocol', 'mteb-1.12')}."]
        series = {"trained": [r[2] for r in rows]}
        if base:
            series["base"] = [r[3] for r in rows]
        out.append({"title": "Evaluation", "md": md,
                    "plots": [("evaluation", plots.bar_chart(tasks, series, "Evaluation: trained vs base", "main score",
                                                             ylim=(0, 1.05)), "main score per task")]})
    sc = data["scaling"]
    if sc and sc.get("points"):
        from .scaling import fit_table, plot_fit

        md = fit_table(sc)
        out.append({"title": "Scaling", "md": md, "plots": [("scaling", plot_fit(sc), "score against training size")]})
    return out


def render_markdown(data: dict, secs: list[dict], image_names: dict[str, str]) -> str:
    lines = [f"# Run report: {data['run']}", "", f"Run directory `{data['run_dir']}`; generated {data['generated_at']}.", ""]
    for s in secs:
        lines += [f"## {s['title']}", ""] + s["md"] + [""]
        for name, _, caption in s["plots"]:
            lines += [f"![{caption}]({image_names[name]})", ""]
    return "\n".join(lines)


_CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1000px;margin:2em auto;
padding:0 1em;color:#222}table{border-collapse:collapse;margin:.8em 0;font-size:.9em}th,td{border:1px solid #ccc;
padding:.25em .6em;text-align:left}th{background:#f3f3f3}img{max-width:100%;border:1px solid #eee;margin:.4em 0}
figure{margin:1em 0}figcaption{font-size:.85em;color:#555}code{background:#f6f6f6;padding:0 .2em}"""


def _md_inline(text: str) -> str:
    import re

    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)


def _md_to_html(lines: list[str]) -> str:
    """The little Markdown the sections use: pipe tables and paragraphs."""
    out, table = [], []

    def flush():
        if not table:
            return
        head, body = table[0], [r for r in table[2:]]
        cells = lambda r: [c.strip() for c in r.strip().strip("|").split("|")]  # noqa: E731
        out.append("<table><tr>" + "".join(f"<th>{_md_inline(c)}</th>" for c in cells(head)) + "</tr>" +
                   "".join("<tr>" + "".join(f"<td>{_md_inline(c)}</td>" for c in cells(r)) + "</tr>" for r in body) +
                   "</table>")
        table.clear()

    for line in lines:
        if line.startswith("|"):
            table.append(line)
            continue
        flush()
        if line.strip():
            out.append(f"<p>{_md_inline(line)}</p>")
    flush()
    return "\n".join(out)


def render_html(data: dict, secs: list[dict]) -> str:
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             f"<title>Run report: {html.escape(str(data['run']))}</title><style>{_CSS}</style></head><body>",
             f"<h1>Run report: {html.escape(str(data['run']))}</h1>",
             f"<p>Run directory <code>{html.escape(data['run_dir'])}</code>; generated {data['generated_at']}.</p>"]
    for s in secs:
        parts.append(f"<h2>{html.escape(s['title'])}</h2>")
        parts.append(_md_to_html(s["md"]))
        for name, png, caption in s["plots"]:
            parts.append(f"<figure><img alt=\"{html.escape(caption)}\" id=\"plot-{name}\" src=\"{plots.png_data_uri(png)}\">"
                         f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None,
                 prices: PriceTable | None = None) -> dict:
    """Render the report; returns {"markdown": path, "html": path, "plots": [paths], "sections": [titles]}."""
    from ..stages import artifact_path

    data = gather(run_dir, prices)
    out = Path(out_dir) if out_dir else artifact_path(run_dir, "run-report").parent
    out.mkdir(parents=True, exist_ok=True)
    secs = sections(data)
    names = {}
    written = []
    from ..io import atomic_writer

    for s in secs:
        for name, png, _ in s["plots"]:
            names[name] = f"{name}.png"
            with atomic_writer(out / names[name], "wb") as fh:
                fh.write(png)
            written.append(str(out / names[name]))
    md_path, html_path = out / "report.md", out / "report.html"
    atomic_write_text(md_path, render_markdown(data, secs, names))
    atomic_write_text(html_path, render_html(data, secs))
    return {"markdown": str(md_path), "html": str(html_path), "plots": written, "sections": [s["title"] for s in secs]}
