"""Where speed keeps its caches: $SPEED_HOME (default ~/.cache/speed)."""

from __future__ import annotations

import os
from pathlib import Path


def speed_home() -> Path:
    return Path(os.environ.get("SPEED_HOME") or Path.home() / ".cache" / "speed").expanduser()


def models_home() -> Path:
    return speed_home() / "models"
