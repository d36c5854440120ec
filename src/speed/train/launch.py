"""Run ONE training stage of a run directory, in this process or under ``accelerate launch``.

    python -m speed.train.launch --run-dir RUN --stage train-junior
    accelerate launch --config_file configs/accelerate/multi_gpu.yaml -m speed.train.launch \\
        --run-dir RUN --stage train-embedder
    accelerate launch --config_file configs/accelerate/zero3.yaml -m speed.train.launch \\
        --run-dir RUN --stage train-embedder --set train-embedder.profile=paper
    accelerate launch --config_file configs/accelerate/cpu_2proc.yaml -m speed.train.launch \\
        --run-dir RUN --stage train-junior

The config is the run directory's frozen ``config.yaml`` (what the last ``speed run`` used), or
``--config FILE``; ``--set SECTION.KEY=VALUE`` overrides either. The stage's manifest entry is
decided by ``speed.runtime.pipeline.decide``, as in ``speed run``: a done stage with the same config and
inputs is skipped, a stage left ``running`` by a kill resumes (from its last checkpoint), anything
else starts afresh.

Every process runs the stage's ``run(ctx)`` (the same function ``speed run`` calls in-process);
the trainers shard the batches and average the gradients. Only rank 0 locks the run directory,
clears or keeps the stage folder, writes the outputs and the manifest. The other stages of the
run keep going through ``speed run`` (which skips the stage once it is done here).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import SpeedError


def training_stages() -> tuple[str, ...]:
    """The stages that train a model (their declaration's ``trains``), in pipeline order."""
    from ..stages import declarations

    return tuple(s.name for s in declarations() if s.trains)


def _config(run_dir: Path, config_path: str | None, overrides: list[str]):
    from ..runtime.config import load_config

    path = Path(config_path) if config_path else run_dir / "config.yaml"
    if not path.is_file():
        raise SpeedError(f"no config: {path} does not exist (pass --config FILE, or start the run with speed run)")
    return load_config(path, overrides)


def _broadcast(obj):
    """rank 0's ``obj`` on every process (identity when there is one process)."""
    from .common import world_size

    if world_size() == 1:
        return obj
    from accelerate.utils import broadcast_object_list

    box = [obj]
    broadcast_object_list(box, from_process=0)
    return box[0]


def run_stage(run_dir: str | Path, stage: str, config_path: str | None = None, overrides: list[str] | None = None,
              overwrite: str = "only-missing", log=print) -> str:
    """Run ``stage`` of ``run_dir``; 'run', 'resume' or 'skip' (the same on every process)."""
    from ..runtime.rundir import RunDir, StageContext, _now
    from ..stages import declaration
    from .common import barrier, is_main_process, world_size

    if stage not in training_stages():
        raise SpeedError(f"--stage {stage!r} is not a training stage ({', '.join(training_stages())})")
    run_dir = Path(run_dir)
    config = _config(run_dir, config_path, overrides or [])
    rundir = RunDir(run_dir)
    if world_size() > 1:
        import torch
        from accelerate import PartialState

        # joins the process group: nccl on GPUs, gloo on CPU (cpu=True, as the trainers' use_cpu does)
        PartialState(cpu=not torch.cuda.is_available())
    action, error = None, None
    if is_main_process():
        try:
            rundir.lock()
            action = _prepare(rundir, config, stage, overwrite)
        except SpeedError as exc:
            error = str(exc)
    action, error = _broadcast((action, error))
    if error:
        raise SpeedError(error)
    if action == "skip":
        log(f"[{stage}] done, skipped")
        return action
    log(f"[{stage}] {'resuming' if action == 'resume' else 'running'} on {world_size()} process(es)")
    ctx = StageContext(name=stage, config=config, cfg=config.stage(stage), rundir=rundir)
    t0 = time.time()
    try:
        declaration(stage).run(ctx)
        barrier()
        if is_main_process():
            rundir.update_stage(stage, status="done", outputs=ctx.outputs, counts=ctx.counts,
                                artifacts=ctx.artifacts, finished_at=_now(), seconds=round(time.time() - t0, 3),
                                usage={}, processes=world_size())
            log(f"[{stage}] done in {time.time() - t0:.1f}s")
    finally:
        if is_main_process():
            rundir.unlock()
    return action


def _prepare(rundir, config, stage: str, overwrite: str) -> str:
    """Rank 0: what to do with the stage (``speed.runtime.pipeline.decide``), with the manifest updated for it."""
    import yaml

    from ..io import atomic_write_text
    from ..runtime.pipeline import check_requirements, decide
    from ..runtime.rundir import _now, clear_stage_dir

    manifest = rundir.read_manifest()
    check_requirements(rundir, stage, manifest)
    if not (rundir.path / "config.yaml").exists():
        atomic_write_text(rundir.path / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))
    action, chash, ihash = decide(config, rundir, manifest, stage, overwrite)
    if action == "skip":
        return action
    if action == "run":
        clear_stage_dir(rundir.stage_dir(stage))
    rundir.stage_dir(stage).mkdir(parents=True, exist_ok=True)
    rundir.update_stage(stage, status="running", config_hash=chash, input_hash=ihash, started_at=_now(),
                        outputs={}, counts={})
    return action


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m speed.train.launch", description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir_pos", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("stage_pos", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("--run-dir", help="the run directory")
    parser.add_argument("--stage", choices=training_stages(), help="the training stage to run")
    parser.add_argument("--config", help="config file (default: RUN_DIR/config.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a key")
    parser.add_argument("--overwrite", choices=("never", "only-missing", "always"), default="only-missing")
    args = parser.parse_args(argv)
    run_dir = args.run_dir or args.run_dir_pos
    stage = args.stage or args.stage_pos
    if not run_dir or not stage:
        parser.error("give the run directory and the stage (--run-dir RUN --stage STAGE, or RUN STAGE)")
    from .common import is_main_process

    try:
        run_stage(run_dir, stage, args.config, args.set, args.overwrite,
                  log=(lambda m: print(m, flush=True)) if is_main_process() else (lambda m: None))
    except SpeedError as exc:
        if is_main_process():
            print(f"speed: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
