import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import ROOT, run_cli, wait_for
from odp_synth import write_dump
from speed.runtime.config import build_config
from speed.errors import SpeedError
from speed.runtime.pipeline import Pipeline, status
from speed.runtime.rundir import RunDir, StageContext

TOPICS_CFG = ROOT / "configs" / "topics.yaml"


def _read(path):
    return path.read_text(encoding="utf-8")


def test_topics_run_status_and_rerun_does_nothing(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("run", str(TOPICS_CFG), "--run-dir", str(run_dir))
    assert proc.returncode == 0, proc.stderr
    topics = run_dir / "topics" / "topics.jsonl"
    rows = [json.loads(line) for line in _read(topics).splitlines()]
    assert len(rows) == 200 and {"id", "path", "original_path", "depth", "text"} <= set(rows[0])

    st = json.loads(run_cli("status", str(run_dir), "--json").stdout)
    assert st["stages"]["topics"]["state"] == "done"
    assert st["stages"]["topics"]["rows"] == {"topics.jsonl": 200}
    assert st["stages"]["topics"]["counts"]["topics"] == 200
    assert st["stages"]["brainstorm"]["state"] == "pending"

    before = {p: (p.stat().st_mtime_ns, _read(p)) for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    proc = run_cli("run", str(TOPICS_CFG), "--run-dir", str(run_dir))
    assert proc.returncode == 0 and "done, skipped" in proc.stdout
    after = {p: (p.stat().st_mtime_ns, _read(p)) for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"}
    assert after == before  # nothing rewritten


def test_changed_stage_config_reruns_it(tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli("run", str(TOPICS_CFG), "--run-dir", str(run_dir)).returncode == 0
    proc = run_cli("run", str(TOPICS_CFG), "--run-dir", str(run_dir), "--set", "topics.count=10")
    assert proc.returncode == 0 and "[topics] running" in proc.stdout
    assert len(_read(run_dir / "topics" / "topics.jsonl").splitlines()) == 10
    # --overwrite never refuses to redo a stale stage
    proc = run_cli("run", str(TOPICS_CFG), "--run-dir", str(run_dir), "--overwrite", "never")
    assert proc.returncode == 2 and "config or inputs changed" in proc.stderr
    # --overwrite always redoes a fresh one
    proc = run_cli("run", str(TOPICS_CFG), "--run-dir", str(run_dir), "--set", "topics.count=10",
                   "--overwrite", "always")
    assert proc.returncode == 0 and "[topics] running" in proc.stdout


def test_missing_output_is_redone(tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli("run", str(TOPICS_CFG), "--run-dir", str(run_dir)).returncode == 0
    (run_dir / "topics" / "topics.jsonl").unlink()
    proc = run_cli("run", str(TOPICS_CFG), "--run-dir", str(run_dir))
    assert proc.returncode == 0 and "[topics] running" in proc.stdout
    assert len(_read(run_dir / "topics" / "topics.jsonl").splitlines()) == 200


@pytest.fixture
def evaluate_unimplemented(monkeypatch):
    """Pretend the evaluate stage is not built, to check how the pipeline treats a missing stage."""
    import speed.stages as stages

    monkeypatch.setitem(stages._DECLARED, "evaluate", None)
    return "evaluate"


def test_unimplemented_stage_stops_the_run_plainly(tmp_path, evaluate_unimplemented, capsys):
    from speed.cli.main import main

    run_dir = tmp_path / "run"
    skip = "[brainstorm, seed, train-junior, root, judge, revise-signals, train-senior, train-revisor, " \
           "synthesize, revise, dedup, score, export, train-embedder]"
    rc = main(["run", str(TOPICS_CFG), "--run-dir", str(run_dir), "--until", "evaluate", "--set", f"run.skip={skip}"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.strip().splitlines() == ["speed: error: stage evaluate is not implemented yet"]
    assert (run_dir / "topics" / "topics.jsonl").exists()
    assert not (run_dir / "evaluate").exists()
    st = status(run_dir)
    assert st["stages"]["brainstorm"]["state"] == "skipped"
    assert st["stages"]["evaluate"]["state"] == "not-implemented"


def test_hand_edited_manifest_is_detected(tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli("run", str(TOPICS_CFG), "--run-dir", str(run_dir)).returncode == 0
    manifest = run_dir / "manifest.json"
    manifest.write_text(_read(manifest).replace('"topics": 200', '"topics": 201'))
    proc = run_cli("status", str(run_dir))
    assert proc.returncode == 2 and "edited by hand or corrupted" in proc.stderr
    manifest.write_text("{not json")
    proc = run_cli("run", str(TOPICS_CFG), "--run-dir", str(run_dir))
    assert proc.returncode == 2 and "manifest.json is corrupted" in proc.stderr


def test_status_of_a_non_run_dir(tmp_path):
    proc = run_cli("status", str(tmp_path))
    assert proc.returncode == 2 and "not a run directory" in proc.stderr


def test_dry_run_writes_nothing(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("run", str(ROOT / "configs" / "demo.yaml"), "--run-dir", str(run_dir), "--dry-run", "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    actions = {row["stage"]: row["action"] for row in plan["stages"]}
    assert actions["topics"] == "run" and actions["brainstorm"] == "run" and actions["train-junior"] == "run"
    assert not run_dir.exists()


def test_dry_run_names_a_stage_not_built(tmp_path, evaluate_unimplemented):
    from speed.runtime.config import build_config, read_yaml
    from speed.runtime.pipeline import plan

    data = read_yaml(ROOT / "configs" / "demo.yaml")
    data.pop("evaluate", None)  # a section of a stage that is not built is itself an error
    info = plan(build_config(data), tmp_path / "run")
    actions = {row["stage"]: row["action"] for row in info["stages"]}
    assert "not implemented" in actions["evaluate"]
    assert not (tmp_path / "run").exists()


def test_unwritable_run_dir_is_a_clear_error(tmp_path):
    if os.geteuid() == 0:
        target = "/proc/speed-run"  # not writable even by root
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
        target = str(ro / "run")
    proc = run_cli("run", str(TOPICS_CFG), "--run-dir", target)
    assert proc.returncode == 2 and "cannot write run directory" in proc.stderr


def test_kill_mid_stage_then_rerun_gives_the_uninterrupted_output(tmp_path):
    dump = write_dump(tmp_path / "structure.rdf.u8", 300_000)
    cfg = tmp_path / "odp.yaml"
    cfg.write_text(f"run: {{name: odp, until: topics}}\ntopics: {{source: 'odp:{dump}', count: 500}}\n")
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert run_cli("run", str(cfg), "--run-dir", str(full)).returncode == 0

    proc = subprocess.Popen([sys.executable, "-m", "speed", "run", str(cfg), "--run-dir", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def running():
        try:
            return RunDir(killed).read_manifest()["stages"].get("topics", {}).get("status") == "running"
        except SpeedError:
            return False

    assert wait_for(running), "the stage never started"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    st = status(killed)
    assert st["stages"]["topics"]["state"] == "partial"
    assert not (killed / "topics" / "topics.jsonl").exists()

    proc2 = run_cli("run", str(cfg), "--run-dir", str(killed))
    assert proc2.returncode == 0, proc2.stderr
    assert _read(killed / "topics" / "topics.jsonl") == _read(full / "topics" / "topics.jsonl")
    assert status(killed)["stages"]["topics"]["state"] == "done"


def test_shards_resume_at_the_shard_they_were_in(tmp_path):
    cfg = build_config({"run": {"name": "t", "seed": 5}})
    items = list(range(23))
    processed = []

    def work(chunk, index, crash_at=None):
        if index == crash_at:
            raise RuntimeError("killed")
        processed.append(index)
        ctx_rng = ctx.rng("item", index)
        return [{"x": x, "r": ctx_rng.random()} for x in chunk]

    rd = RunDir(tmp_path / "run")
    ctx = StageContext(name="synthesize", config=cfg, cfg=None, rundir=rd)
    with pytest.raises(RuntimeError):
        list(ctx.map_shards(items, 5, lambda c, i: work(c, i, crash_at=3)))
    assert processed == [0, 1, 2] and ctx.shards_done() == 3
    processed.clear()
    resumed = list(ctx.map_shards(items, 5, work))
    assert processed == [3, 4] and ctx.counts["shards_resumed"] == 3

    rd2 = RunDir(tmp_path / "run2")
    ctx = StageContext(name="synthesize", config=cfg, cfg=None, rundir=rd2)
    assert list(ctx.map_shards(items, 5, work)) == resumed
    assert [r["x"] for r in resumed] == items


def test_from_needs_earlier_stages_done(tmp_path):
    cfg = build_config({"run": {"name": "t"}, "models": {"teacher": "smollm2-135m-instruct"}})
    with pytest.raises(SpeedError, match="stage brainstorm needs stage topics, which is not done"):
        Pipeline(cfg, tmp_path / "r").run(from_stage="brainstorm", until="brainstorm", log=lambda *a: None)


def test_paper_config_dry_run_prints_the_plan(tmp_path):
    proc = run_cli("run", str(ROOT / "configs" / "paper.yaml"), "--run-dir", str(tmp_path / "paper"), "--dry-run")
    assert proc.returncode == 0, proc.stderr
    assert "config " in proc.stdout and "valid" in proc.stdout
    assert "seed             run" in proc.stdout and "25,000" in proc.stdout
    assert "synthesize" in proc.stdout and "1,150,000" in proc.stdout
    assert "estimated cost $" in proc.stdout
    plan = json.loads(run_cli("run", str(ROOT / "configs" / "paper.yaml"), "--run-dir", str(tmp_path / "paper"),
                              "--dry-run", "--json").stdout)
    teacher = {r["stage"]: r["estimate"]["calls"] for r in plan["stages"]
               if r.get("estimate", {}).get("role") == "teacher"}
    assert teacher["seed"] == 25_000 and teacher["judge"] == 10_000 and teacher["revise-signals"] == 10_000
    assert plan["totals"]["usd"] > 0
    assert not (tmp_path / "paper").exists()


def test_run_prints_a_closing_summary(tmp_path):
    proc = run_cli("run", str(TOPICS_CFG), "--run-dir", str(tmp_path / "run"))
    assert proc.returncode == 0
    assert f"== summary of {tmp_path / 'run'} ==" in proc.stdout
    assert "stages done: 1 of 17" in proc.stdout and "teacher: 0 calls" in proc.stdout
