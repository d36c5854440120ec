"""Runs the stages of a config in order over a run directory, skipping what is already done.

``decide`` is the one decider of what to do with a stage (``speed run``, ``--dry-run`` and the
training launcher call it): skip it when the manifest says it is done, its config hash (its own
section, the model references of the roles it uses, the run seed) and its input hash (the keys and
output digests of the stages it reads) are unchanged, and its output files are intact; resume it
when a kill left it running with the same hashes; else run it. A changed stage config therefore
reruns that stage and, through the input hashes, every stage after it that reads it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from pathlib import Path
from typing import Literal

import yaml

from ..errors import SpeedError, StageNotImplemented
from ..io import atomic_write_text, stable_hash
from ..llm.ledger import iter_ledger, summarize
from ..stages import STAGE_ORDER, declaration, is_implemented
from .config import SpeedConfig
from .configschema import to_dict
from .preflight import check_stage
from .rundir import RunDir, StageContext, _now, output_intact
from .stage_attempt import StageAttempt

Overwrite = Literal["never", "only-missing", "always"]
STAGE_FORMAT = 1  # bump to invalidate every stage's hash when record formats change
# model keys added after STAGE_FORMAT 1, with the default that behaves as before they existed: a run
# directory written before a key existed must keep its hashes, so the key is hashed only when set
ADDED_MODEL_KEYS = {"batch": False}


def default_run_dir(config: SpeedConfig) -> Path:
    if config.run.run_dir:
        return Path(config.run.run_dir)
    return Path("runs") / config.run.name


def select_stages(from_stage: str | None, until: str | None) -> list[str]:
    for label, value in (("--from", from_stage), ("--until", until)):
        if value is not None and value not in STAGE_ORDER:
            raise SpeedError(f"{label} {value!r} is not a stage (stages: {', '.join(STAGE_ORDER)})")
    start = STAGE_ORDER.index(from_stage) if from_stage else 0
    end = STAGE_ORDER.index(until) if until else len(STAGE_ORDER) - 1
    if start > end:
        raise SpeedError(f"--from {from_stage} comes after --until {until}")
    return list(STAGE_ORDER[start:end + 1])


def config_hash(config: SpeedConfig, name: str) -> str:
    models = {role: _hashed_model(to_dict(config.models[role]))
              for role in declaration(name).roles if role in config.models}
    return stable_hash({"format": STAGE_FORMAT, "stage": name, "config": to_dict(config.stage(name)),
                        "models": models, "seed": config.run.seed})


def _hashed_model(model: dict) -> dict:
    return {k: v for k, v in model.items() if not (k in ADDED_MODEL_KEYS and v == ADDED_MODEL_KEYS[k])}


def input_hash(manifest: dict, name: str) -> str:
    from .trained import role_inputs

    stage = declaration(name)
    # the training stages whose models this stage uses (not itself: a training stage provides its role)
    trained = {k: v for k, v in role_inputs(manifest, stage.roles).items() if k != name}
    deps: dict = {"trained": trained}
    for dep in stage.requires:
        entry = manifest["stages"].get(dep) or {}
        deps[dep] = {"config_hash": entry.get("config_hash"), "input_hash": entry.get("input_hash"),
                     "outputs": {k: v.get("sha256") for k, v in (entry.get("outputs") or {}).items()}}
    return stable_hash(deps)


def check_requirements(rundir: RunDir, name: str, manifest: dict) -> None:
    for dep in declaration(name).requires:
        entry = manifest["stages"].get(dep)
        # a skipped stage counts as settled: a stage that reads its files says so when they are missing
        if not entry or entry.get("status") not in ("done", "skipped"):
            raise SpeedError(f"stage {name} needs stage {dep}, which is not done in {rundir.path}; "
                             f"run it first (speed run ... --from {dep})")


def decide(config: SpeedConfig, rundir: RunDir, manifest: dict, name: str, overwrite: Overwrite,
           strict: bool = True) -> tuple[str, str, str]:
    """(action, config hash, input hash) for stage ``name``: action "skip", "resume" or "run".
    A done stage that is stale under ``--overwrite never`` is an error (with ``strict``), else "run"."""
    chash, ihash = config_hash(config, name), input_hash(manifest, name)
    entry = manifest["stages"].get(name) or {}
    same = entry.get("config_hash") == chash and entry.get("input_hash") == ihash and overwrite != "always"
    if entry.get("status") == "done":
        intact = output_intact(rundir.stage_dir(name), entry.get("outputs"))
        if same and intact:
            return "skip", chash, ihash
        if overwrite == "never" and strict:
            why = "its config or inputs changed" if not same else "its outputs are missing or changed"
            raise SpeedError(f"stage {name} is done but {why}; rerun with --overwrite only-missing "
                             "or --overwrite always to redo it")
    return ("resume" if entry.get("status") == "running" and same else "run"), chash, ihash


class Pipeline:
    def __init__(self, config: SpeedConfig, run_dir: str | os.PathLike | None = None,
                 overwrite: Overwrite = "only-missing"):
        self.config = config
        self.rundir = RunDir(run_dir or default_run_dir(config))
        self.overwrite = overwrite

    def run(self, from_stage: str | None = None, until: str | None = None, log=print) -> dict:
        stages = select_stages(from_stage, until or self.config.run.until)
        from ..executors import check_available

        check_available(self.config.run)  # e.g. executor: ray without ray installed: one line, nothing written
        # Resolve every config section and model reference of the selected stages before anything is written.
        for name in stages:
            if is_implemented(name) and name not in self.config.run.skip:
                check_stage(self.config, name)
        created = not self.rundir.path.exists()
        self.rundir.lock()
        try:
            frozen = yaml.safe_dump(self.config.to_dict(), sort_keys=False)
            cfg_path = self.rundir.path / "config.yaml"
            if not cfg_path.exists() or cfg_path.read_text(encoding="utf-8") != frozen:
                atomic_write_text(cfg_path, frozen)
            self._write_manifest_header()
            ran = []
            for name in stages:
                if name in self.config.run.skip:
                    self._skip_stage(name, log)
                    ran.append((name, "skipped"))
                    continue
                if not is_implemented(name):
                    raise StageNotImplemented(f"stage {name} is not implemented yet")
                action = self._run_stage(name, log)
                ran.append((name, action))
            return {"run_dir": str(self.rundir.path), "stages": ran}
        except Exception:
            if created:
                self._remove_if_empty()
            raise
        finally:
            self.rundir.unlock()

    def _remove_if_empty(self) -> None:
        """A run directory this run created, that holds no stage: leave no trace of the failed run."""
        try:
            if self.rundir.read_manifest()["stages"]:
                return
        except SpeedError:
            return
        path = self.rundir.path
        if {p.name for p in path.iterdir()} <= {"config.yaml", "manifest.json", ".lock"}:
            for name in ("config.yaml", "manifest.json", ".lock"):
                (path / name).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                path.rmdir()

    def _write_manifest_header(self) -> None:
        body = self.rundir.read_manifest()
        header = {"run": self.config.run.name, "config_sha256": stable_hash(self.config.to_dict()),
                  "stage_order": list(STAGE_ORDER)}
        if "created_at" in body and all(body.get(k) == v for k, v in header.items()):
            return  # nothing changed: a rerun that skips everything writes nothing
        body.setdefault("created_at", _now())
        body.update(header)
        self.rundir.write_manifest(body)

    def _skip_stage(self, name: str, log) -> None:
        entry = self.rundir.stage_entry(name) or {}
        if entry.get("status") != "skipped":
            self.rundir.update_stage(name, status="skipped", outputs={}, counts={}, finished_at=_now())
        log(f"[{name}] skipped (run.skip)")

    def _run_stage(self, name: str, log) -> str:
        manifest = self.rundir.read_manifest()
        check_requirements(self.rundir, name, manifest)
        action, chash, ihash = decide(self.config, self.rundir, manifest, name, self.overwrite)
        entry, stage_dir = manifest["stages"].get(name) or {}, self.rundir.stage_dir(name)
        if action == "skip":
            log(f"[{name}] done, skipped ({_count_line(entry)})")
            return "skip"
        resume = action == "resume"
        ctx = StageContext(name=name, config=self.config, cfg=self.config.stage(name), rundir=self.rundir)
        t0 = time.time()
        with StageAttempt(self.rundir, self.config, name, entry, resume) as attempt:
            stage_dir.mkdir(parents=True, exist_ok=True)
            self.rundir.update_stage(name, status="running", config_hash=chash, input_hash=ihash,
                                     started_at=_now(), outputs={}, counts={})
            log(f"[{name}] {'resuming' if resume else 'running'}")
            attempt.run(lambda: declaration(name).run(ctx))
        seconds = round(time.time() - t0, 3)
        usage = summarize(iter_ledger(attempt.ledger_path), stage=name)
        self.rundir.update_stage(name, status="done", outputs=ctx.outputs, counts=ctx.counts,
                                 artifacts=ctx.artifacts, finished_at=_now(), seconds=seconds, usage=usage)
        log(f"[{name}] done in {seconds:.1f}s ({_count_line({'counts': ctx.counts, 'outputs': ctx.outputs})})")
        return "resume" if resume else "run"


def _count_line(entry: dict) -> str:
    rows = {k: v.get("rows") for k, v in (entry.get("outputs") or {}).items() if v.get("rows") is not None}
    return ", ".join(f"{k}: {v} rows" for k, v in rows.items()) or "no row outputs"


def status(run_dir: str | os.PathLike) -> dict:
    """Every stage of the pipeline with its state: done / partial / pending / not-implemented."""
    rundir = RunDir(run_dir)
    if not rundir.manifest_path.exists():
        raise SpeedError(f"{run_dir} is not a run directory (no manifest.json); start one with speed run CONFIG")
    manifest = rundir.read_manifest()
    out = {"run_dir": str(rundir.path), "run": manifest.get("run"), "stages": {}}
    for name in STAGE_ORDER:
        entry = manifest["stages"].get(name)
        if entry is None:
            state = "pending" if is_implemented(name) else "not-implemented"
            out["stages"][name] = {"state": state}
            continue
        st = entry.get("status")
        state = {"done": "done", "running": "partial", "skipped": "skipped"}.get(st, st or "pending")
        info = {"state": state, "counts": entry.get("counts", {}),
                "rows": {k: v.get("rows") for k, v in (entry.get("outputs") or {}).items()},
                "usage": entry.get("usage", {}), "seconds": entry.get("seconds")}
        if state == "partial":
            ctx = StageContext(name=name, config=None, cfg=None, rundir=rundir)
            info["shards_done"] = ctx.shards_done()
            info["usage"] = summarize(iter_ledger(rundir.path / "ledger.jsonl"), stage=name)
        out["stages"][name] = info
    return out


def install_signal_handlers() -> None:
    """Turn SIGTERM into a clean exit (the running stage stays 'partial' and resumes next time)."""

    def _term(signum, frame):  # pragma: no cover - exercised by the kill tests
        sys.stderr.write("speed: terminated; rerun the same command to resume\n")
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, _term)


def plan(config: SpeedConfig, run_dir, from_stage: str | None = None, until: str | None = None,
         overwrite: Overwrite = "only-missing") -> dict:
    """What ``speed run`` would do, without writing anything: every selected stage and its action."""
    stages = select_stages(from_stage, until or config.run.until)
    rundir = RunDir(run_dir)
    manifest = rundir.read_manifest() if rundir.manifest_path.exists() else {"stages": {}}
    from .estimate import estimate

    rows, problems = [], []
    from ..executors import check_available

    try:
        check_available(config.run)
    except SpeedError as exc:
        problems.append(f"run.executor: {exc}")
    for name in stages:
        if name in config.run.skip:
            rows.append({"stage": name, "action": "skipped (run.skip)"})
            continue
        if not is_implemented(name):
            rows.append({"stage": name, "action": "not implemented yet (the run stops here)"})
            continue
        check_stage(config, name, problems)  # e.g. an input or key that exists only where the run will happen
        action = decide(config, rundir, manifest, name, overwrite, strict=False)[0]
        action = "skip (done)" if action == "skip" else action
        row = {"stage": name, "action": action}
        est = estimate(config, name)
        if est is not None:
            row["estimate"] = est
        rows.append(row)
    teacher = [r["estimate"] for r in rows if r.get("estimate", {}).get("role") == "teacher"]
    generators = [r["estimate"] for r in rows if r.get("estimate") and r["estimate"]["role"] != "teacher"]
    total = {
        "teacher_calls": sum(e["calls"] for e in teacher),
        "teacher_tokens": sum(e["prompt_tokens"] + e["completion_tokens"] for e in teacher),
        "generator_calls": sum(e["calls"] for e in generators),
        "generator_tokens": sum(e["prompt_tokens"] + e["completion_tokens"] for e in generators),
        "usd": round(sum(e["usd"] for e in teacher + generators), 2),
        "usd_live": round(sum(e["usd_live"] for e in teacher + generators), 2),
        "usd_batch": round(sum(e["usd_batch"] for e in teacher + generators), 2),
    }
    return {"run_dir": str(rundir.path), "stages": rows, "totals": total, "problems": problems}
