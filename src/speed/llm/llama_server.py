"""A managed llama.cpp server: ``llama-server`` as a child process on a free loopback port.

``acquire(spec)`` starts (or shares) one server per base model and settings; its adapters are
loaded at start with ``--lora-init-without-apply`` and picked per request (the request's ``lora``
field), so requests for different adapters of one base share a process (``hold`` loads a set of
them up front). ``release`` stops a server when its last user is done (the stage's clients close
in ``finally``); ``stop_all`` runs at interpreter exit. The child gets ``PR_SET_PDEATHSIG = SIGKILL``: a parent killed by
SIGKILL takes its servers with it, so no ``llama-server`` of a run outlives it.

Each server logs to ``<log dir>/llama-server-<model>-<port>.log`` (the run directory's ``logs/``
under ``speed run``, see ``set_log_dir``). A server that cannot start (a GGUF it cannot load, an
adapter made for another base model) is a one-line ModelError quoting the log's reason; one that
dies later is described by ``LlamaServer.death()`` (exit code or signal name).
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Sequence

from ..errors import ModelError

BUILD_HINT = ("build it with `make setup` (runs scripts/build_llama_server.sh), point SPEED_LLAMA_SERVER or "
              "options.server_binary at one, or set engine: in-process")
START_TIMEOUT_S = 600.0

_log_dir: Path | None = None
_lock = threading.RLock()
_servers: dict["ServerSpec", "LlamaServer"] = {}  # base spec -> its current server
_refs: dict[int, int] = {}  # id(server) -> users
_live: dict[int, "LlamaServer"] = {}  # every server started and not yet stopped (stop_all's list)


def set_log_dir(path: str | os.PathLike | None) -> None:
    """Where servers started from now on write their logs (``speed run``: ``RUN_DIR/logs``)."""
    global _log_dir
    _log_dir = Path(path) if path is not None else None


def log_dir() -> Path:
    if _log_dir is not None:
        return _log_dir
    from ..paths import speed_home

    return speed_home() / "logs"


def find_binary(explicit: str | None = None, name: str = "llama-server") -> str:
    """The llama.cpp binary to run: ``explicit``, ``$SPEED_LLAMA_SERVER`` (for llama-server), the one
    ``make setup`` built next to this Python, or one on PATH; else a ModelError saying how to build it."""
    tried = []
    candidates = [explicit] if explicit else []
    if name == "llama-server" and os.environ.get("SPEED_LLAMA_SERVER"):
        candidates.append(os.environ["SPEED_LLAMA_SERVER"])
    candidates.append(str(Path(sys.executable).parent / name))
    for c in candidates:
        p = Path(c).expanduser()
        tried.append(str(p))
        if p.is_file() and os.access(p, os.X_OK):
            return str(p)
        if explicit and c == explicit:
            raise ModelError(f"{name} binary {p} does not exist or is not executable; {BUILD_HINT}")
    found = shutil.which(name)
    if found:
        return found
    raise ModelError(f"{name} is not built (looked for {', '.join(tried)} and on PATH); {BUILD_HINT}")


@dataclasses.dataclass(frozen=True)
class ServerSpec:
    """Everything that makes two servers interchangeable (the registry's key)."""

    binary: str
    model: str  # the GGUF file
    adapters: tuple[str, ...] = ()
    threads: int = 2
    slots: int = 4
    ctx_per_slot: int = 4096
    repack: bool = True
    n_batch: int = 512
    n_gpu_layers: int = 0
    extra_args: tuple[str, ...] = ()
    label: str = ""  # the model's name in notices and the log's name

    def argv(self, port: int) -> list[str]:
        a = [self.binary, "--model", self.model, "--host", "127.0.0.1", "--port", str(port),
             "--threads", str(self.threads), "--threads-batch", str(self.threads),
             "--parallel", str(self.slots), "--ctx-size", str(self.slots * self.ctx_per_slot),
             "--no-kv-unified", "--cont-batching", "--batch-size", str(self.n_batch),
             "--n-gpu-layers", str(self.n_gpu_layers), "--no-webui", "--jinja", "--alias", "speed-model"]
        if not self.repack:
            a.append("--no-repack")
        for ad in self.adapters:
            a += ["--lora", ad]
        if self.adapters:
            # every adapter at scale 0 until a request names it; no cross-slot prompt cache, which
            # restores KV by tokens alone and so could hand one adapter's KV to another's request
            # (llama.cpp issue 26207); a slot's own cache is cleared when its adapter changes
            a += ["--lora-init-without-apply", "--cache-ram", "0"]
        return a + list(self.extra_args)

    def base(self) -> "ServerSpec":
        """The spec without adapters: what servers that can share their work have in common."""
        return dataclasses.replace(self, adapters=())

    def lora_field(self, adapter: str | None) -> list[dict]:
        """The request's ``lora`` field: its adapter at scale 1, every other loaded one at 0 (a
        list that names them all, so that llama.cpp compares it with the slot's and clears the
        slot's prompt cache when it changes; an empty list would keep another adapter's KV)."""
        return [{"id": i, "scale": 1.0 if a == adapter else 0.0} for i, a in enumerate(self.adapters)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _die_with_parent() -> None:  # runs in the child between fork and exec
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:  # pragma: no cover - not Linux: atexit and the stage's finally still stop it
        pass


def describe_exit(returncode: int | None) -> str:
    if returncode is None:
        return "is still running"
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"was killed by {name} (signal {-returncode})"
    return f"exited with code {returncode}"


_REASON = re.compile(r"(error|failed|fail|cannot|invalid|unable|mismatch|does not|not found|exceed)", re.I)


def log_reason(text: str) -> str:
    """The most telling line of a server log (the last line that reads like an error)."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    hits = [ln for ln in lines if _REASON.search(ln)]
    pick = hits[-1] if hits else (lines[-1] if lines else "no output")
    return " ".join(pick.split())[:240]


class LlamaServer:
    """One ``llama-server`` child process."""

    def __init__(self, spec: ServerSpec):
        self.spec = spec
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        d = log_dir()
        d.mkdir(parents=True, exist_ok=True)
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", spec.label or Path(spec.model).stem)[:60]
        self.log_path = d / f"llama-server-{safe}-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout_s: float = START_TIMEOUT_S) -> "LlamaServer":
        fh = open(self.log_path, "ab")
        try:
            self.proc = subprocess.Popen(self.spec.argv(self.port), stdin=subprocess.DEVNULL, stdout=fh,
                                         stderr=subprocess.STDOUT, preexec_fn=_die_with_parent, close_fds=True)
        except OSError as exc:
            raise ModelError(f"cannot start {self.spec.binary}: {exc.strerror}; {BUILD_HINT}") from None
        finally:
            fh.close()
        if wait_healthy(self.proc, self.url, timeout_s):
            return self
        if self.proc.poll() is not None:
            reason = log_reason(self.log_text())
            raise ModelError(f"llama-server could not load {self.spec.label or self.spec.model}: it "
                             f"{describe_exit(self.proc.returncode)} at start: {reason} (log: {self.log_path})")
        self.stop()
        raise ModelError(f"llama-server for {self.spec.label or self.spec.model} was not ready after "
                         f"{timeout_s:.0f} s (log: {self.log_path})")

    def log_text(self, limit: int = 200_000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-limit:].decode("utf-8", "replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def death(self) -> str | None:
        """None while running; else how it ended, e.g. 'was killed by SIGSEGV (signal 11)'."""
        if self.proc is None or self.proc.poll() is None:
            return None
        return describe_exit(self.proc.returncode)

    def stop(self, timeout_s: float = 10.0) -> None:
        terminate(self.proc, timeout_s)


def wait_healthy(proc: subprocess.Popen, url: str, timeout_s: float) -> bool:
    """Poll ``url``/health until it answers 200 (True), the process ends or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while proc.poll() is None and time.monotonic() <= deadline:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return True
        except (OSError, urllib.error.URLError, ValueError):
            pass
        time.sleep(0.2)
    return False


def terminate(proc: subprocess.Popen | None, timeout_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``; nothing for a process that has ended."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout_s)


def acquire(spec: ServerSpec) -> LlamaServer:
    """A running server that has ``spec``'s base model, settings and adapters, shared by its users
    until the last ``release``. One server per base: a spec whose adapter the current server lacks
    gets a new server with every adapter of the old one plus its own (the old one stops when its
    users are done); ``hold`` loads a set of adapters up front so that nothing restarts."""
    with _lock:
        key = spec.base()
        srv = _servers.get(key)
        if srv is not None and (not srv.alive() or not set(spec.adapters) <= set(srv.spec.adapters)):
            adapters = srv.spec.adapters if srv.alive() else ()
            if _refs.get(id(srv), 0) <= 0:
                _live.pop(id(srv), None)
                srv.stop()
            srv = None
            spec = dataclasses.replace(spec, adapters=tuple(dict.fromkeys(adapters + spec.adapters)))
        if srv is None:
            srv = LlamaServer(spec).start()
            _servers[key] = srv
            _live[id(srv)] = srv
        _refs[id(srv)] = _refs.get(id(srv), 0) + 1
        return srv


def release(srv: LlamaServer) -> None:
    """One user is done with ``srv``; the last one stops it."""
    with _lock:
        left = _refs.get(id(srv), 0) - 1
        if left > 0:
            _refs[id(srv)] = left
            return
        _refs.pop(id(srv), None)
        key = srv.spec.base()
        if _servers.get(key) is srv:
            _servers.pop(key, None)
        _live.pop(id(srv), None)
        srv.stop()


@contextlib.contextmanager
def hold(specs: Sequence[ServerSpec]):
    """Keep one server per base model running, with every adapter of ``specs`` loaded, until the
    block ends: backends made inside share it and pick their adapter per request (e.g. a
    comparison of base, junior, senior and revisor adapters of one base)."""
    merged: dict[ServerSpec, ServerSpec] = {}
    for sp in specs:
        key = sp.base()
        have = merged.get(key, key).adapters
        merged[key] = dataclasses.replace(sp, adapters=tuple(dict.fromkeys(have + sp.adapters)))
    held = [acquire(sp) for sp in merged.values()]
    try:
        yield held
    finally:
        for srv in held:
            release(srv)


def stop_all() -> None:
    with _lock:
        for srv in list(_live.values()):
            srv.stop()
        _live.clear()
        _servers.clear()
        _refs.clear()


def running() -> list[LlamaServer]:
    with _lock:
        return [s for s in _live.values() if s.alive()]


atexit.register(stop_all)


def post_json(url: str, body: dict, timeout: float = 60.0) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read().decode())

