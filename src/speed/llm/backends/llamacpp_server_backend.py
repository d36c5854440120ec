"""llama.cpp as a managed ``llama-server`` child: the offline default for ``backend: llamacpp``.

Config (``engine: server``, the default): ``model`` (offline name, .gguf file or folder with one
.gguf), ``adapter`` (a LoRA adapter in GGUF form), ``n_threads``, ``slots`` (parallel sequences,
continuous batching), ``ctx_per_slot`` (default ``n_ctx``), ``json_mode``; ``options``:
``repack`` (``auto``: probe the CPU once, see ``speed.llm.engine_probe``; or true / false),
``cache_prompt`` (true: a slot reuses the KV of the common prefix of its previous prompt),
``sampler`` (llama.cpp sampler knobs: top_k, min_p, repeat_penalty, ...), ``n_batch``,
``n_gpu_layers``, ``server_binary``, ``server_args`` (extra command-line arguments).

The server is started on a free loopback port when the first client of a stage needs it and
stopped when the last one closes (``speed.llm.llama_server``); requests go through the openai
backend (``as_completed``, retries, per-sample cache and ledger), at most ``slots`` in flight. A
server that dies mid-stage (a native crash) stops the stage with one line that names the model and
the signal; every sample that had arrived is cached, so the rerun resumes without paying for them.
"""

from __future__ import annotations

import dataclasses
import os
import re
from pathlib import Path
from typing import Any

from ...errors import ModelError
from .llamacpp_backend import SAMPLER_KEYS
from .openai_backend import OpenAIBackend

SERVER_TIMEOUT_S = 900.0  # a request waits for the CPU with the other slots: allow long answers
_CONTEXT = re.compile(r"context|exceed", re.I)


def server_spec(ref):
    """The ``ServerSpec`` of ``ref`` (resolving the model, the binary and, with ``repack: auto``, the probe)."""
    from ...models import resolve_model
    from .. import llama_server
    from ..engine_probe import repack_safe

    opts = ref.options or {}
    binary = llama_server.find_binary(opts.get("server_binary"))
    path = resolve_model(ref.model, want="gguf")
    adapter = None
    if ref.adapter:
        adapter = str(Path(ref.adapter).expanduser().resolve())
        if not adapter.endswith(".gguf") or not os.path.isfile(adapter):
            raise ModelError(f"the llamacpp backend needs a LoRA adapter as a .gguf file; got {ref.adapter!r} "
                             "(convert a PEFT folder with llama.cpp's convert_lora_to_gguf.py)")
    threads = ref.n_threads or max(1, os.cpu_count() or 2)
    repack = opts.get("repack", "auto")
    if repack == "auto":
        repack = repack_safe("server", path, threads=threads, binary=binary, label=ref.model)
    extra = tuple(str(a) for a in (opts.get("server_args") or ()))
    spec = llama_server.ServerSpec(binary=binary, model=path, adapters=(adapter,) if adapter else (), threads=threads,
                                   slots=int(ref.slots), ctx_per_slot=int(ref.ctx_per_slot or ref.n_ctx),
                                   repack=bool(repack), n_batch=int(opts.get("n_batch", 512)),
                                   n_gpu_layers=int(opts.get("n_gpu_layers", 0)), extra_args=extra,
                                   label=Path(ref.model).name)
    return spec, adapter


class LlamaServerBackend(OpenAIBackend):
    name = "llamacpp-server"

    def __init__(self, ref):
        from .. import llama_server

        self.source_ref = ref
        spec, adapter = server_spec(ref)
        self.server = llama_server.acquire(spec)
        self.spec = self.server.spec  # the server's: it may hold more adapters than this one
        self.label = ref.model + (f" + adapter {Path(adapter).name}" if adapter else "")
        try:
            opts = ref.options or {}
            body: dict[str, Any] = {"cache_prompt": bool(opts.get("cache_prompt", True)),
                                    # this request's adapter at scale 1, every other one loaded at 0
                                    "lora": self.server.spec.lora_field(adapter)}
            body.update({k: v for k, v in (opts.get("sampler") or {}).items() if k in SAMPLER_KEYS})
            served = dataclasses.replace(
                ref, backend="openai", model="speed-model", base_url=self.server.url, api_key_env=None,
                max_concurrency=spec.slots, timeout_s=max(float(ref.timeout_s), SERVER_TIMEOUT_S),
                options={"json_format": "json_object", "extra_body": body, "circuit_failures": 0,
                         "backoff_base_s": 0.2, "backoff_max_s": 2.0})
            super().__init__(served)
            # `slots` requests in flight (max_concurrency), as many again queued in this process
            self.preferred_batch = 2 * spec.slots
        except BaseException:
            llama_server.release(self.server)
            raise

    def describe(self) -> str:
        s = self.spec
        return (f"llama-server, {s.slots} slot{'s' if s.slots != 1 else ''} x {s.ctx_per_slot} ctx, {s.threads} "
                f"thread{'s' if s.threads != 1 else ''}, repack {'on' if s.repack else 'off'}, at {self.server.url} "
                f"(log: {self.server.log_path})")

    def _on_failure(self, exc: BaseException, status: int | None, text: str) -> None:
        """A dead server ends the stage with one line; so does a prompt larger than a slot's context."""
        death = self.server.death()
        if death is not None:
            raise ModelError(
                f"model {self.label}: its llama-server {death} mid-stage; every finished sample is cached: rerun the "
                "same command to resume (if it happens again, set options.repack: false or engine: in-process "
                f"for this model; log: {self.server.log_path})")
        if status == 400 and _CONTEXT.search(text):
            said = text.split(" - ", 1)[-1][:160]  # llama.cpp's own words: the request's and the slot's tokens
            raise ModelError(f"model {self.label}: a prompt does not fit a slot's context (ctx_per_slot "
                             f"{self.spec.ctx_per_slot}; llama-server: {said}); raise ctx_per_slot (or n_ctx) for "
                             "this model")

    def close(self) -> None:
        from .. import llama_server

        try:
            super().close()
        finally:
            srv = getattr(self, "server", None)
            if srv is not None:
                llama_server.release(srv)
                self.server = None
