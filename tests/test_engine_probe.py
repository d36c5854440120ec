"""The repack probe: a probe child killed by SIGSEGV or SIGILL turns into the safe setting (repacking
off) plus one notice line, for both llama.cpp engines, and the verdict is cached per machine."""

from __future__ import annotations

import signal
import sys

import pytest

from speed.runtime.config import ModelRef
from speed.llm import engine_probe


def _killer(sig: int) -> list[str]:
    return [sys.executable, "-c", f"import os; os.kill(os.getpid(), {int(sig)})"]


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("SPEED_HOME", str(tmp_path / "home"))
    engine_probe._noticed.clear()
    return tmp_path / "home"


@pytest.mark.parametrize("sig", [signal.SIGSEGV, signal.SIGILL])
@pytest.mark.parametrize("engine", ["in-process", "server"])
def test_a_crashing_probe_means_no_repack_and_one_notice(home, monkeypatch, smollm2_gguf, engine, sig):
    calls = []

    def fake(engine_, model, threads, binary):
        calls.append(engine_)
        return _killer(sig)

    monkeypatch.setattr(engine_probe, "probe_command", fake)
    notes: list[str] = []
    binary = sys.executable  # any executable file stands in for the server build in the cache key
    assert engine_probe.repack_safe(engine, smollm2_gguf, binary=binary, notice=notes.append) is False
    assert calls == [engine]
    assert len(notes) == 1 and "\n" not in notes[0] and signal.Signals(sig).name in notes[0]
    assert "repacking off" in notes[0]
    # cached: a second engine start on this machine does not probe again, and says nothing more
    monkeypatch.setattr(engine_probe, "probe_command", lambda *a: pytest.fail("probed twice"))
    assert engine_probe.repack_safe(engine, smollm2_gguf, binary=binary, notice=notes.append) is False
    assert len(notes) == 1
    assert (home / "engine-probes.json").is_file()


def test_a_probe_that_answers_keeps_repacking_on(home, monkeypatch, smollm2_gguf):
    monkeypatch.setattr(engine_probe, "probe_command", lambda *a: [sys.executable, "-c", "print('ok')"])
    notes: list[str] = []
    assert engine_probe.repack_safe("in-process", smollm2_gguf, notice=notes.append) is True
    assert notes == []


def test_a_probe_that_fails_without_a_signal_is_not_cached(home, monkeypatch, smollm2_gguf):
    monkeypatch.setattr(engine_probe, "probe_command", lambda *a: [sys.executable, "-c", "raise SystemExit(3)"])
    notes: list[str] = []
    assert engine_probe.repack_safe("in-process", smollm2_gguf, notice=notes.append) is False  # safe for now
    assert notes == []
    monkeypatch.setattr(engine_probe, "probe_command", lambda *a: [sys.executable, "-c", "print('ok')"])
    assert engine_probe.repack_safe("in-process", smollm2_gguf, notice=notes.append) is True  # asked again


def test_server_engine_never_repacks_where_the_probe_crashed(home, monkeypatch, smollm2_gguf):
    """The spec the managed server is started from carries --no-repack."""
    pytest.importorskip("llama_cpp")
    from speed.llm.backends.llamacpp_server_backend import server_spec
    from speed.llm.llama_server import find_binary

    try:
        find_binary()
    except Exception:
        pytest.skip("llama-server is not built")
    monkeypatch.setattr(engine_probe, "probe_command", lambda *a: _killer(signal.SIGSEGV))
    spec, _ = server_spec(ModelRef(backend="llamacpp", model="smollm2-135m-instruct", n_threads=1))
    assert spec.repack is False and "--no-repack" in spec.argv(8080)
    # an explicit setting is used as given, without a probe
    monkeypatch.setattr(engine_probe, "probe_command", lambda *a: pytest.fail("probed"))
    spec, _ = server_spec(ModelRef(backend="llamacpp", model="smollm2-135m-instruct", options={"repack": True}))
    assert spec.repack is True and "--no-repack" not in spec.argv(8080)


def test_in_process_engine_never_repacks_where_the_probe_crashed(home, monkeypatch):
    """llama-cpp-python is loaded with use_extra_bufts = False (llama.cpp's --no-repack)."""
    llama_cpp = pytest.importorskip("llama_cpp")
    from speed.llm.backends import llamacpp_backend

    seen = []

    class FakeLlama:
        def __init__(self, **kwargs):
            seen.append(llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts)

    monkeypatch.setattr(llama_cpp, "Llama", FakeLlama)
    monkeypatch.setattr(engine_probe, "probe_command", lambda *a: _killer(signal.SIGSEGV))
    ref = ModelRef(backend="llamacpp", engine="in-process", model="smollm2-135m-instruct", n_threads=1)
    be = llamacpp_backend.LlamaCppBackend(ref)
    assert seen == [False] and be.repack is False
    assert llama_cpp.llama_cpp.llama_model_default_params().use_extra_bufts is True  # restored after the load
    monkeypatch.setattr(engine_probe, "probe_command", lambda *a: [sys.executable, "-c", "print('ok')"])
    engine_probe._noticed.clear()
    monkeypatch.setenv("SPEED_HOME", str(home / "other"))
    be = llamacpp_backend.LlamaCppBackend(ref)
    assert seen == [False, True] and be.repack is True
