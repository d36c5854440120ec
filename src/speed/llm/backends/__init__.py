"""Generation backends behind one batch protocol, and the factory that picks one from a ModelRef."""

from __future__ import annotations

from ...errors import ModelError
from .base import Backend, BackendRequest, Completion, Message, Request, SamplingParams, sample_seed

__all__ = ["Backend", "BackendRequest", "Completion", "Message", "Request", "SamplingParams", "sample_seed",
           "make_backend"]


def make_backend(ref) -> Backend:
    """The backend ``ref.backend`` names, loaded and ready (heavy imports happen here)."""
    if ref.backend == "llamacpp" and getattr(ref, "engine", "server") == "server":
        from .llamacpp_server_backend import LlamaServerBackend

        return LlamaServerBackend(ref)
    if ref.backend == "llamacpp":
        from .llamacpp_backend import LlamaCppBackend

        return LlamaCppBackend(ref)
    if ref.backend == "hf":
        from .hf_backend import HFBackend

        return HFBackend(ref)
    if ref.backend == "openai":
        from .openai_backend import OpenAIBackend

        return OpenAIBackend(ref)
    if ref.backend == "vllm":
        from .vllm_backend import VLLMBackend

        return VLLMBackend(ref)
    raise ModelError(f"backend {ref.backend!r} does not generate text (allowed here: llamacpp, hf, openai, vllm)")
