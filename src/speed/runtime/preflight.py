"""What ``speed run`` (and ``--dry-run``) checks of a stage before anything is written: its
declaration's ``preflight`` hook (inputs that must exist) and the model references of its roles."""

from __future__ import annotations

from pathlib import Path

from ..errors import SpeedError
from ..stages import declaration
from .config import SpeedConfig


def check_stage(config: SpeedConfig, name: str, problems: list[str] | None = None) -> None:
    """Stage ``name``'s config section, inputs and models, resolved without loading anything.

    A problem raises its one-line error, or, with ``problems`` given (a dry run, where an input or
    a key may exist only where the run will happen), is appended to it as ``"NAME: error"``."""
    cfg = config.stage(name)  # a ConfigError for a bad section is never collected
    check = declaration(name).preflight
    for step in ((lambda: check(config, cfg)) if check is not None else None, lambda: check_models(config, name)):
        if step is None:
            continue
        try:
            step()
        except SpeedError as exc:
            if problems is None:
                raise
            problems.append(f"{name}: {exc}")


def check_models(config: SpeedConfig, name: str) -> None:
    """The model references stage ``name`` uses: present, and resolvable without loading anything."""
    from ..models.resolve import check_model_exists

    stage = declaration(name)
    for role in stage.roles:
        if role in stage.optional_roles and role not in config.models:
            continue
        ref = config.model(role)  # a ConfigError naming models.<role> when it is missing
        if ref.backend == "openai":
            if ref.api_key_env and ref.api_key() is None:
                raise SpeedError(f"models.{role}: the environment variable {ref.api_key_env} (named by "
                                 "api_key_env) is not set; export it, or drop api_key_env for a server without keys")
        else:
            try:
                check_model_exists(ref.model)
            except SpeedError as exc:
                raise SpeedError(f"models.{role}: {exc}") from None
        if ref.backend == "llamacpp" and ref.engine == "server":
            from ..llm.llama_server import find_binary

            try:
                find_binary((ref.options or {}).get("server_binary"))
            except SpeedError as exc:
                raise SpeedError(f"models.{role}: {exc}") from None
        if ref.adapter and not Path(ref.adapter).expanduser().exists():
            raise SpeedError(f"models.{role}.adapter: {ref.adapter} does not exist")
