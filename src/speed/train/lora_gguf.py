"""A PEFT LoRA adapter folder -> a GGUF LoRA adapter that llama.cpp loads (``Llama(lora_path=...)``).

Follows llama.cpp's ``convert_lora_to_gguf.py``: every targeted linear weight ``W`` (HF name, e.g.
``model.layers.0.self_attn.q_proj.weight``) becomes two tensors named after W's GGUF name
(``blk.0.attn_q.weight.lora_a`` / ``.lora_b``) holding PEFT's ``lora_A`` (r x in) and ``lora_B``
(out x r) unchanged, in GGUF order ``[in, r]`` and ``[r, out]``; the metadata says
``general.type = adapter``, ``adapter.type = lora``, ``adapter.lora.alpha`` and
``general.architecture`` (llama.cpp refuses an adapter of another architecture). llama.cpp scales
by ``alpha / r`` like PEFT.

llama-architecture models (llama, mistral) have their q/k projection rows permuted by llama.cpp's
model converter (``convert_hf_to_gguf.py``, ``LlamaModel.permute``: per head, the two rotary
halves interleaved). Since ``W + B A`` must be permuted the same way and a row permutation of
``B A`` is the same permutation of ``B``'s rows, the q/k ``lora_B`` tensors are permuted here.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ..errors import ModelError

# HF model_type -> (gguf MODEL_ARCH member, q/k rows permuted by llama.cpp's converter)
ARCHS: dict[str, tuple[str, bool]] = {
    "llama": ("LLAMA", True),
    "mistral": ("LLAMA", True),
    "qwen2": ("QWEN2", False),
    "qwen3": ("QWEN3", False),
    "gemma2": ("GEMMA2", False),
    "gemma3": ("GEMMA3", False),
    "gemma3_text": ("GEMMA3", False),
}


def permute_qk(rows, n_head: int):
    """llama.cpp's q/k row permutation (``LlamaModel.permute``) applied to a (rows, ...) tensor."""
    return (rows.reshape(n_head, 2, rows.shape[0] // n_head // 2, *rows.shape[1:])
            .swapaxes(1, 2)
            .reshape(rows.shape))


def _base_config(base_path: str | os.PathLike) -> dict[str, Any]:
    path = Path(base_path) / "config.json"
    if not path.is_file():
        raise ModelError(f"cannot convert the adapter: the base model folder {base_path} has no config.json")
    cfg = json.loads(path.read_text(encoding="utf-8"))
    if cfg.get("model_type") not in ARCHS and isinstance(cfg.get("text_config"), dict):
        return cfg["text_config"]  # a multimodal wrapper: the adapter targets its language model
    return cfg


def convert_peft_to_gguf(adapter_dir: str | os.PathLike, out_path: str | os.PathLike, base_path: str | os.PathLike,
                         outtype: str = "f32") -> dict[str, Any]:
    """Write ``out_path`` (GGUF LoRA adapter) from the PEFT folder ``adapter_dir``; what was written."""
    import gguf
    import numpy as np
    from safetensors.torch import load_file

    adapter_dir, out_path = Path(adapter_dir), Path(out_path)
    acfg = json.loads((adapter_dir / "adapter_config.json").read_text(encoding="utf-8"))
    if acfg.get("peft_type", "LORA") != "LORA":
        raise ModelError(f"{adapter_dir}: only LoRA adapters convert to GGUF (peft_type {acfg.get('peft_type')})")
    if acfg.get("modules_to_save"):
        raise ModelError(f"{adapter_dir}: modules_to_save ({acfg['modules_to_save']}) has no GGUF LoRA form")
    if acfg.get("alpha_pattern"):
        raise ModelError(f"{adapter_dir}: per-module alpha_pattern has no GGUF LoRA form (one alpha per adapter)")
    hp = _base_config(base_path)
    model_type = hp.get("model_type")
    if model_type not in ARCHS:
        raise ModelError(f"cannot convert a LoRA adapter for model type {model_type!r} to GGUF "
                         f"(supported: {', '.join(sorted(ARCHS))})")
    arch_member, permute = ARCHS[model_type]
    arch = getattr(gguf.MODEL_ARCH, arch_member)
    arch_name = gguf.MODEL_ARCH_NAMES[arch]
    n_blocks = int(hp["num_hidden_layers"])
    n_head = int(hp["num_attention_heads"])
    n_kv = int(hp.get("num_key_value_heads") or n_head)
    tmap = gguf.get_tensor_name_map(arch, n_blocks)

    alpha = float(acfg["lora_alpha"])
    r = int(acfg["r"])
    if acfg.get("use_rslora"):
        if acfg.get("rank_pattern"):
            raise ModelError(f"{adapter_dir}: rsLoRA with a rank_pattern has no GGUF LoRA form")
        alpha = alpha * math.sqrt(r)  # PEFT scales by alpha/sqrt(r), llama.cpp by alpha/r

    weights_path = adapter_dir / "adapter_model.safetensors"
    if not weights_path.is_file():
        raise ModelError(f"{adapter_dir}: adapter_model.safetensors is missing")
    state = load_file(str(weights_path), device="cpu")
    pairs: dict[str, dict[str, Any]] = {}
    for name, tensor in state.items():
        if ".lora_A." in name or name.endswith(".lora_A.weight"):
            part = "A"
        elif ".lora_B." in name or name.endswith(".lora_B.weight"):
            part = "B"
        else:
            raise ModelError(f"{adapter_dir}: unexpected tensor {name!r} (not a lora_A / lora_B weight)")
        base = name.replace("base_model.model.", "", 1)
        base = base.replace(".lora_A.weight", ".weight").replace(".lora_B.weight", ".weight")
        for prefix, repl in (("model.language_model.", "model."), ("language_model.", "")):
            if base.startswith(prefix):
                base = base.replace(prefix, repl, 1)
        pairs.setdefault(base, {})[part] = tensor

    dtype = {"f32": np.float32, "f16": np.float16}[outtype]
    tmp = out_path.with_name(f".{out_path.name}.tmp")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(tmp), arch_name)
    written = []
    try:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, alpha)
        writer.add_name(f"{adapter_dir.name} (LoRA r{r})")
        for base in sorted(pairs, key=_natural):
            ab = pairs[base]
            if "A" not in ab or "B" not in ab:
                raise ModelError(f"{adapter_dir}: {base} has only lora_{'A' if 'A' in ab else 'B'}")
            gname = tmap.get_name(base, try_suffixes=(".weight", ".bias"))
            if gname is None:
                raise ModelError(f"{adapter_dir}: no GGUF name for {base} (architecture {arch_name})")
            a = ab["A"].float()
            b = ab["B"].float()
            if a.shape[0] != b.shape[1]:
                raise ModelError(f"{adapter_dir}: {base}: lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)} "
                                 "disagree on the rank")
            if permute and base.endswith("q_proj.weight"):
                b = permute_qk(b, n_head)
            elif permute and base.endswith("k_proj.weight"):
                b = permute_qk(b, n_kv)
            writer.add_tensor(gname + ".lora_a", a.contiguous().numpy().astype(dtype))
            writer.add_tensor(gname + ".lora_b", b.contiguous().numpy().astype(dtype))
            written.append((gname, tuple(a.shape), tuple(b.shape)))
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    os.replace(tmp, out_path)
    return {"path": str(out_path), "arch": arch_name, "alpha": alpha, "rank": r, "tensors": 2 * len(written),
            "modules": written}


def _natural(name: str):
    import re

    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def read_gguf_adapter(path: str | os.PathLike) -> dict[str, Any]:
    """The metadata and tensor shapes (GGUF order) of a GGUF adapter: for checks and tests."""
    import gguf

    reader = gguf.GGUFReader(str(path))
    meta: dict[str, Any] = {}
    for key, fld in reader.fields.items():
        if key.startswith(("general.", "adapter.")):
            try:
                meta[key] = fld.contents()
            except Exception:  # pragma: no cover - an unreadable field
                meta[key] = None
    tensors = {t.name: tuple(int(x) for x in t.shape) for t in reader.tensors}
    return {"metadata": meta, "tensors": tensors}
