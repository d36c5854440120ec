"""Errors the user can fix. The CLI turns each into one line on stderr and exit code 2."""

from __future__ import annotations


class SpeedError(Exception):
    """A problem with user input (config, file, model, environment): printed as one line, exit 2."""

    exit_code = 2


class ConfigError(SpeedError):
    """A config key or value is wrong."""


class InputError(SpeedError):
    """An input file (taxonomy, eval folder, JSONL...) is malformed or missing."""


class ModelError(SpeedError):
    """A model reference cannot be resolved or loaded."""


class MissingExtraError(SpeedError):
    """An optional dependency is not installed."""


class StageNotImplemented(SpeedError):
    """A pipeline stage that this version does not provide yet."""


def require(module: str, extra: str, purpose: str):
    """Import an optional heavy dependency lazily, with an actionable message when it is missing."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise MissingExtraError(
            f"{purpose} needs the Python package '{module.split('.')[0]}', which is not installed: "
            f"pip install 'speed[{extra}]' ({exc})"
        ) from None
