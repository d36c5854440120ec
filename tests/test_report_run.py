"""The cost report and the run report, on a run directory built here (manifest, ledger, export, evaluate)."""

from __future__ import annotations

import base64
import io
import json
import re
from pathlib import Path

import pytest

from speed.llm.ledger import Ledger, UsageRecord
from speed.runtime.rundir import RunDir

KINDS = ("retrieval", "classification", "sts", "short-short")


def make_run(path: Path, n: int = 40, evaluate: bool = True, scaling: bool = False) -> RunDir:
    rd = RunDir(path)
    rd.write_manifest({"run": "test-run", "stages": {}})
    rd.update_stage("topics", status="done", seconds=0.1, counts={"topics": 4},
                    outputs={"topics.jsonl": {"rows": 4, "bytes": 1, "sha256": "x"}})
    rd.update_stage("synthesize", status="done", seconds=12.0, counts={"samples": 60, "parsed": 52, "valid": 48})
    rd.update_stage("revise", status="done", seconds=8.0, counts={"revised": 30})
    rows = []
    for i in range(n):
        kind = KINDS[i % len(KINDS)]
        has_neg = kind != "short-short"
        margin = (0.05 * (i % 7) - 0.1) if has_neg else None
        rows.append({"id": f"e{i}", "kind": kind, "task": "t", "query": f"q{i}", "positive": f"p{i}",
                     "negative": f"n{i}" if has_neg else "", "topic": "x", "model": "m", "revised": i % 3 == 0,
                     "length_ok": None if kind == "sts" else i % 4 != 0, "sim_pos": 0.5,
                     "sim_neg": None if margin is None else 0.5 - margin, "margin": margin,
                     "false_negative": None if margin is None else margin <= 0})
    (path / "export").mkdir(parents=True, exist_ok=True)
    (path / "export" / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    funnel = {"prompted": 60, "parsed": 52, "valid": 48, "revised": 30, "after_dedup": 44, "kept": n}
    rd.update_stage("export", status="done", seconds=3.0, counts={"rows": n, "funnel": funnel},
                    outputs={"data.jsonl": {"rows": n, "bytes": 1, "sha256": "y"}})
    led = Ledger(path / "ledger.jsonl")
    for _ in range(10):
        led.record(UsageRecord(stage="seed", role="teacher", model="gpt-4o", prompt_tokens=1000, completion_tokens=500))
    led.record(UsageRecord(stage="seed", role="teacher", model="gpt-4o", prompt_tokens=1000, completion_tokens=500,
                           cache_hit=True))
    for _ in range(60):
        led.record(UsageRecord(stage="synthesize", role="senior", model="smollm2-135m-instruct", prompt_tokens=300,
                               completion_tokens=200))
    if evaluate:
        res = lambda s1, s2: {"model": "m", "average": (s1 + s2) / 2, "instruction": False, "results": {  # noqa: E731
            "STSBenchmark": {"metric": "cosine_spearman", "main_score": s1},
            "Banking77Classification": {"metric": "accuracy", "main_score": s2}}}
        (path / "evaluate").mkdir(exist_ok=True)
        body = {"trained": res(0.84, 0.81), "base": res(0.8203, 0.8004), "delta": {}}
        (path / "evaluate" / "results.json").write_text(json.dumps(body))
        rd.update_stage("evaluate", status="done", seconds=30.0)
    if scaling:
        from speed.analysis.scaling import finish

        pts = [{"size": s, "score": 0.5 + 0.03 * __import__("math").log(s)} for s in (32, 64, 128, 256)]
        (path / "scaling").mkdir(exist_ok=True)
        finish(pts, path / "scaling", target=0.8, n_boot=50)
    return rd


def test_cost_report_numbers(tmp_path):
    from speed.analysis.cost import PriceTable, cost_markdown, cost_report

    make_run(tmp_path)
    rep = cost_report(tmp_path)
    t = rep["groups"]["teacher"]
    assert t["calls"] == 10 and t["cache_hits"] == 1 and t["prompt_tokens"] == 10_000
    assert t["usd"] == pytest.approx((10_000 * 2.5 + 5_000 * 10.0) / 1e6)
    g = rep["groups"]["generators"]
    assert g["calls"] == 60 and g["usd"] == 0.0  # local model: unpriced
    assert rep["examples"] == 40
    assert rep["per_1k"]["teacher"]["calls"] == pytest.approx(250.0)
    assert rep["per_1k"]["teacher"]["tokens"] == pytest.approx(15_000 * 1000 / 40)
    speed = rep["paper"]["SPEED (paper)"]
    assert speed["scaled_calls"] == pytest.approx(45_000 * 40 / 920_000)
    assert speed["tokens_per_1k"] == pytest.approx(32e6 / 920)
    e5 = rep["paper"]["E5-mistral (paper)"]
    assert e5["scaled_tokens"] == pytest.approx(180e6 * 40 / 500_000)
    assert rep["by_stage"]["synthesize"]["senior"]["completion_tokens"] == 12_000
    md = cost_markdown(rep)
    assert "SPEED (paper)" in md and "E5-mistral (paper)" in md and "this run (teacher)" in md
    # a configurable price table: the local model now costs something
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"smollm2-135m-instruct": [1.0, 2.0]}))
    rep2 = cost_report(tmp_path, PriceTable.load(prices))
    assert rep2["groups"]["generators"]["usd"] == pytest.approx((18_000 * 1.0 + 12_000 * 2.0) / 1e6)


def test_price_table_errors_are_one_line(tmp_path):
    from speed.analysis.cost import PriceTable
    from speed.errors import InputError

    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"gpt-4o": "cheap"}))
    with pytest.raises(InputError, match="expected \\[prompt, completion\\]"):
        PriceTable.load(bad)


def _pngs(html: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'<img[^>]+src="data:image/png;base64,([^"]+)"', html)]


def assert_png_not_blank(png: bytes) -> None:
    from PIL import Image

    img = Image.open(io.BytesIO(png)).convert("RGB")
    assert img.size[0] > 50 and img.size[1] > 50
    colours = img.getcolors(1 << 24)
    assert colours is not None and len(colours) > 2  # not a single colour


def test_report_renders_markdown_and_self_contained_html(tmp_path):
    from speed.analysis.report import write_report

    make_run(tmp_path, scaling=True)
    res = write_report(tmp_path)
    assert res["sections"] == ["Stages", "Funnel", "Quality", "Cost", "Evaluation", "Scaling"]
    md = Path(res["markdown"]).read_text()
    html = Path(res["html"]).read_text()
    assert "| retrieval |" in md and "false-negative rate" in md and "![" in md
    for p in res["plots"]:
        assert Path(p).is_file() and Path(p).stat().st_size > 0
    pngs = _pngs(html)
    assert len(pngs) == len(res["plots"]) >= 6
    for png in pngs:
        assert_png_not_blank(png)
    assert "src=\"http" not in html and "<script" not in html  # self-contained
    assert "0.8203" in html and "STSBenchmark" in html and "SPEED (paper)" in html


def test_report_is_tolerant_of_missing_stages(tmp_path):
    from speed.analysis.report import write_report

    rd = RunDir(tmp_path)
    rd.write_manifest({"run": "bare", "stages": {}})
    rd.update_stage("topics", status="done", seconds=0.1, counts={"topics": 4})
    res = write_report(tmp_path)
    assert res["sections"] == ["Stages", "Cost"]
    assert Path(res["html"]).is_file()


def test_report_stage_and_cli(tmp_path):
    import subprocess
    import sys

    from speed.runtime.rundir import StageContext
    from speed.stages import report as stage

    rd = make_run(tmp_path)
    ctx = StageContext(name="report", config=None, cfg=stage.Config(), rundir=rd)
    stage.run(ctx)
    assert {"report.md", "report.html"} <= set(ctx.outputs) and ctx.counts["plots"] >= 5
    proc = subprocess.run([sys.executable, "-m", "speed.cli.eval_commands", "report", str(tmp_path), "--out",
                           str(tmp_path / "r2")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "r2" / "report.html").is_file()
    bad = subprocess.run([sys.executable, "-m", "speed.cli.eval_commands", "report", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "not a run directory" in bad.stderr
