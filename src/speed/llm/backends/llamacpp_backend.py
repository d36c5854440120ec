"""In-process llama.cpp (llama-cpp-python) on a GGUF file: the offline default.

``engine: in-process`` selects it (the default engine is a managed llama-server, see
``llamacpp_server_backend``). Config: ``model`` (offline name, .gguf file or folder with one .gguf),
``adapter`` (a LoRA adapter in GGUF form), ``n_threads``, ``n_ctx``, ``json_mode``; ``options.repack``
(``auto``, the default: a probe decides whether llama.cpp's weight repacking is safe on this CPU,
see ``speed.llm.engine_probe``; or true / false); ``options.sampler`` may set llama.cpp's
own sampler knobs (top_k, min_p, repeat_penalty, ...; llama.cpp's defaults otherwise) and
``options.n_batch`` / ``options.n_gpu_layers`` pass through; ``options.reuse_prefix: true`` keeps
llama.cpp's KV-cache prefix reuse between calls (faster, but a sample then depends on the previous
call, so reruns are no longer bit-identical). The model's own chat template is used
(``create_chat_completion``). Samples run one after another under a lock (one context), and the
client caches each as soon as it is done (``batch_size`` does not apply).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from typing import Any, Sequence

from ...errors import ModelError
from .base import BackendRequest, Completion, error_text

SAMPLER_KEYS = ("top_k", "min_p", "typical_p", "repeat_penalty", "presence_penalty", "frequency_penalty",
                "tfs_z", "mirostat_mode", "mirostat_tau", "mirostat_eta")


_params_lock = threading.Lock()


@contextlib.contextmanager
def _repacking(llama_cpp, on: bool):
    """Load with llama.cpp's weight repacking (``use_extra_bufts``) on or off: llama-cpp-python has
    no argument for it, so the default model params are patched for the duration of the load."""
    if on:
        yield
        return
    low = llama_cpp.llama_cpp
    with _params_lock:
        original = low.llama_model_default_params

        def no_repack():
            params = original()
            params.use_extra_bufts = False
            return params

        low.llama_model_default_params = no_repack
        try:
            yield
        finally:
            low.llama_model_default_params = original


def open_llama(kwargs: dict[str, Any], repack: Any = "auto", label: str | None = None):
    """``(llama_cpp.Llama(**kwargs), repacking used)``: every in-process load of a GGUF goes through
    here, so that repacking is on only where the probe found it safe (``repack: auto``)."""
    from ...errors import require

    llama_cpp = require("llama_cpp", "llamacpp", "the llamacpp backend")
    if repack == "auto":
        from ..engine_probe import repack_safe

        repack = repack_safe("in-process", kwargs["model_path"], threads=int(kwargs.get("n_threads") or 2),
                             label=label)
    with _repacking(llama_cpp, bool(repack)):
        return llama_cpp.Llama(**kwargs), bool(repack)


class LlamaCppBackend:
    name = "llamacpp"

    def __init__(self, ref, llama: Any = None):
        from ...errors import require

        self.ref = ref
        # one sample at a time: each is cached and counted as soon as it exists (a kill loses at most
        # the sample in flight) and the progress bar moves per sample; batching buys nothing here
        self.preferred_batch = 1
        self._lock = threading.Lock()
        self._reuse_prefix = bool((ref.options or {}).get("reuse_prefix", False))
        if llama is not None:
            self.llm = llama
            return
        require("llama_cpp", "llamacpp", "the llamacpp backend")
        from ...models import resolve_model

        path = resolve_model(ref.model, want="gguf")
        opts = ref.options or {}
        kwargs: dict[str, Any] = dict(
            model_path=path, n_ctx=ref.n_ctx, n_threads=ref.n_threads or max(1, (os.cpu_count() or 2)),
            verbose=False, n_batch=int(opts.get("n_batch", 512)), n_gpu_layers=int(opts.get("n_gpu_layers", 0)),
        )
        if ref.adapter:
            if not str(ref.adapter).endswith(".gguf") or not os.path.isfile(ref.adapter):
                raise ModelError(f"the llamacpp backend needs a LoRA adapter as a .gguf file; got {ref.adapter!r} "
                                 "(convert a PEFT folder with llama.cpp's convert_lora_to_gguf.py)")
            kwargs["lora_path"] = str(ref.adapter)
        if opts.get("chat_format"):
            kwargs["chat_format"] = opts["chat_format"]
        try:
            self.llm, self.repack = open_llama(kwargs, repack=opts.get("repack", "auto"), label=ref.model)
        except Exception as exc:  # llama.cpp says little more than "failed to load"
            raise ModelError(f"llama.cpp could not load {path}: {error_text(exc)}") from None
        self.path = path

    def describe(self) -> str:
        return f"in-process llama.cpp, 1 sample at a time, repack {'on' if self.repack else 'off'}"

    def _one(self, req: BackendRequest, seed: int | None) -> Completion:
        s = req.sampling
        kwargs: dict[str, Any] = dict(messages=req.messages, temperature=s.temperature, top_p=s.top_p,
                                      max_tokens=s.max_tokens, stop=list(s.stop), seed=seed)
        kwargs.update({k: v for k, v in ((self.ref.options or {}).get("sampler") or {}).items() if k in SAMPLER_KEYS})
        if req.json_schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": req.json_schema}
        t0 = time.monotonic()
        try:
            with self._lock:
                if not self._reuse_prefix:
                    # re-evaluate the whole prompt: a sample then depends on its seed alone, not on
                    # what the previous call left in the KV cache (prefix reuse changes the numerics)
                    self.llm.reset()
                out = self.llm.create_chat_completion(**kwargs)
            choice = out["choices"][0]
            usage = out.get("usage") or {}
            return Completion(text=choice["message"].get("content") or "", finish_reason=choice.get("finish_reason"),
                              prompt_tokens=int(usage.get("prompt_tokens", 0)),
                              completion_tokens=int(usage.get("completion_tokens", 0)),
                              latency_s=time.monotonic() - t0, endpoint="llamacpp")
        except Exception as exc:  # e.g. the prompt does not fit n_ctx
            return Completion(error=error_text(exc), latency_s=time.monotonic() - t0, endpoint="llamacpp")

    def generate(self, requests: Sequence[BackendRequest]) -> list[list[Completion]]:
        out = []
        for req in requests:
            comps = []
            for i, seed in zip(req.indices, req.seeds()):
                c = self._one(req, seed)
                c.index = i
                comps.append(c)
            out.append(comps)
        return out

    def close(self) -> None:
        llm = getattr(self, "llm", None)
        if llm is not None and hasattr(llm, "close"):
            try:
                llm.close()
            except Exception:  # pragma: no cover
                pass
        self.llm = None
