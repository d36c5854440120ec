"""The stages of the SPEED pipeline: their order, and the one declaration each stage module makes.

Stage ``NAME`` lives in the module ``speed.stages.NAME`` (dashes become underscores), which
declares it once as ``STAGE = Stage(...)``: what it reads (``needs``: artifacts of earlier stages)
and writes (``provides``: artifact -> file in its folder; ``trains``: the model role its model
replaces), the model roles it calls, its config dataclass, ``run(ctx)`` and optional hooks
(``preflight``, ``calls`` / ``tokens_per_call`` for ``--dry-run``, ``summary`` for the closing
summary). The pipeline, ``--dry-run``, preflight, the trained-model hand-over, the training
launcher and the CLI read these declarations; ``STAGE_ORDER`` is the only other list of names.
Heavy imports stay inside ``run``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from ..errors import SpeedError, StageNotImplemented

STAGE_ORDER: tuple[str, ...] = (
    "topics",
    "brainstorm",
    "seed",
    "train-junior",
    "root",
    "judge",
    "revise-signals",
    "train-senior",
    "train-revisor",
    "synthesize",
    "revise",
    "dedup",
    "score",
    "export",
    "train-embedder",
    "evaluate",
    "report",
)


@dataclass(frozen=True)
class Stage:
    name: str
    config: type  # the stage's config section: a dataclass with validate(where)
    run: Callable[[Any], None]  # run(ctx: speed.runtime.rundir.StageContext)
    needs: tuple[str, ...] = ()  # artifacts (or trained roles) of earlier stages it reads
    provides: Mapping[str, str] = field(default_factory=dict)  # artifact -> file in the stage's folder
    trains: str | None = None  # the model role whose model this stage trains (run by speed.train.launch too)
    roles: tuple[str, ...] = ()  # model roles it uses; their references are part of its config hash
    optional_roles: tuple[str, ...] = ()  # of those, roles that may be missing from models:
    preflight: Callable[[Any, Any], None] | None = None  # (config, cfg): inputs that must exist, checked first
    calls: Callable[[Any], int] | None = None  # (config) -> model calls it makes, for --dry-run
    tokens_per_call: tuple[int, int] = (0, 0)  # (prompt, completion) tokens per call, for --dry-run
    summary: Callable[[dict], list[str]] | None = None  # (its `speed status` entry) -> closing-summary lines

    @property
    def requires(self) -> tuple[str, ...]:
        """The stages whose outputs it reads, in the order of ``needs`` (a stage not implemented yet provides nothing)."""
        return tuple(dict.fromkeys(s.name for s in declarations() for a in self.needs
                                   if a in s.provides or s.trains == a))


@dataclass
class NotImplementedConfig:
    """Placeholder section for a stage that is not implemented yet: accepts no keys."""


_DECLARED: dict[str, Stage | None] = {}  # name -> declaration (None: no module yet), filled on first use


def module_name(name: str) -> str:
    return "speed.stages." + name.replace("-", "_")


def declaration(name: str) -> Stage:
    if name not in _DECLARED:
        try:
            mod = importlib.import_module(module_name(name))
        except ModuleNotFoundError as exc:
            if exc.name != module_name(name):
                raise
            mod = None
        _DECLARED[name] = getattr(mod, "STAGE", None)
    stage = _DECLARED[name]
    if stage is None:
        raise StageNotImplemented(f"stage {name} is not implemented yet")
    return stage


def is_implemented(name: str) -> bool:
    try:
        declaration(name)
    except StageNotImplemented:
        return False
    return True


def declarations() -> list[Stage]:
    """Every implemented stage, in pipeline order."""
    return [declaration(n) for n in STAGE_ORDER if is_implemented(n)]


def provider(artifact: str) -> Stage:
    """The stage that provides ``artifact`` (a file it writes, or the model of a role it trains)."""
    for stage in declarations():
        if artifact in stage.provides or stage.trains == artifact:
            return stage
    raise SpeedError(f"no stage provides {artifact!r}")


def artifact_path(run_dir, artifact: str):
    """Where ``artifact`` lives in a run directory: its providing stage's folder / its file."""
    from pathlib import Path

    stage = provider(artifact)
    return Path(run_dir) / stage.name / stage.provides[artifact]


def trainer_of(role: str) -> Stage | None:
    """The stage that trains ``role``'s model (None for a role no stage trains, e.g. the teacher)."""
    return next((s for s in declarations() if s.trains == role), None)


def stage_config_class(name: str) -> type:
    return declaration(name).config if is_implemented(name) else NotImplementedConfig
