"""Shared test set-up: offline, quiet progress bars, and one model cache for the whole session.

Models prepared by `speed models prepare` live under $SPEED_HOME (default ~/.cache/speed), shared
by every test so that a model is converted once per machine, not once per test.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("SPEED_PROGRESS", "0")

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
FIXTURES = Path(__file__).resolve().parent / "fixtures"


def run_cli(*args: str, cwd: str | os.PathLike | None = None, env: dict | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``python -m speed ARGS`` in a subprocess and return the completed process (text mode)."""
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    return subprocess.run([sys.executable, "-m", "speed", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def wait_for(pred, timeout: float = 60.0) -> bool:
    """Poll ``pred()`` until it is true (True) or ``timeout`` seconds pass (False)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if pred():
            return True
        time.sleep(0.02)
    return False


@pytest.fixture(scope="session")
def smollm2_hf() -> str:
    from speed.models import resolve_model

    return resolve_model("smollm2-135m-instruct", want="hf")


@pytest.fixture(scope="session")
def smollm2_gguf() -> str:
    from speed.models import resolve_model

    return resolve_model("smollm2-135m-instruct", want="gguf")


@pytest.fixture
def shared_eval() -> Path:
    path = SHARED / "eval"
    if not path.is_dir():
        pytest.skip(f"{path} is absent: the real evaluation sets live in ../shared/eval/")
    return path


def serve_llama(ref, log_dir):
    """A generator (for a module fixture) yielding the URL of a managed llama-server for ``ref``,
    started by speed's own manager (with the repack probe's safe setting); skips without the binary."""
    from speed.errors import SpeedError
    from speed.llm import llama_server as ls
    from speed.llm.backends.llamacpp_server_backend import server_spec

    try:
        spec, _ = server_spec(ref)
    except SpeedError as exc:
        pytest.skip(str(exc))
    ls.set_log_dir(log_dir)
    srv = ls.acquire(spec)
    try:
        yield srv.url
    finally:
        ls.release(srv)
        ls.set_log_dir(None)
