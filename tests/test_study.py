"""``speed study``: the harness end to end on a scripted teacher/generator (the logic: rounds until the
target, final examples, rubric, selection, downstream with a real all-MiniLM-L6-v2 on tiny task folders,
scaling, cost, tables), resumability, and the bootstrap against an independent computation. The
committed study results are checked to be what the renderer makes of their raw results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from speed.evaluate.bootstrap import summarize

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "fixtures" / "eval" / "valid"


def _reply(messages, index):
    import zlib

    from test_data_stages_unit import reply

    text = messages[-1]["content"]
    if "You are checking training data" in text:
        if '"validity"' in text:  # the score stage's rubric: a third of the examples are invalid
            return json.dumps({"query_realism": 4, "positive_relevance": 5, "negative_hardness": 2,
                               "validity": 1 if zlib.crc32(text.encode()) % 3 == 0 else 5})
        return json.dumps({"query_realism": 4, "positive_relevance": 5, "negative_hardness": 2 + index % 2})
    out = reply(messages, index)
    if "Brainstorm" in text or "outputs, numbered from 0" in text or not out.startswith("{"):
        return out
    # a different example for every prompt (else MinHash keeps one per kind): its words drawn from the prompt's hash
    h = zlib.crc32(text.encode())
    words = " ".join(f"w{(h >> s) % 997}" for s in range(0, 24, 3))
    return json.dumps({k: f"{v} {words}" for k, v in json.loads(out).items()
                       if k not in ("label", "misleading_label")} | {k: v for k, v in json.loads(out).items()
                                                                        if k in ("label", "misleading_label")})


@pytest.fixture
def scripted_models(monkeypatch):
    from test_data_stages_unit import Scripted

    backends = {}

    def make(ref):
        return backends.setdefault(ref.model, Scripted(_reply))

    monkeypatch.setattr("speed.llm.backends.make_backend", make)
    monkeypatch.setattr("speed.models.resolve.check_model_exists", lambda ref: None)
    monkeypatch.setattr("speed.llm.client.model_identity", lambda ref: ref.model)
    return backends


def _config(tmp_path: Path) -> Path:
    cfg = {
        "run": {"name": "study-unit", "run_dir": str(tmp_path / "work" / "run"), "until": "brainstorm"},
        "models": {r: {"model": f"/fake/{r}.gguf"} for r in ("teacher", "junior", "senior", "revisor")},
        "topics": {"count": 3},
        "synthesize": {"shard_size": 4},
        "study": {
            "results_dir": str(tmp_path / "results"), "work_dir": str(tmp_path / "work"),
            "target": 6, "max_prompts": 16, "chunk": 4, "judge_sample": 3, "bootstrap": 200,
            "variants": ["base", "teacher-direct"],
            "eval_tasks": [str(TINY / t) for t in ("TinySTS", "TinyClassification", "TinyRetrieval", "TinyPairs")],
            "embedders": {"minilm": {"model": "all-minilm-l6-v2", "train": {"epochs": 1, "batch_size": 4}}},
            "select": {"embedder": "minilm", "holdout": 0.34,
                       "candidates": [{"learning_rate": 1e-5}, {"learning_rate": 5e-5}]},
            "scaling_sizes": [2, 3, 4, 6],
        },
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def _fresh_calls(ledger: Path) -> int:
    return sum(1 for line in ledger.read_text().splitlines() if not json.loads(line)["cache_hit"])


def test_study_end_to_end_resumes_and_renders(tmp_path, scripted_models, capsys):
    from speed.cli.main import main

    cfg = _config(tmp_path)
    assert main(["study", str(cfg)]) == 0
    results, work = tmp_path / "results", tmp_path / "work"
    raw = results / "raw"
    variants = json.loads((raw / "variants.json").read_text())
    # every 4th-prompt reply of the scripted models is "sorry" (sample index 1 never occurs with n=1), so the
    # target is reached; the base variant and the teacher-direct one answered the same prompts
    for name in ("base", "teacher-direct"):
        v = variants[name]
        assert v["final"] == 6 and v["reached_target"] and v["prompts_used"] <= v["prompts_generated"] <= 16
        assert sum(v["dropped"].values()) == v["prompts_used"] - v["final"]
    import pyarrow.parquet as pq

    base = pq.read_table(results / "data" / "base.parquet").to_pylist()
    assert len(base) == 6 and all(r["query"] and r["positive"] for r in base)
    judge = json.loads((raw / "judge.json").read_text())
    assert [j["scores"]["query_realism"] for j in judge["base"]] == [4, 4, 4]
    select = json.loads((raw / "select.json").read_text())
    assert len(select["candidates"]) == 2 and select["chosen"] in (0, 1)
    down = json.loads((raw / "downstream.json").read_text())
    assert {"minilm/untrained", "minilm/base/n6", "minilm/teacher-direct/n6", "minilm/base/n2"} <= set(down)
    assert down["minilm/base/n6"]["train"]["steps"] >= 1
    # the bootstrap's full-sample score is the evaluator's main score, for every task and model
    tables = json.loads(json.dumps({t: {k: e["tasks"][t]["items"] for k, e in down.items()}
                                    for t in down["minilm/untrained"]["tasks"]}))
    s = summarize(tables, [], n=50)
    for k, e in down.items():
        for t, r in e["tasks"].items():
            if t != "TinyPairs":  # max_ap: the best of four similarity functions; the items keep cosine AP
                assert s["scores"][k]["tasks"][t]["score"] == pytest.approx(r["main_score"], abs=1e-9)
    cost = json.loads((raw / "cost.json").read_text())
    assert cost["speed_run"]["brainstorm:teacher"]["calls"] == 3 * 4
    assert cost["study"]["compare:teacher-direct"]["calls"] == variants["teacher-direct"]["prompts_generated"]
    for name in ("ablation.md", "ablation.csv", "ablation.png", "signals.md", "scaling.md", "scaling.png", "cost.md",
                 "timing.md", "README.md"):
        assert (results / name).is_file(), name
    assert "base - untrained" in (results / "ablation.md").read_text()
    fixes = json.loads((raw / "fixes.json").read_text())
    assert fixes["brainstorm"]["answers"] == 12 and fixes["variants"]["base"]["too_short"] == 0
    assert "Pipeline fixes" in (results / "README.md").read_text()

    # a rerun pays nothing: no model call, no training
    ledger_calls = _fresh_calls(work / "ledger.jsonl")
    stamp = (raw / "downstream.json").read_text()
    capsys.readouterr()
    assert main(["study", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "training on" not in out and "the SPEED run is not needed again" in out
    assert _fresh_calls(work / "ledger.jsonl") == ledger_calls
    assert (raw / "downstream.json").read_text() == stamp

    # a fresh clone holds the committed results only (no run dir, no cache): it goes on from them, the
    # SPEED run is not redone and no model is asked or trained again
    kept = tmp_path / "kept-work"
    shutil.copytree(work, kept)
    shutil.rmtree(work)
    assert main(["study", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "the SPEED run is not needed again" in out and "training on" not in out
    assert not (work / "run").exists() and not (work / "ledger.jsonl").exists()
    assert (raw / "downstream.json").read_text() == stamp
    shutil.rmtree(work)
    shutil.move(kept, work)

    # anyone can retrain and re-evaluate on the committed data alone: no model call, the same scores
    again = tmp_path / "again"
    assert main(["study", str(cfg), "--from-data", str(results / "data"), "--set", f"study.results_dir={again}",
                 "--set", f"study.work_dir={again / 'work'}"]) == 0
    redo = json.loads((again / "raw" / "downstream.json").read_text())
    assert set(redo) == set(down)
    for k in down:
        assert redo[k]["average"] == pytest.approx(down[k]["average"], abs=1e-6), k
    assert not (again / "work" / "ledger.jsonl").exists() and _fresh_calls(work / "ledger.jsonl") == ledger_calls
    assert (again / "ablation.md").is_file() and not (again / "signals.md").exists()

    # the data was judged with another rubric prompt: the judge is asked again, nothing else (here the prompt
    # is the same, so its answers come from the cache: nothing paid)
    old = json.loads((raw / "judge.json").read_text())
    assert old["prompt"] and old["base"]
    (raw / "judge.json").write_text(json.dumps({**old, "prompt": "an older prompt"}))
    capsys.readouterr()
    assert main(["study", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "training on" not in out and "judge base" in out
    assert _fresh_calls(work / "ledger.jsonl") == ledger_calls
    assert json.loads((raw / "judge.json").read_text()) == old
    assert (raw / "downstream.json").read_text() == stamp

    # tables only: the same files again
    before = {p.name: p.read_text() for p in results.glob("*.md")} | {"ablation.csv": (results / "ablation.csv").read_text()}
    assert main(["study", str(cfg), "--tables-only"]) == 0
    assert {p: (results / p).read_text() for p in before} == before


def test_study_interrupted_generation_resumes_without_paying_twice(tmp_path, scripted_models):
    from speed.analysis.study import Study
    from speed.runtime.config import load_config

    cfg = load_config(_config(tmp_path))
    cfg.study.embedders = {}
    calls = {"n": 0}
    import speed.analysis.compare as compare

    real = compare.generate_variant

    def dies_on_second_round(v, prompts, settings, out):
        rows = real(v, prompts, settings, out)
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return rows

    compare.generate_variant = dies_on_second_round
    try:
        with pytest.raises(KeyboardInterrupt):
            Study(cfg, log=lambda m: None).run()
    finally:
        compare.generate_variant = real
    ledger = tmp_path / "work" / "ledger.jsonl"
    paid = _fresh_calls(ledger)
    Study(cfg, log=lambda m: None).run()
    variants = json.loads((tmp_path / "results" / "raw" / "variants.json").read_text())
    fresh = [json.loads(line) for line in ledger.read_text().splitlines() if not json.loads(line)["cache_hit"]]
    generated = [r for r in fresh if r["stage"].startswith("compare:")]
    # every prompt paid exactly once, although the first run was cut short in the middle of its rounds
    assert len(generated) == sum(v["prompts_generated"] for v in variants.values())
    assert paid < len(fresh)
    Study(cfg, log=lambda m: None).run()
    assert _fresh_calls(ledger) == len(fresh)


def test_paired_bootstrap_matches_an_independent_computation():
    from scipy.stats import spearmanr

    rng = np.random.default_rng(1)
    gold = rng.random(300)
    a, b = gold + rng.normal(0, 1.0, 300), gold + rng.normal(0, 0.2, 300)
    tasks = {"sts": {"A": {"stat": "spearman", "gold": gold.tolist(), "pred": a.tolist()},
                     "B": {"stat": "spearman", "gold": gold.tolist(), "pred": b.tolist()}}}
    s = summarize(tasks, [("A", "B")], n=300, seed=3)
    assert s["scores"]["A"]["tasks"]["sts"]["score"] == pytest.approx(spearmanr(gold, a)[0])
    # the same resamples by hand
    r = np.random.default_rng([3, 0])
    idx = [r.integers(0, 300, 300) for _ in range(300)]
    diffs = [spearmanr(gold[i], b[i])[0] - spearmanr(gold[i], a[i])[0] for i in idx]
    lo, hi = np.quantile(diffs, [0.025, 0.975])
    d = s["differences"][0]["average"]
    assert d["ci"][0] == pytest.approx(lo) and d["ci"][1] == pytest.approx(hi) and lo > 0


COMMITTED = ROOT / "docs" / "results"


@pytest.mark.skipif(not (COMMITTED / "raw" / "downstream.json").is_file(), reason="no committed study results yet")
def test_committed_tables_are_rendered_from_the_committed_raw_results(tmp_path):
    """No hand-edited numbers: rendering docs/results/raw again gives the committed tables byte for byte."""
    from speed.analysis.study_tables import render

    copy = tmp_path / "results"
    shutil.copytree(COMMITTED / "raw", copy / "raw")
    render(copy)
    for p in sorted(COMMITTED.glob("*.md")) + sorted(COMMITTED.glob("*.csv")):
        assert (copy / p.name).read_text() == p.read_text(), p.name


def test_retrieval_corpus_cut_keeps_every_judged_document(tmp_path):
    from speed.analysis.study import Study
    from speed.runtime.config import build_config

    task = tmp_path / "R"
    (task / "qrels").mkdir(parents=True)
    (task / "task.json").write_text(json.dumps({"name": "R", "type": "retrieval", "main_score": "ndcg_at_10",
                                                "split": "test", "language": "en"}))
    (task / "corpus.jsonl").write_text("".join(json.dumps({"_id": f"d{i}", "title": "", "text": f"doc {i}"}) + "\n"
                                               for i in range(30)))
    (task / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "q"}) + "\n")
    (task / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td7\t1\nq1\td29\t1\n")
    cfg = build_config({"run": {"name": "x"}, "study": {
        "work_dir": str(tmp_path / "w"), "results_dir": str(tmp_path / "r"), "eval_tasks": [str(task)],
        "retrieval_corpus": 10}})
    [cut] = Study(cfg, log=lambda m: None).eval_tasks()
    ids = [json.loads(line)["_id"] for line in Path(cut, "corpus.jsonl").read_text().splitlines()]
    assert len(ids) == 10 and {"d7", "d29"} <= set(ids)
    assert json.loads(Path(cut, "task.json").read_text())["name"] == "R-10"
    assert Study(cfg, log=lambda m: None).eval_tasks() == [cut]  # made once


def test_from_data_without_data_is_one_line_and_writes_nothing(tmp_path, capsys):
    from speed.cli.main import main

    cfg = _config(tmp_path)
    assert main(["study", str(cfg), "--from-data", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no variant data (*.parquet) here" in err[0]
    assert not (tmp_path / "results").exists() and not (tmp_path / "work").exists()


def test_study_filter_rows_at_equal_counts(tmp_path, scripted_models):
    """Issue 17's rows: the export's own filter code on one variant's data, teacher scores counted, a held-out
    choice, every row trained and evaluated at one count, and the table rendered from raw."""
    from speed.cli.main import main

    cfg_path = _config(tmp_path)
    cfg = yaml.safe_load(cfg_path.read_text())
    # 20 examples, 4 held out: a third of the pool fails the score filter, leaving well over the 8 a row needs
    cfg["study"].update(target=20, max_prompts=32, variants=["base"], filters_variant="base", scaling_sizes=[20],
                        select={}, filters={"none": {}, "score": {"min_score": 3.5},
                                            "mined": {"mine_negatives": "add", "mine_relative_margin": 0.0}})
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert main(["study", str(cfg_path)]) == 0
    raw = tmp_path / "results" / "raw"
    f = json.loads((raw / "filters.json").read_text())
    held = f["heldout_rows"]
    pool = 20 - held
    assert set(f["rows"]) >= {"none", "score", "mined"} and f["rows"]["none"]["kept"] == pool
    dropped = f["rows"]["score"]["funnel"][0]
    assert dropped["filter"] == "teacher_score" and dropped["dropped"].get("low_score", 0) >= 1
    assert f["rows"]["score"]["kept"] == pool - dropped["dropped"]["low_score"]
    assert f["n"] == min(r["kept"] for r in f["rows"].values())
    mined = f["rows"]["mined"]["funnel"][-1]
    assert mined["filter"] == "mined_negatives" and mined["changed"].get("added", 0) >= 1
    assert sum(mined["changed"].values()) <= pool  # the query -> document kinds only
    # the teacher scored every pooled example once, in the study's ledger
    ledger = [json.loads(x) for x in (tmp_path / "work" / "ledger.jsonl").read_text().splitlines()]
    assert sum(1 for r in ledger if r["stage"] == "study:score" and not r["cache_hit"]) == pool
    down = json.loads((raw / "downstream.json").read_text())
    for row in f["rows"]:
        assert f"minilm/filters:{row}/n{f['n']}" in down, row
    assert all(r["heldout"]["train_rows"] == f["n"] for k, r in f["rows"].items() if k != "chosen")
    table = (tmp_path / "results" / "filters.md").read_text()
    assert "average - none (95% CI)" in table and "held-out MRR" in table
    # a bad filter key is named before anything runs
    cfg["study"]["filters"]["bad"] = {"round_trip_k": 0}
    cfg_path.write_text(yaml.safe_dump(cfg))
    assert main(["study", str(cfg_path)]) == 2


def test_ablation_comparisons_at_the_target_and_at_equal_counts():
    from speed.analysis.study import ablation_comparisons

    # everyone reached the target: one comparison
    assert list(ablation_comparisons({"base": 300, "junior": 300}, 300).values()) == [{"base": 300, "junior": 300}]
    # the base fell far short: all at its count, and the others again at the most they all reached
    comps = ablation_comparisons({"base": 30, "junior": 207, "senior": 250, "teacher-direct": 300}, 300)
    assert list(comps.values()) == [{"base": 30, "junior": 207, "senior": 250, "teacher-direct": 300},
                                    {"base": 30, "junior": 30, "senior": 30, "teacher-direct": 30},
                                    {"junior": 207, "senior": 207, "teacher-direct": 207}]
    assert "without base" in list(comps)[2]
    # only the base fell short: the others are equal at the target already
    assert len(ablation_comparisons({"base": 30, "junior": 300, "senior": 300}, 300)) == 2
