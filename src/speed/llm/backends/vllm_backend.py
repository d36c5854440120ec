"""vLLM's offline engine (GPU): LoRA adapters via LoRARequest, guided JSON decoding.

Config: ``model`` (a local folder, an offline name's converted folder, or a hub id), ``adapter``
(a PEFT adapter folder), ``n_ctx`` (max_model_len), ``dtype``, ``json_mode``. ``options.engine``
is passed to ``vllm.LLM`` (e.g. gpu_memory_utilization, tensor_parallel_size);
``options.max_lora_rank`` (default 64); ``options.sampler`` may set top_k, min_p,
repetition_penalty. vLLM is imported lazily (``pip install 'speed[vllm]'``).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

from ...errors import ModelError, require
from .base import BackendRequest, Completion, error_text

SAMPLER_KEYS = ("top_k", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty")


class VLLMBackend:
    name = "vllm"

    def __init__(self, ref):
        vllm = require("vllm", "vllm", "the vllm backend")
        from ...models import resolve_model

        self.ref = ref
        self.vllm = vllm
        self.preferred_batch = max(256, ref.batch_size)
        opts = ref.options or {}
        path = resolve_model(ref.model, want="hf")
        kw: dict[str, Any] = dict(model=path, max_model_len=ref.n_ctx, dtype=ref.dtype, seed=0)
        self.lora = None
        if ref.adapter:
            from vllm.lora.request import LoRARequest

            kw.update(enable_lora=True, max_lora_rank=int(opts.get("max_lora_rank", 64)))
            self.lora = LoRARequest("speed-adapter", 1, str(ref.adapter))
        kw.update(opts.get("engine") or {})
        try:
            self.llm = vllm.LLM(**kw)
        except Exception as exc:
            raise ModelError(f"vLLM could not load {path}: {error_text(exc)}") from None

    def _params(self, req: BackendRequest, seed: int | None):
        s = req.sampling
        kw: dict[str, Any] = dict(n=1, temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens,
                                  stop=list(s.stop) or None, seed=seed)
        kw.update({k: v for k, v in ((self.ref.options or {}).get("sampler") or {}).items() if k in SAMPLER_KEYS})
        if req.json_schema is not None:
            try:  # vLLM >= 0.11
                from vllm.sampling_params import StructuredOutputsParams

                kw["structured_outputs"] = StructuredOutputsParams(json=req.json_schema)
            except ImportError:  # older vLLM
                from vllm.sampling_params import GuidedDecodingParams

                kw["guided_decoding"] = GuidedDecodingParams(json=req.json_schema)
        return self.vllm.SamplingParams(**kw)

    def _run(self, jobs: list[tuple[BackendRequest, int | None]]) -> list[Completion]:
        t0 = time.monotonic()
        outs = self.llm.chat([r.messages for r, _ in jobs], sampling_params=[self._params(r, s) for r, s in jobs],
                             lora_request=self.lora, use_tqdm=False)
        dt = (time.monotonic() - t0) / max(1, len(jobs))
        comps = []
        for o in outs:
            g = o.outputs[0]
            comps.append(Completion(text=g.text, finish_reason=g.finish_reason,
                                    prompt_tokens=len(o.prompt_token_ids or []), completion_tokens=len(g.token_ids),
                                    latency_s=dt, endpoint="vllm"))
        return comps

    def generate(self, requests: Sequence[BackendRequest]) -> list[list[Completion]]:
        jobs = [(req, seed) for req in requests for seed in req.seeds()]
        try:
            flat = self._run(jobs)
        except Exception:  # isolate the bad request(s): run one by one
            flat = []
            for job in jobs:
                try:
                    flat.extend(self._run([job]))
                except Exception as exc:
                    flat.append(Completion(error=error_text(exc), endpoint="vllm"))
        out, k = [], 0
        for req in requests:
            row = flat[k:k + len(req.indices)]
            for c, i in zip(row, req.indices):
                c.index = i
            out.append(row)
            k += len(req.indices)
        return out

    def close(self) -> None:
        self.llm = None
