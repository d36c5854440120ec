"""Offline model packs (``speed models``) and model-reference resolution."""

from .registry import REGISTRY, OfflineModel, get_offline
from .resolve import resolve_model

__all__ = ["REGISTRY", "OfflineModel", "get_offline", "resolve_model"]
