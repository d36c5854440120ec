"""Trained generators and embedders: which stage provides a role's model, and the effective reference.

Once the stage that trains a role (its declaration's ``trains``, e.g. the junior's SFT) is done,
every stage that uses that role gets the trained model:
the configured base plus the stage's LoRA adapter (a PEFT folder for ``hf`` / ``vllm``, the
converted GGUF adapter for ``llamacpp``). A reference that names its own adapter, or a role whose
training stage was skipped, is used as configured. The stage that provides a role is also an
input of every stage that uses it, so retraining reruns what depends on it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path


def _trainer(role: str) -> str | None:
    from ..stages import trainer_of

    stage = trainer_of(role)
    return stage.name if stage else None


def provider_entry(manifest: dict, role: str) -> dict | None:
    stage = _trainer(role)
    entry = (manifest.get("stages") or {}).get(stage) if stage else None
    if not entry or entry.get("status") != "done" or not (entry.get("artifacts") or {}).get("model"):
        return None
    return entry


def effective_ref(ref, manifest: dict, role: str, run_dir: Path):
    """``ref`` with the trained adapter (or model folder) of ``role`` when its training stage is done."""
    entry = provider_entry(manifest, role)
    if entry is None or ref is None or ref.adapter:
        return ref
    art = entry["artifacts"]["model"]
    folder = Path(run_dir) / _trainer(role)
    if role == "embedder":
        return dataclasses.replace(ref, model=str(folder / art["path"]))
    if ref.backend == "llamacpp" and art.get("adapter_gguf"):
        return dataclasses.replace(ref, adapter=str(folder / art["adapter_gguf"]))
    if ref.backend in ("hf", "vllm") and art.get("adapter"):
        return dataclasses.replace(ref, adapter=str(folder / art["adapter"]))
    return ref  # e.g. an openai endpoint: serve the adapter there and name it in the reference


def role_inputs(manifest: dict, roles) -> dict[str, dict]:
    """The training stages whose models these roles use (part of a stage's input hash)."""
    out = {}
    for role in roles:
        entry = provider_entry(manifest, role)
        if entry is not None:
            out[_trainer(role)] = {"config_hash": entry.get("config_hash"), "input_hash": entry.get("input_hash"),
                                    "artifacts": entry.get("artifacts")}
    return out
