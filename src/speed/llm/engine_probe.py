"""Is llama.cpp's weight repacking safe on this CPU? A probe in a child process, cached per machine.

On some x86 CPUs (seen on Xeons whose ``/proc/cpuinfo`` lists ``amx_tile amx_int8 amx_bf16``)
llama.cpp's repacked CPU weights ("extra buffer types": AMX, AVX-512 repacks) crash the process
with SIGSEGV or SIGILL on the first generation. Repacking is only a speed-up, so where a probe
child dies by a signal the engine runs with it off (``--no-repack``; in-process
``use_extra_bufts = False``) and says so in one line.

The probe loads the very GGUF the engine is about to run, with repacking on, and generates a few
tokens: in a child Python for the in-process engine, as a ``llama-server`` child for the server
engine. Its verdict is cached in ``$SPEED_HOME/engine-probes.json`` keyed by the engine's build,
the CPU (model name and flags) and the GGUF (path, size, mtime), so each machine and build pays
for it once. A probe that fails without a signal (e.g. the model does not load) decides nothing:
the safe setting is used for that start, silently (the engine's own error follows), and nothing
is cached.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable

from ..io import atomic_write_json, stable_hash

PROBE_TOKENS = 8
PROBE_TIMEOUT_S = 300.0
_lock = threading.Lock()
_noticed: set[str] = set()

_INPROCESS_SCRIPT = r"""
import sys
import llama_cpp
path, threads = sys.argv[1], int(sys.argv[2])
llm = llama_cpp.Llama(model_path=path, n_ctx=256, n_threads=threads, verbose=False)
out = llm.create_completion("The capital of France is", max_tokens=%d, temperature=0.0)
print(repr(out["choices"][0]["text"]))
""" % PROBE_TOKENS


def cpu_signature() -> str:
    """The CPU's model name and feature flags (what decides which repack kernels run)."""
    model, flags = "", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            k, _, v = line.partition(":")
            k = k.strip()
            if k == "model name" and not model:
                model = v.strip()
            elif k in ("flags", "Features") and not flags:
                flags = " ".join(sorted(v.split()))
            if model and flags:
                break
    except OSError:  # pragma: no cover - not Linux
        import platform

        model = platform.processor()
    return f"{model}|{flags}"


def _file_id(path: str) -> str:
    st = os.stat(path)
    return f"{Path(path).resolve()}:{st.st_size}:{int(st.st_mtime)}"


def inprocess_build_id() -> str:
    import importlib.metadata as md

    try:
        dist = md.distribution("llama_cpp_python")
    except md.PackageNotFoundError:  # pragma: no cover
        return "llama_cpp_python:missing"
    libs = [f for f in (dist.files or []) if str(f).endswith((".so", ".dylib", ".dll")) and "llama" in str(f)]
    ids = []
    for f in sorted(libs, key=str):
        p = Path(dist.locate_file(f))
        if p.exists():
            ids.append(_file_id(str(p)))
    return f"llama_cpp_python=={dist.version}:" + stable_hash(ids)[:16]


def probe_command(engine: str, model: str, threads: int, binary: str | None) -> list[str]:
    """The child to run with repacking on (tests replace this with one that kills itself)."""
    if engine == "server":
        from .llama_server import ServerSpec

        return ServerSpec(binary=binary or "llama-server", model=model, threads=threads, slots=1,
                          ctx_per_slot=512, repack=True).argv(port=0)
    return [sys.executable, "-c", _INPROCESS_SCRIPT, model, str(threads)]


def _run_server_probe(argv: list[str]) -> subprocess.Popen:
    """Start the server probe on a free port, ask it for a few tokens, and stop it."""
    from .llama_server import _die_with_parent, _free_port, post_json, terminate, wait_healthy

    port = _free_port()
    argv = [str(port) if (i > 0 and argv[i - 1] == "--port") else a for i, a in enumerate(argv)]
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=_die_with_parent)
    try:
        if wait_healthy(proc, url, PROBE_TIMEOUT_S):
            with contextlib.suppress(Exception):  # a crash on the request shows in the exit status
                post_json(url + "/completion", {"prompt": "The capital of France is", "n_predict": PROBE_TOKENS,
                                                "temperature": 0.0}, timeout=PROBE_TIMEOUT_S)
            time.sleep(0.5)
    finally:
        terminate(proc)
    return proc


def _run_child(engine: str, argv: list[str]) -> tuple[str, str]:
    """('safe' | 'crash' | 'unknown', detail)."""
    from .llama_server import describe_exit

    try:
        if engine == "server":
            proc = _run_server_probe(argv)
            rc = proc.returncode
            # the server ends by our SIGTERM when it survived
            if rc is not None and rc < 0 and -rc not in (15, 9):
                return "crash", describe_exit(rc)
            return ("safe", "answered") if rc in (0, -15, -9, 143) else ("unknown", describe_exit(rc))
        out = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             timeout=PROBE_TIMEOUT_S)
        if out.returncode < 0:
            return "crash", describe_exit(out.returncode)
        if out.returncode == 0:
            return "safe", "answered"
        tail = " ".join(out.stderr.decode("utf-8", "replace").split())[-200:]
        return "unknown", f"{describe_exit(out.returncode)}: {tail}"
    except subprocess.TimeoutExpired:
        return "unknown", f"no answer within {PROBE_TIMEOUT_S:.0f} s"
    except OSError as exc:
        return "unknown", f"could not run: {exc.strerror}"


def probes_path() -> Path:
    from ..paths import speed_home

    return speed_home() / "engine-probes.json"


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def repack_safe(engine: str, model: str, threads: int = 2, binary: str | None = None,
                label: str | None = None, notice: Callable[[str], None] | None = None) -> bool:
    """Whether ``engine`` ('server' or 'in-process') may repack ``model``'s weights on this CPU.

    Runs (once per machine, engine build and GGUF) a probe child with repacking on; a child killed
    by a signal means no. Prints one line (stdout) when a crash made it take the safe path."""
    build = build_id_for(engine, binary)
    key = stable_hash([engine, build, cpu_signature(), _file_id(model)])[:24]
    path = probes_path()
    with _lock:
        cached = _read_cache(path).get(key)
        if cached is None:
            status, detail = _run_child(engine, probe_command(engine, model, threads, binary))
            cached = {"status": status, "detail": detail, "engine": engine, "build": build,
                      "model": str(Path(model).resolve()), "cpu": cpu_signature().split("|")[0],
                      "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
            if status != "unknown":
                data = _read_cache(path)
                data[key] = cached
                try:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    atomic_write_json(path, data)
                except OSError:  # pragma: no cover - a read-only home: probe again next time
                    pass
    if cached["status"] == "safe":
        return True
    # a probe that ended without a signal (the GGUF does not load, ...) decides nothing: the engine
    # starts with repacking off and reports its own error, if any, in its one line
    if cached["status"] == "crash" and key not in _noticed:
        _noticed.add(key)
        name = label or Path(model).name
        (notice or _say)(f"speed: llama.cpp weight repacking crashed on this CPU (a probe of {name} "
                            f"{cached['detail']}); the {engine} engine runs it with repacking off (--no-repack; "
                            f"verdict cached in {path})")
    return False


def _say(msg: str) -> None:
    print(msg, flush=True)  # stdout, with the stages' other notes (stderr is for the one-line error)


def build_id_for(engine: str, binary: str | None) -> str:
    if engine == "server":
        return "server:" + _file_id(binary or "llama-server")
    return "in-process:" + inprocess_build_id()
