"""Run configuration: YAML -> typed dataclasses (run, models, one section per stage), with overrides.

A config file has a ``run`` section, a ``models`` section (one model reference per role) and one
section per stage, named after the stage (``topics``, ``brainstorm``, ...). Unknown keys and
ill-typed values are rejected with a ConfigError naming the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..errors import ConfigError
from .configschema import check, from_dict, to_dict

ROLES = ("teacher", "junior", "senior", "revisor", "embedder", "reference_embedder")


@dataclass
class ModelRef:
    """Where a role's model comes from and how to run it.

    ``model`` is an offline model name (see ``speed models list``), a local folder or GGUF file,
    or a hub id (only where a hub is reachable). ``adapter`` is a LoRA adapter folder or GGUF file.
    ``api_key_env`` names the environment variable that holds the API key; the key itself never
    appears in a config, log, manifest or report.
    """

    backend: Literal["llamacpp", "hf", "openai", "vllm", "sentence-transformers"] = "llamacpp"
    model: str = ""
    adapter: str | None = None
    base_url: str | list[str] | None = None
    api_key_env: str | None = None
    n_threads: int | None = None
    n_ctx: int = 4096
    batch_size: int = 8
    max_concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 6
    json_mode: bool = False
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    instruction: bool | None = None
    # llamacpp only: a managed llama-server (the default) or llama-cpp-python in this process
    engine: Literal["server", "in-process"] = "server"
    slots: int = 8  # llamacpp server: parallel sequences (continuous batching)
    ctx_per_slot: int | None = None  # llamacpp server: each slot's context (default n_ctx)
    # openai only: send the stage's uncached requests through the provider's Batch API (half price,
    # answers within the completion window; see speed.llm.batch) instead of one live call each
    batch: bool = False
    options: dict[str, Any] = field(default_factory=dict)

    def validate(self, where: str) -> None:
        check(bool(self.model), f"{where}.model", self.model, "a model name, path or hub id is required")
        check(self.n_threads is None or self.n_threads >= 1, f"{where}.n_threads", self.n_threads, "must be >= 1")
        check(self.n_ctx >= 128, f"{where}.n_ctx", self.n_ctx, "must be >= 128")
        check(self.batch_size >= 1, f"{where}.batch_size", self.batch_size, "must be >= 1")
        check(self.max_concurrency >= 1, f"{where}.max_concurrency", self.max_concurrency, "must be >= 1")
        check(self.timeout_s > 0, f"{where}.timeout_s", self.timeout_s, "must be > 0")
        check(self.max_retries >= 0, f"{where}.max_retries", self.max_retries, "must be >= 0")
        if self.backend == "openai":
            check(bool(self.base_url), f"{where}.base_url", self.base_url,
                  "the openai backend needs a base_url (or a list of them)")
            from ..llm.backends.openai_backend import check_options

            check_options(self.options or {}, where)
        check(not self.batch or self.backend == "openai", f"{where}.batch", self.batch,
              "true only with backend: openai (the Batch API of an OpenAI-compatible provider)")
        check(self.slots >= 1, f"{where}.slots", self.slots, "must be >= 1")
        check(self.ctx_per_slot is None or self.ctx_per_slot >= 128, f"{where}.ctx_per_slot", self.ctx_per_slot,
              "null (= n_ctx) or >= 128")
        if self.backend == "llamacpp":
            check_llamacpp_options(self.options or {}, where)
        if self.api_key_env is not None:
            check(self.api_key_env.replace("_", "").isalnum(), f"{where}.api_key_env", self.api_key_env,
                  "the NAME of an environment variable (the key itself never goes in a config)")

    @property
    def base_urls(self) -> list[str]:
        if self.base_url is None:
            return []
        return [self.base_url] if isinstance(self.base_url, str) else list(self.base_url)

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


LLAMACPP_OPTIONS: dict[str, tuple[Any, str]] = {
    "repack": (lambda v: v in ("auto", True, False), "auto, true or false"),
    "cache_prompt": (lambda v: isinstance(v, bool), "true or false"),
    "reuse_prefix": (lambda v: isinstance(v, bool), "true or false"),
    "sampler": (lambda v: isinstance(v, dict), "a mapping of llama.cpp sampler settings (top_k, min_p, ...)"),
    "n_batch": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1"),
    "n_gpu_layers": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer (-1: all)"),
    "server_binary": (lambda v: isinstance(v, str) and bool(v), "the path of a llama-server binary"),
    "server_args": (lambda v: isinstance(v, list) and all(isinstance(a, (str, int, float)) for a in v),
                    "a list of extra llama-server arguments"),
    "chat_format": (lambda v: isinstance(v, str), "a llama-cpp-python chat format name"),
}


def check_llamacpp_options(options: dict[str, Any], where: str) -> None:
    for key, (ok, allowed) in LLAMACPP_OPTIONS.items():
        if key in options:
            check(bool(ok(options[key])), f"{where}.options.{key}", options[key], allowed)


@dataclass
class RunConfig:
    name: str = "speed-run"
    seed: int = 0
    run_dir: str | None = None
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None  # None: start a local Ray; "auto", "HOST:PORT" or "ray://...": connect
    ray_workers: int | None = None  # shard workers; None: as many as the cluster's CPUs (or GPUs) allow
    ray_cpus_per_worker: float = 1.0
    ray_gpus_per_worker: float = 0.0  # e.g. 1 for backend: vllm inside each worker
    ray_object_store_mb: int = 256  # object store of a local Ray started by speed (shards travel as files)
    ray_max_restarts: int = 2  # a worker that dies is restarted and its shard retried this many times
    until: str | None = None
    skip: list[str] = field(default_factory=list)
    cache: str | None = None

    def validate(self, where: str) -> None:
        from ..stages import STAGE_ORDER

        for i, name in enumerate(self.skip):
            check(name in STAGE_ORDER, f"{where}.skip[{i}]", name, "one of " + ", ".join(STAGE_ORDER))

        check(bool(self.name) and "/" not in self.name, f"{where}.name", self.name, "a non-empty name without '/'")
        check(self.seed >= 0, f"{where}.seed", self.seed, "must be >= 0")
        check(self.ray_address is None or bool(self.ray_address.strip()), f"{where}.ray_address", self.ray_address,
              "null (start a local Ray), 'auto', 'HOST:PORT' or 'ray://HOST:PORT'")
        check(self.ray_workers is None or self.ray_workers >= 1, f"{where}.ray_workers", self.ray_workers,
              "null or >= 1")
        check(self.ray_cpus_per_worker > 0, f"{where}.ray_cpus_per_worker", self.ray_cpus_per_worker, "must be > 0")
        check(self.ray_gpus_per_worker >= 0, f"{where}.ray_gpus_per_worker", self.ray_gpus_per_worker, "must be >= 0")
        check(self.ray_object_store_mb >= 80, f"{where}.ray_object_store_mb", self.ray_object_store_mb,
              "must be >= 80 (Ray's minimum)")
        check(self.ray_max_restarts >= 0, f"{where}.ray_max_restarts", self.ray_max_restarts, "must be >= 0")
        check(self.until is None or self.until in STAGE_ORDER, f"{where}.until", self.until,
              "one of " + ", ".join(STAGE_ORDER))


@dataclass
class ScalingConfig:
    """``speed scaling``: the nested subset sizes (explicit, or doubling from min_size) and a target."""

    sizes: list[int] = field(default_factory=list)
    min_size: int = 32
    factor: float = 2.0
    max_size: int | None = None
    target_score: float | None = None

    def validate(self, where: str) -> None:
        for i, n in enumerate(self.sizes):
            check(n >= 1, f"{where}.sizes[{i}]", n, "must be >= 1")
        check(self.sizes == sorted(set(self.sizes)), f"{where}.sizes", self.sizes, "increasing, without repeats")
        check(self.min_size >= 1, f"{where}.min_size", self.min_size, "must be >= 1")
        check(self.factor > 1.0, f"{where}.factor", self.factor, "must be > 1")
        check(self.max_size is None or self.max_size >= self.min_size, f"{where}.max_size", self.max_size,
              "must be >= min_size")


@dataclass
class StudyConfig:
    """``speed study``: the ablation, data-signal, downstream, scaling and cost study over the run of the
    same config (see ``speed.analysis.study``). Ignored by ``speed run``."""

    results_dir: str = "docs/results"  # tables, plots, raw results and the variants' data (committed)
    work_dir: str = "runs/study"  # generations, request cache, trained embedders (not committed)
    target: int = 300  # valid examples per variant
    max_prompts: int = 480  # cap on prompts per variant (a variant short of the target reports its yield)
    chunk: int = 60  # prompts generated per round until the target is reached
    prompt_seed: int = 1
    variants: list[str] = field(default_factory=lambda: ["base", "junior", "senior", "senior+revisor",
                                                         "teacher-direct"])
    judge_sample: int = 30  # valid examples per variant rated by the teacher (1-5 rubric)
    judge_max_tokens: int = 96
    eval_tasks: list[str] = field(default_factory=list)  # task folders ([]: the built-in tasks)
    # a retrieval task's corpus cut to its judged documents plus random others up to this many (None: whole)
    retrieval_corpus: int | None = None
    embedders: dict = field(default_factory=dict)  # name -> {model, train: {train-embedder keys}}
    select: dict = field(default_factory=dict)  # {embedder, holdout, candidates: [{train keys}]}: chosen on data
    scaling_embedder: str | None = None  # default: the first embedder
    scaling_sizes: list[int] = field(default_factory=list)  # [] = 5 sizes up to all of the best variant
    target_score: float | None = None  # the scaling fit's predicted size for this score
    # issue 17's filter rows: name -> export filter keys ({}: no filter), applied to filters_variant's data;
    # the combination of the filters that beat no filter on held-out synthetic data is added as "chosen"
    filters: dict = field(default_factory=dict)
    filters_variant: str = "senior+revisor"
    score_max_tokens: int = 64
    bootstrap: int = 1000
    seed: int = 0

    def validate(self, where: str) -> None:
        check(self.target >= 1, f"{where}.target", self.target, "must be >= 1")
        check(self.max_prompts >= self.chunk >= 1, f"{where}.max_prompts", self.max_prompts, "must be >= chunk >= 1")
        known = ("base", "junior", "senior", "senior+revisor", "junior+revisor", "teacher-direct")
        for i, v in enumerate(self.variants):
            check(v in known, f"{where}.variants[{i}]", v, "one of " + ", ".join(known))
        check(self.judge_sample >= 0, f"{where}.judge_sample", self.judge_sample, "must be >= 0")
        check(self.bootstrap >= 100, f"{where}.bootstrap", self.bootstrap, "must be >= 100")
        check(self.retrieval_corpus is None or self.retrieval_corpus >= 10, f"{where}.retrieval_corpus",
              self.retrieval_corpus, "null or >= 10")
        for name, spec in self.embedders.items():
            check(isinstance(spec, dict) and isinstance(spec.get("model"), str), f"{where}.embedders.{name}", spec,
                  "must be {model: NAME, train: {train-embedder keys}}")
        for i, n in enumerate(self.scaling_sizes):
            check(n >= 1, f"{where}.scaling_sizes[{i}]", n, "must be >= 1")
        if self.filters:
            from ..synth.filters import FilterSettings

            for name, spec in self.filters.items():
                check(name != "chosen", f"{where}.filters", name, "'chosen' is the name of the measured combination")
                from_dict(FilterSettings, spec or {}, f"{where}.filters.{name}")  # a bad key is named here
            check("none" in self.filters and not self.filters["none"], f"{where}.filters", list(self.filters),
                  "needs a row 'none: {}' (no filter), the baseline of the others")


@dataclass
class SpeedConfig:
    run: RunConfig
    models: dict[str, ModelRef]
    stages: dict[str, Any]
    source: str | None = None
    scaling: ScalingConfig = field(default_factory=ScalingConfig)
    study: StudyConfig = field(default_factory=StudyConfig)

    def stage(self, name: str):
        from ..stages import stage_config_class

        if name not in self.stages:
            cls = stage_config_class(name)
            self.stages[name] = from_dict(cls, {}, name)
        return self.stages[name]

    def model(self, role: str) -> ModelRef:
        if role not in self.models:
            raise ConfigError(f"config error: missing key 'models.{role}' (this run needs a {role} model)")
        return self.models[role]

    def to_dict(self) -> dict:
        out = {"run": to_dict(self.run), "models": {k: to_dict(v) for k, v in self.models.items()},
               "scaling": to_dict(self.scaling), "study": to_dict(self.study)}
        for name, cfg in self.stages.items():
            out[name] = to_dict(cfg)
        return out


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"config error: --set {text!r} is not allowed: expected SECTION.KEY=VALUE")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if len(parts) < 2:
        raise ConfigError(f"config error: --set {text!r} is not allowed: expected SECTION.KEY=VALUE")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return parts, value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    for text in overrides or []:
        parts, value = _parse_override(text)
        node = data
        for p in parts[:-1]:
            nxt = node.get(p)
            if nxt is None:
                nxt = node[p] = {}
            if not isinstance(nxt, dict):
                raise ConfigError(f"config error: --set {text!r}: '{p}' is not a section")
            node = nxt
        node[parts[-1]] = value
    return data


def read_yaml(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config error: {path}: file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config error: {path}: not a YAML text file (not UTF-8)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"config error: {where}: not valid YAML ({problem})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config error: {path}: expected a mapping of sections at the top level")
    return data


def build_config(data: dict, source: str | None = None) -> SpeedConfig:
    from ..stages import STAGE_ORDER, stage_config_class

    data = dict(data)
    run = from_dict(RunConfig, data.pop("run", None), "run")
    scaling = from_dict(ScalingConfig, data.pop("scaling", None), "scaling")
    study = from_dict(StudyConfig, data.pop("study", None), "study")
    models_raw = data.pop("models", None) or {}
    if not isinstance(models_raw, dict):
        raise ConfigError(f"config error: models = {models_raw!r} is not allowed: expected a mapping of roles")
    models = {}
    for role, ref in models_raw.items():
        if role not in ROLES:
            raise ConfigError(f"config error: unknown key 'models.{role}' (allowed: {', '.join(ROLES)})")
        if isinstance(ref, str):
            ref = {"model": ref}
        models[role] = from_dict(ModelRef, ref, f"models.{role}")
    stages = {}
    for section, body in data.items():
        name = str(section).replace("_", "-")
        if name not in STAGE_ORDER:
            allowed = ", ".join(("run", "models", "scaling", "study") + STAGE_ORDER)
            raise ConfigError(f"config error: unknown section '{section}' (allowed: {allowed})")
        from ..stages import is_implemented

        if not is_implemented(name) and body:
            raise ConfigError(f"config error: section '{section}' is for stage {name}, which is not implemented "
                              "yet; remove its keys")
        stages[name] = from_dict(stage_config_class(name), body, name)
    return SpeedConfig(run=run, models=models, stages=stages, source=source, scaling=scaling, study=study)


def load_config(path: str | os.PathLike, overrides: list[str] | None = None) -> SpeedConfig:
    data = apply_overrides(read_yaml(path), overrides or [])
    return build_config(data, source=str(path))


def replace(obj, **changes):
    return dataclasses.replace(obj, **changes)
