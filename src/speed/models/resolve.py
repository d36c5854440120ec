"""Model references -> local paths: an offline name, a local folder or GGUF file, or a hub id."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from ..errors import ModelError
from .registry import REGISTRY, embedder_dir, get_offline

Want = Literal["gguf", "hf", "embedder", "any"]


def hub_reachable(timeout: float = 3.0) -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False"):
        return False
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_model(ref: str, want: Want = "any", prepare_if_needed: bool = True) -> str:
    """Resolve ``ref`` to something a backend can load.

    - offline name (``speed models list``): ``gguf`` -> the assembled GGUF file, ``hf`` -> the
      converted safetensors folder, ``embedder`` -> the sentence-transformers folder (prepared on
      first use);
    - an existing local path: returned as is (a ``.gguf`` file is refused where ``hf`` is wanted
      unless it can be converted by ``speed models prepare``);
    - ``org/name``: a hub id, returned as is where the hub is reachable; offline a ModelError.
    """
    off = get_offline(ref)
    if off is not None:
        if off.kind == "embedder":
            if want in ("gguf",):
                raise ModelError(f"{ref} is an embedding model; it has no GGUF form")
            return str(embedder_dir(off))
        if not off.prepared():
            if not prepare_if_needed:
                raise ModelError(f"offline model {ref} is not prepared: run speed models prepare {ref}")
            from .prepare import assemble_gguf, prepare

            if want == "gguf":
                return str(assemble_gguf(off))
            prepare(ref)
        return str(off.gguf_path if want == "gguf" else off.hf_dir)
    path = Path(ref).expanduser()
    if path.exists():
        if want == "gguf" and path.is_dir():
            ggufs = sorted(path.glob("*.gguf"))
            if len(ggufs) == 1:
                return str(ggufs[0])
            raise ModelError(f"model path {path} is a folder; the llamacpp backend needs a .gguf file")
        if want in ("hf", "embedder") and path.is_file():
            raise ModelError(f"model path {path} is a file; this backend needs a model folder "
                             "(a GGUF file runs with backend: llamacpp)")
        return str(path)
    return _unresolved(ref)


def check_model_exists(ref: str) -> None:
    """Raise the ModelError ``resolve_model`` would for a reference that can never resolve (not an
    offline name, not an existing path, not a reachable hub id). Cheap: nothing is prepared."""
    if get_offline(ref) is not None or Path(ref).expanduser().exists():
        return
    _unresolved(ref)


def _unresolved(ref: str) -> str:
    """A reference that is neither an offline name nor an existing path: a hub id, or a ModelError."""
    looks_local = ref.startswith((".", "/", "~")) or ref.endswith(".gguf") or ref.count("/") > 1
    if looks_local or "/" not in ref:
        names = ", ".join(REGISTRY)
        raise ModelError(f"model {ref!r} is neither an offline model ({names}) nor an existing path")
    if not hub_reachable():
        raise ModelError(f"model {ref!r} looks like a hub id, but the Hugging Face hub is not reachable "
                         f"from here (offline); use an offline model ({', '.join(REGISTRY)}) or a local folder")
    return ref
