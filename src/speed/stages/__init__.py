"""The ordered stage list of the SPEED pipeline and the registry of implemented stages.

Each implemented stage is a module ``speed.stages.<name>`` with:
``Config`` (a dataclass: the stage's config section), ``REQUIRES`` (stages whose outputs it reads),
``ROLES`` (model roles it uses; their references are part of the stage's config hash), and
``run(ctx: StageContext) -> None``. Heavy imports stay inside ``run``.
"""

from __future__ import annotations

import dataclasses
import importlib
from types import ModuleType

from ..errors import StageNotImplemented

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
    "export",
    "train-embedder",
    "evaluate",
    "report",
)

# stage name -> module; a stage missing here is not implemented yet.
_IMPLEMENTED: dict[str, str] = {
    "topics": "speed.stages.topics",
    "brainstorm": "speed.stages.brainstorm",
    "seed": "speed.stages.seed",
    "train-junior": "speed.stages.train_junior",
    "root": "speed.stages.root",
    "judge": "speed.stages.judge",
    "revise-signals": "speed.stages.revise_signals",
    "train-senior": "speed.stages.train_senior",
    "train-revisor": "speed.stages.train_revisor",
    "synthesize": "speed.stages.synthesize",
    "revise": "speed.stages.revise",
    "dedup": "speed.stages.dedup",
    "export": "speed.stages.export",
    "train-embedder": "speed.stages.train_embedder",
    "evaluate": "speed.stages.evaluate",
    "report": "speed.stages.report",
}


@dataclasses.dataclass
class NotImplementedConfig:
    """Placeholder section for a stage that is not implemented yet: accepts no keys."""


def is_implemented(name: str) -> bool:
    return name in _IMPLEMENTED


def stage_module(name: str) -> ModuleType:
    if name not in _IMPLEMENTED:
        raise StageNotImplemented(f"stage {name} is not implemented yet")
    return importlib.import_module(_IMPLEMENTED[name])


def stage_config_class(name: str) -> type:
    if name not in _IMPLEMENTED:
        return NotImplementedConfig
    return stage_module(name).Config
