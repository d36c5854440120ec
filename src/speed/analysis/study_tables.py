"""The study's tables and plots, rendered from its saved raw results alone (``RESULTS/raw/*.json``).

``render(results_dir)`` writes, next to ``raw/``: ``ablation.{md,csv,png}`` (every embedder x variant,
every dev task, 95% bootstrap intervals, paired differences to the base variant and between
neighbouring rows), ``signals.{md,csv}`` (the data signals and the teacher's rubric),
``scaling.{md,png}`` (both fits with intervals), ``cost.{md,csv}``, ``filters.{md,csv}`` (the export
filter rows, with ``study.filters``), ``timing.md`` and ``README.md``
(all of it, with the config and commit). No number in them is typed by hand: rerunning ``render``
on the same ``raw/`` gives the same files (``speed study --tables-only`` does that).
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np

ORDER = ("untrained", "base", "junior", "junior+revisor", "senior", "senior+revisor", "teacher-direct")
NEIGHBOURS = (("untrained", "base"), ("base", "junior"), ("junior", "senior"), ("senior", "senior+revisor"),
              ("senior+revisor", "teacher-direct"), ("base", "senior+revisor"), ("untrained", "senior+revisor"))
TEACHER_STAGES = ("brainstorm", "seed", "judge", "revise-signals")


def _read(raw: Path, name: str, default=None):
    p = raw / f"{name}.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else default


def _f(v, nd: int = 3) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def _ci(lo_hi, nd: int = 3) -> str:
    return f"[{lo_hi[0]:.{nd}f}, {lo_hi[1]:.{nd}f}]"


def _md(head: list[str], rows: list[list[str]]) -> str:
    from .report import _table

    return "\n".join(_table(head, rows))


def _csv(head: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(head)
    w.writerows(rows)
    return buf.getvalue()


def _rank(name: str) -> tuple:
    return (ORDER.index(name) if name in ORDER else len(ORDER), name)


def _sort(names):
    return sorted(names, key=_rank)


# -- ablation ------------------------------------------------------------------------------------------
def ablation(raw: Path, n_boot: int, seed: int) -> tuple[str, str, dict]:
    from ..evaluate.bootstrap import summarize

    down = _read(raw, "downstream", {})
    plan = _read(raw, "ablation", {})
    md, csv_rows, summaries = [], [], {}
    head_csv = ["embedder", "comparison", "variant", "examples", "task", "score", "ci_low", "ci_high", "diff_to_base",
                "diff_ci_low", "diff_ci_high"]
    for emb in plan.get("embedders", []):
        for comp, counts in plan.get("comparisons", {}).items():
            # the variants trained on these counts (equal, except a variant short of the target: all it reached)
            sel = {v: down[f"{emb}/{v}/n{n}"] for v, n in counts.items() if f"{emb}/{v}/n{n}" in down}
            if f"{emb}/untrained" in down:
                sel["untrained"] = down[f"{emb}/untrained"]
            if len(sel) < 2:
                continue
            short = {v: n for v, n in counts.items() if n < plan.get("target", 0)}
            names = _sort(sel)
            tasks = sorted({t for e in sel.values() for t in e["tasks"]})
            items = {t: {v: sel[v]["tasks"][t]["items"] for v in names if sel[v]["tasks"].get(t, {}).get("items")}
                     for t in tasks}
            pairs = [(a, b) for a, b in NEIGHBOURS if a in sel and b in sel]
            if "base" in sel:
                pairs += [("base", v) for v in names if v not in ("base", "untrained") and ("base", v) not in pairs]
            s = summarize(items, pairs, n=n_boot, seed=seed)
            summaries[f"{emb}, {comp}"] = s
            title = f"### {emb}, {comp}"
            if short and comp.startswith("target"):
                title += " (short of the target: " + ", ".join(f"{v} {c}" for v, c in sorted(short.items())) + ")"
            md += [title, ""]
            head = ["variant", "examples"] + tasks + ["average"]
            rows = []
            for v in names:
                sc = s["scores"][v]
                cells = [v, str(sel[v]["n"])] + [f"{sc['tasks'][t]['score']:.4f} {_ci(sc['tasks'][t]['ci'])}"
                                                 if t in sc["tasks"] else "-" for t in tasks]
                cells.append(f"**{sc['average']['score']:.4f}** {_ci(sc['average']['ci'])}")
                rows.append(cells)
                base_d = next((d for d in s["differences"] if d["a"] == "base" and d["b"] == v), None)
                for t in tasks + ["average"]:
                    sco = sc["average"] if t == "average" else sc["tasks"].get(t)
                    if sco is None:
                        continue
                    bd = None if base_d is None else (base_d["average"] if t == "average" else base_d["tasks"].get(t))
                    csv_rows.append([emb, comp, v, sel[v]["n"], t, round(sco["score"], 6), round(sco["ci"][0], 6),
                                     round(sco["ci"][1], 6)] + ([round(bd["diff"], 6), round(bd["ci"][0], 6),
                                                                 round(bd["ci"][1], 6)] if bd else ["", "", ""]))
            md += [_md(head, rows), ""]
            drows = []
            for d in s["differences"]:
                a = d["average"]
                verdict = "better" if a["ci"][0] > 0 else "worse" if a["ci"][1] < 0 else "no clear difference"
                drows.append([f"{d['b']} - {d['a']}"] +
                             [f"{d['tasks'][t]['diff']:+.4f} {_ci(d['tasks'][t]['ci'])}" if t in d["tasks"] else "-"
                              for t in tasks] + [f"**{a['diff']:+.4f}** {_ci(a['ci'])}", verdict])
            md += ["Paired differences (95% bootstrap intervals over the evaluation rows; average = the mean of "
                   "the tasks):", "", _md(["difference"] + tasks + ["average", "interval says"], drows), ""]
    return "\n".join(md), _csv(head_csv, csv_rows), summaries


def ablation_plot(summaries: dict) -> bytes:
    from .plots import _plt, _png

    plt = _plt()
    keys = [k for k in summaries]
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(5.5 * max(1, len(keys)), 4), squeeze=False)
    for ax, k in zip(axes[0], keys):
        sc = summaries[k]["scores"]
        names = _sort(sc)
        y = [sc[v]["average"]["score"] for v in names]
        err = np.array([[y[i] - sc[v]["average"]["ci"][0], sc[v]["average"]["ci"][1] - y[i]] for i, v in enumerate(names)]).T
        ax.bar(range(len(names)), y, yerr=err, capsize=4, color="#4C72B0")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, rotation=30, ha="right", fontsize=8)
        ax.set_title(k, fontsize=10)
        ax.set_ylabel("dev-suite average (95% CI)")
        lo = min(sc[v]["average"]["ci"][0] for v in names)
        hi = max(sc[v]["average"]["ci"][1] for v in names)
        ax.set_ylim(max(0.0, lo - 0.05), min(1.0, hi + 0.05))
    return _png(fig)


# -- data signals ---------------------------------------------------------------------------------------
SIGNALS = (("valid_rate", "valid"), ("length_adherence", "length ok"), ("distinct_1", "distinct-1"),
           ("distinct_2", "distinct-2"), ("near_duplicate_rate", "near-dup"), ("mean_margin", "margin"),
           ("false_negative_rate", "false neg"), ("revised_rate", "revised"))
RUBRIC = ("query_realism", "positive_relevance", "negative_hardness")


def signals(raw: Path, n_boot: int, seed: int) -> tuple[str, str]:
    from ..evaluate.bootstrap import interval

    variants = _read(raw, "variants", {})
    judge = _read(raw, "judge", {})
    if not variants:
        return "", ""
    head = ["variant", "prompts", "final", "yield"] + [lab for _, lab in SIGNALS] + [f"judge: {k}" for k in RUBRIC] + [
        "judged"]
    rows, crows = [], []
    rng = np.random.default_rng(seed)
    for v in _sort(variants):
        e = variants[v]
        m = e["metrics"]["all"]
        cells = [v, str(e["prompts_used"]), str(e["final"]), _f(e["yield"])] + [_f(m.get(k)) for k, _ in SIGNALS]
        c = [v, e["prompts_used"], e["final"], round(e["yield"], 6)] + [None if m.get(k) is None else round(m[k], 6)
                                                                         for k, _ in SIGNALS]
        scored = [j["scores"] for j in judge.get(v, []) if j["scores"]]
        for k in RUBRIC:
            vals = np.array([s[k] for s in scored], dtype=float)
            if len(vals):
                boots = np.array([vals[rng.integers(0, len(vals), len(vals))].mean() for _ in range(n_boot)])
                lo, hi = interval(boots)
                cells.append(f"{vals.mean():.2f} [{lo:.2f}, {hi:.2f}]")
                c.append(round(float(vals.mean()), 4))
            else:
                cells.append("-")
                c.append(None)
        cells.append(f"{len(scored)}/{len(judge.get(v, []))}")
        c.append(len(scored))
        rows.append(cells)
        crows.append(c)
    per_kind = []
    for v in _sort(variants):
        for kind, m in sorted(variants[v]["metrics"].items()):
            if kind != "all":
                per_kind.append([v, kind, str(m["prompts"]), str(m.get("final", "-")), _f(m.get("valid_rate")),
                                 _f(m.get("length_adherence")), _f(m.get("distinct_2")), _f(m.get("mean_margin")),
                                 _f(m.get("false_negative_rate"))])
    reasons = []
    for v in _sort(variants):
        d = variants[v].get("dropped") or {}
        reasons.append([v, ", ".join(f"{k} {n}" for k, n in sorted(d.items(), key=lambda x: -x[1])) or "-"])
    md = "\n".join([
        "Per variant, over the prompts it used to reach its final examples (the same planned prompts, in the same "
        "order, for every variant). Margin and false negatives by the reference embedder (all-MiniLM-L6-v2); "
        "judge = the teacher's 1-5 rubric on a fixed random sample of final examples (mean, 95% bootstrap interval).",
        "", _md(head, rows), "", "Per kind:", "",
        _md(["variant", "kind", "prompts", "final", "valid", "length ok", "distinct-2", "margin", "false neg"], per_kind),
        "", "Why rows were not final:", "", _md(["variant", "reasons (count)"], reasons)])
    return md, _csv(["variant", "prompts", "final", "yield"] + [k for k, _ in SIGNALS] + list(RUBRIC) + ["judged"], crows)


# -- scaling --------------------------------------------------------------------------------------------
def scaling(raw: Path, n_boot: int, seed: int) -> tuple[str, bytes | None]:
    from .scaling import fit_all, fit_document, fit_table, plot_fit

    sc = _read(raw, "scaling")
    down = _read(raw, "downstream", {})
    if not sc:
        return "", None
    pts = sorted(({"size": e["n"], "score": e["average"], "scores": {t: r["main_score"] for t, r in e["tasks"].items()}}
                  for e in down.values() if e["embedder"] == sc["embedder"] and e["variant"] == sc["variant"]
                  and e["n"] in sc["sizes"]), key=lambda p: p["size"])
    if len(pts) < 3:
        return "", None
    target = sc.get("target_score")
    td = [e for e in down.values() if e["embedder"] == sc["embedder"] and e["variant"] == "teacher-direct"]
    if target is None and td:
        target = round(max(td, key=lambda e: e["n"])["average"], 4)
    doc = fit_document(pts, fit_all([p["size"] for p in pts], [p["score"] for p in pts], n_boot=n_boot, seed=seed,
                                    target=target), "dev-suite average", target)
    md = "\n".join([f"{sc['embedder']} embedder trained on nested subsets of the {sc['variant']} data "
                    f"({sc['chosen_by']}); target = "
                    + (f"the teacher-direct row's score ({target})" if td and sc.get("target_score") is None
                       else str(target)) + ".", ""] + fit_table(doc))
    return md, plot_fit(doc)


# -- cost -----------------------------------------------------------------------------------------------
def cost(raw: Path) -> tuple[str, str]:
    c = _read(raw, "cost")
    if not c:
        return "", ""
    teach = {k: v for k, v in c["speed_run"].items() if v["role"] == "teacher"}
    calls = sum(v["calls"] for v in teach.values())
    toks = sum(v["prompt_tokens"] + v["completion_tokens"] for v in teach.values())
    final = c["final_examples"]
    td = c["study"].get("compare:teacher-direct")
    rows, crows = [], []
    by_stage = ", ".join(f"{k.split(':')[0]} {v['calls']}" for k, v in sorted(teach.items()))
    n_sr = final.get("senior+revisor") or final.get("senior")
    if n_sr:
        gen = sum(v["calls"] for k, v in c["study"].items() if k in ("compare:senior+revisor",))
        rows.append(["SPEED (teacher aligns the small models once)", f"{calls:,} ({by_stage})", f"{toks:,}",
                     str(n_sr), f"{1000 * calls / n_sr:,.0f}", f"{1000 * toks / n_sr:,.0f}"])
        crows.append(["speed", calls, toks, n_sr, round(1000 * calls / n_sr, 1), round(1000 * toks / n_sr, 1), gen])
    if td and final.get("teacher-direct"):
        n = final["teacher-direct"]
        t = td["prompt_tokens"] + td["completion_tokens"]
        rows.append(["teacher-direct (the teacher writes every example)", f"{td['calls']:,}", f"{t:,}", str(n),
                     f"{1000 * td['calls'] / n:,.0f}", f"{1000 * t / n:,.0f}"])
        crows.append(["teacher-direct", td["calls"], t, n, round(1000 * td["calls"] / n, 1), round(1000 * t / n, 1), ""])
    md = [_md(["path", "teacher calls", "teacher tokens", "final examples", "teacher calls per 1,000",
               "teacher tokens per 1,000"], rows)]
    if n_sr and td and final.get("teacher-direct"):
        per_ex = td["calls"] / final["teacher-direct"]
        be = calls / per_ex if per_ex else None
        md += ["", f"SPEED's teacher cost is fixed (alignment data); teacher-direct pays about {per_ex:.2f} teacher "
               f"calls per final example. SPEED needs fewer teacher calls than teacher-direct from about "
               f"{be:,.0f} final examples on (at this study's size, {n_sr}, it "
               + ("does" if n_sr > be else "does not") + "); at 10x that size its teacher calls are "
               f"{calls / (10 * be):.0%} of teacher-direct's."]
    judge = {k: v for k, v in c["study"].items() if k.startswith("study:judge")}
    if judge:
        md += ["", f"The study's rubric judging took {sum(v['calls'] for v in judge.values()):,} more teacher calls "
               "(evaluation, not data generation)."]
    return "\n".join(md), _csv(["path", "teacher_calls", "teacher_tokens", "final_examples", "calls_per_1000",
                                "tokens_per_1000", "generator_calls"], crows)


def fixes(raw: Path) -> str:
    f = _read(raw, "fixes")
    if not f:
        return ""
    b = f["brainstorm"]
    rows = [["brainstormed task keeps its list numbering (\"Task 1: ...\")", f"{b['answers']} teacher answers",
             f"{b['numbered']} of {b['tasks_kept_before']} kept tasks", "0 (numbering stripped)"],
            ["a question accepted as a task", f"{b['answers']} teacher answers",
             f"{b['questions']} of {b['tasks_kept_before']} kept tasks", f"0 ({b['questions']} rejected: question_not_task)"]]
    if b.get("tasks"):
        rows.append(["an off-topic task (nearer, by the reference embedder, to another sampled topic than to its own)",
                     f"{b['tasks']} kept tasks", f"{b['nearer_another_topic']}", "not fixed: measured only"])
    for v, r in sorted(f["variants"].items(), key=lambda x: _rank(x[0])):
        if "repeated_keys_kept" in r:
            rows.append(["a looping model repeats its JSON keys (was rejected: duplicate_key)", f"{v}: {r['rows']} rows",
                         f"{r['repeated_keys_kept']} rejected", f"{r['repeated_keys_kept']} valid (first value of "
                         f"each key), {r['repeated_keys_final']} of them final"])
    for v, r in sorted(f["variants"].items(), key=lambda x: _rank(x[0])):
        rows.append(["classification input under half its sampled length", f"{v}: {r['classification']} classification rows",
                     f"{r['too_short']} kept", f"0 ({r['too_short']} rejected: too_short)"])
    for v, r in sorted(f["variants"].items(), key=lambda x: _rank(x[0])):
        rows.append(["STS triple whose S3 is as close to S1 as S2 (reference embedder)",
                     f"{v}: {r['sts_valid']} valid STS rows", f"{r['sts_false_negative']} kept",
                     f"0 ({r['sts_false_negative']} dropped: false_negative)"])
    ex = b.get("examples") or {}
    lines = ["## Pipeline fixes: before and after, on this study's outputs", "",
             _md(["weakness", "measured on", "before the fix", "after"], rows)]
    ex = dict(ex, off_topic=b.get("off_topic_examples") or [])
    for k, label in (("numbered", "numbered"), ("question", "questions"), ("off_topic", "topic -> task, nearer another topic")):
        if ex.get(k):
            lines += ["", f"Examples ({label}): " + "; ".join(f"\"{t}\"" for t in ex[k])]
    return "\n".join(lines)


def timing(raw: Path) -> str:
    t = _read(raw, "timing", {})
    rows = [[k, f"{v['seconds'] / 60:.1f}", str(v["attempts"])] for k, v in sorted(t.items())]
    total = sum(v["seconds"] for v in t.values())
    lines = []
    run = _read(raw, "speed_run")
    if run:
        srows = [[name, _f((e.get("seconds") or 0) / 60, 1), ", ".join(f"{k} {v}" for k, v in sorted(e["counts"].items())
                                                                      if k in ("tasks", "valid", "prompts", "pairs",
                                                                               "records", "steps", "requests"))]
                 for name, e in run.items() if e.get("status") == "done"]
        run_total = sum(e.get("seconds") or 0 for e in run.values())
        srows.append(["total", f"{run_total / 60:.1f}", ""])
        lines += ["The SPEED run (`runs/study/run`; each stage's last attempt, from its manifest):", "",
                  _md(["stage", "minutes", "counts"], srows), "", "The study's steps:", ""]
    rows.append(["total", f"{total / 60:.1f}", ""])
    return "\n".join(lines + [_md(["step", "minutes (summed over invocations)", "invocations"], rows)])


def select_table(raw: Path) -> str:
    s = _read(raw, "select")
    if not s:
        return ""
    rows = [[json.dumps(c["settings"]), f"{c['heldout']['mrr']:.4f}", f"{c['heldout']['top1']:.4f}",
             _f(c.get("train_loss")), "**chosen**" if i == s["chosen"] else ""] for i, c in enumerate(s["candidates"])]
    return "\n".join([f"{s['embedder']} training settings, chosen on a held-out {s['heldout_rows']} of the senior+revisor "
                      f"examples (trained on the other {s['train_rows']}; in-batch retrieval among the held-out "
                      "positives and negatives). The evaluation tasks played no part.", "",
                      _md(["settings", "held-out MRR", "held-out top-1", "train loss", ""], rows)])


# -- the export's filters (issue 17) -------------------------------------------------------------------
def filters_table(raw: Path, n_boot: int, seed: int) -> tuple[str, str]:
    from ..evaluate.bootstrap import summarize

    f = _read(raw, "filters")
    if not f or not f.get("rows"):
        return "", ""
    down = _read(raw, "downstream", {})
    n = f.get("n")
    md = [f"{f['variant']} final examples through each set of export filter keys (`speed.synth.filters`), every "
          f"row cut to the same {n} examples. Held-out MRR: the selection embedder trained on the row's examples, "
          f"in-batch retrieval on {f.get('heldout_rows')} held-out {f['variant']} examples no row trains on "
          f"({f.get('chosen_by', '')}); the filters that beat `none` there form row `chosen`"
          + (f" ({', '.join(f['chosen'])})." if f.get("chosen") else " (none did: no combination)."), ""]
    rows = []
    for k, r in f["rows"].items():
        funnel = "; ".join(f"{x['filter']}: " + (", ".join(f"{a} {b}" for a, b in x["dropped"].items()) or "0 dropped")
                           + ("" if not x.get("changed") else " (" + ", ".join(f"{a} {b}" for a, b in x["changed"].items()) + ")")
                           for x in r.get("funnel", []) if x["dropped"] or x.get("changed"))
        h = r.get("heldout") or {}
        rows.append([k, f"`{json.dumps(r['spec'], sort_keys=True)}`", str(r["kept"]), funnel or "-",
                     _f(h.get("mrr"), 4) if h else "-"])
    md += [_md(["row", "filter keys", "examples kept", "dropped / changed", "held-out MRR"], rows), ""]
    head_csv = ["embedder", "row", "examples", "task", "score", "ci_low", "ci_high", "diff_to_none", "diff_ci_low",
                "diff_ci_high"]
    csv_rows = []
    embs = sorted({e["embedder"] for key, e in down.items() if "/filters:" in key})
    for emb in embs:
        sel = {k: down[f"{emb}/filters:{k}/n{n}"] for k in f["rows"] if f"{emb}/filters:{k}/n{n}" in down}
        if len(sel) < 2 or "none" not in sel:
            continue
        names = list(sel)
        tasks = sorted({t for e in sel.values() for t in e["tasks"]})
        items = {t: {v: sel[v]["tasks"][t]["items"] for v in names if sel[v]["tasks"].get(t, {}).get("items")}
                 for t in tasks}
        s = summarize(items, [("none", v) for v in names if v != "none"], n=n_boot, seed=seed)
        table = []
        for v in names:
            sc = s["scores"][v]
            d = next((x for x in s["differences"] if x["b"] == v), None)
            cells = [v] + [f"{sc['tasks'][t]['score']:.4f} {_ci(sc['tasks'][t]['ci'])}" if t in sc["tasks"] else "-"
                           for t in tasks]
            cells.append(f"**{sc['average']['score']:.4f}** {_ci(sc['average']['ci'])}")
            if d is None:
                cells.append("-")
            else:
                a = d["average"]
                verdict = "better" if a["ci"][0] > 0 else "worse" if a["ci"][1] < 0 else "no clear difference"
                cells.append(f"{a['diff']:+.4f} {_ci(a['ci'])} {verdict}")
            table.append(cells)
            for t in tasks + ["average"]:
                sco = sc["average"] if t == "average" else sc["tasks"].get(t)
                if sco is None:
                    continue
                dd = None if d is None else (d["average"] if t == "average" else d["tasks"].get(t))
                csv_rows.append([emb, v, n, t, round(sco["score"], 6), round(sco["ci"][0], 6), round(sco["ci"][1], 6)]
                                + ([round(dd["diff"], 6), round(dd["ci"][0], 6), round(dd["ci"][1], 6)] if dd else ["", "", ""]))
        md += [f"### {emb}, {n} examples per row", "",
               _md(["row"] + tasks + ["average", "average - none (95% CI)"], table), ""]
    return "\n".join(md), _csv(head_csv, csv_rows)


# -- all -----------------------------------------------------------------------------------------------
def render(results_dir, n_boot: int | None = None, seed: int | None = None) -> dict:
    from ..io import atomic_write_text, atomic_writer

    out = Path(results_dir)
    raw = out / "raw"
    if not raw.is_dir():
        from ..errors import InputError

        raise InputError(f"{raw}: no raw study results (run speed study CONFIG first)")
    prov = _read(raw, "provenance", {})
    cfg = {}
    if (raw / "config.yaml").is_file():
        import yaml

        cfg = (yaml.safe_load((raw / "config.yaml").read_text(encoding="utf-8")) or {}).get("study") or {}
    n_boot = n_boot or int(cfg.get("bootstrap", 1000))
    seed = int(cfg.get("seed", 0)) if seed is None else seed
    paths = {}
    abl_md, abl_csv, summaries = ablation(raw, n_boot, seed)
    sig_md, sig_csv = signals(raw, n_boot, seed)
    sca_md, sca_png = scaling(raw, n_boot, seed)
    cost_md, cost_csv = cost(raw)
    fil_md, fil_csv = filters_table(raw, n_boot, seed)
    for name, text in (("filters.md", fil_md), ("filters.csv", fil_csv), ("ablation.md", abl_md), ("ablation.csv", abl_csv), ("signals.md", sig_md),
                       ("signals.csv", sig_csv), ("scaling.md", sca_md), ("cost.md", cost_md), ("cost.csv", cost_csv),
                       ("timing.md", timing(raw)), ("select.md", select_table(raw))):
        if text:
            atomic_write_text(out / name, text.rstrip("\n") + "\n")
            paths[name] = str(out / name)
    for name, png in (("ablation.png", ablation_plot(summaries) if summaries else None), ("scaling.png", sca_png)):
        if png:
            with atomic_writer(out / name, "wb") as fh:
                fh.write(png)
            paths[name] = str(out / name)
    fixes_md = fixes(raw)
    if fixes_md:
        atomic_write_text(out / "fixes.md", fixes_md + "\n")
        paths["fixes.md"] = str(out / "fixes.md")
    readme = ["# Quality study results", "",
              "Produced by `speed study configs/study.yaml` (tables regenerated from `raw/` by "
              "`speed study configs/study.yaml --tables-only`); do not edit by hand.", "",
              f"- commit: `{prov.get('commit')}`" + (" (with uncommitted changes)" if prov.get("dirty") else ""),
              f"- config: `raw/config.yaml` (a copy of `{prov.get('config')}`)",
              f"- machine: {prov.get('machine', {}).get('cpu', '?')}, {prov.get('machine', {}).get('cores', '?')} cores",
              f"- started {prov.get('started_first', '?')}, finished {prov.get('finished', 'not yet')}",
              f"- intervals: 95% bootstrap, {n_boot} resamples, seed {seed}", "",
              "## Ablation: embedders trained on each variant's data", "", abl_md, "",
              "![ablation](ablation.png)", ""] + (["## Data signals", "", sig_md, ""] if sig_md else [])
    if (raw / "select.json").is_file():
        readme += ["## Training settings (chosen on synthetic data)", "", select_table(raw), ""]
    if sca_md:
        readme += ["## Scaling", "", sca_md, "", "![scaling](scaling.png)", ""]
    if cost_md:
        readme += ["## Teacher cost", "", cost_md, ""]
    if fil_md:
        readme += ["## Data filters (issue 17)", "", fil_md, ""]
    if fixes_md:
        readme += [fixes_md, ""]
    readme += ["## Wall time per step", "", timing(raw), ""]
    atomic_write_text(out / "README.md", "\n".join(readme))
    paths["README.md"] = str(out / "README.md")
    return {"paths": paths, "summaries": summaries}
