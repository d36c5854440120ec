"""In-process transformers: batched generation with left padding, optional PEFT adapter.

Config: ``model`` (offline name -> its converted folder, a local folder, or a hub id where the hub
is reachable), ``adapter`` (a PEFT adapter folder), ``batch_size``, ``dtype`` (auto: float32 on CPU,
bfloat16 on CUDA), ``n_threads`` (torch threads). The tokenizer's chat template renders prompts.
``options.sampler`` may set ``top_k`` / ``repetition_penalty``.

Sampling in a batch draws from one torch generator seeded by the batch's first sample seed, so a
sample is reproducible for the same batch composition (the request cache makes reruns identical
regardless). ``json_mode`` has no constrained decoding here: it is ignored, with a warning.
Latency is the batch's wall time shared equally among its rows.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Sequence

from ...errors import ModelError
from .base import BackendRequest, Completion, error_text

log = logging.getLogger(__name__)
SAMPLER_KEYS = ("top_k", "repetition_penalty", "min_p", "typical_p", "no_repeat_ngram_size")


class HFBackend:
    name = "hf"

    def __init__(self, ref, model: Any = None, tokenizer: Any = None):
        import torch  # core dependencies; imported here to keep `import speed` light
        import transformers
        self.ref = ref
        self.torch = torch
        self.preferred_batch = max(1, ref.batch_size)
        if ref.n_threads:
            torch.set_num_threads(int(ref.n_threads))
        if ref.json_mode:
            log.warning("the hf backend has no constrained decoding: json_mode is ignored")
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        if model is None or tokenizer is None:
            from ...models import resolve_model

            path = resolve_model(ref.model, want="hf")
            dtype = {"auto": torch.bfloat16 if self.device == "cuda" else torch.float32,
                     "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[ref.dtype]
            try:
                tokenizer = transformers.AutoTokenizer.from_pretrained(path)
                model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
            except Exception as exc:
                raise ModelError(f"transformers could not load {path}: {error_text(exc)}") from None
            if ref.adapter:
                import peft
                try:
                    model = peft.PeftModel.from_pretrained(model, ref.adapter)
                except Exception as exc:
                    raise ModelError(f"cannot load the PEFT adapter {ref.adapter}: {error_text(exc)}") from None
            model.to(self.device)
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(tokenizer, "chat_template", None) is None:
            raise ModelError(f"model {ref.model} has no chat template; the hf backend needs a chat model")
        self.tok = tokenizer
        self.model = model.eval()
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if eos is None:
            eos = tokenizer.eos_token_id
        self.eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos])

    def _batch(self, jobs: list[tuple[BackendRequest, int | None]]) -> list[Completion]:
        torch = self.torch
        s = jobs[0][0].sampling
        texts = [self.tok.apply_chat_template(r.messages, tokenize=False, add_generation_prompt=True) for r, _ in jobs]
        enc = self.tok(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(self.device)
        kw: dict[str, Any] = dict(max_new_tokens=s.max_tokens, pad_token_id=self.tok.pad_token_id,
                                  eos_token_id=sorted(self.eos_ids))
        if s.temperature > 0:
            kw.update(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=0)
        else:
            kw.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        kw.update({k: v for k, v in ((self.ref.options or {}).get("sampler") or {}).items() if k in SAMPLER_KEYS})
        if s.stop:
            kw.update(stop_strings=list(s.stop), tokenizer=self.tok)
        seed = jobs[0][1]
        if seed is not None:
            torch.manual_seed(seed)
        t0 = time.monotonic()
        with torch.inference_mode():
            out = self.model.generate(**enc, **kw)
        dt = (time.monotonic() - t0) / len(jobs)
        width = enc["input_ids"].shape[1]
        comps = []
        for row in range(len(jobs)):
            new = out[row, width:].tolist()
            length, finish = len(new), "length"
            for j, t in enumerate(new):
                if t in self.eos_ids:
                    length, finish = j + 1, "stop"
                    break
            text = self.tok.decode(new[:length], skip_special_tokens=True)
            for st in s.stop:
                cut = text.find(st)
                if cut >= 0:
                    text, finish = text[:cut], "stop"
            comps.append(Completion(text=text, finish_reason=finish,
                                    prompt_tokens=int(enc["attention_mask"][row].sum().item()),
                                    completion_tokens=length, latency_s=dt, endpoint="hf"))
        return comps

    def generate(self, requests: Sequence[BackendRequest]) -> list[list[Completion]]:
        jobs = [(ri, k, req, seed) for ri, req in enumerate(requests) for k, seed in enumerate(req.seeds())]
        out: list[list[Completion | None]] = [[None] * len(r.indices) for r in requests]
        groups: dict[Any, list] = {}
        for j in jobs:
            groups.setdefault(j[2].sampling, []).append(j)
        for group in groups.values():
            for start in range(0, len(group), self.preferred_batch):
                chunk = group[start:start + self.preferred_batch]
                try:
                    comps = self._batch([(req, seed) for _, _, req, seed in chunk])
                except Exception as exc:  # a failing batch reports each of its rows failed
                    comps = [Completion(error=error_text(exc), endpoint="hf") for _ in chunk]
                for (ri, k, req, _), c in zip(chunk, comps):
                    c.index = req.indices[k]
                    out[ri][k] = c
        return [[c for c in row if c is not None] for row in out]

    def close(self) -> None:
        self.model = None
