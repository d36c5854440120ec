"""The LLM layer: backends, request cache, usage ledger, prompts and parsing.

Stages use ``LLMClient`` (``speed.llm.client``) with ``Request`` / ``SamplingParams``; importing
this package is light (no torch, llama_cpp or openai until a backend is made).
"""

from .backends.base import Completion, Request, SamplingParams
from .cache import RequestCache, model_identity
from .client import LLMClient
from .ledger import Ledger, UsageRecord

__all__ = ["Completion", "Request", "SamplingParams", "RequestCache", "model_identity", "LLMClient", "Ledger",
           "UsageRecord"]
