"""Generator comparison (the paper's ablation rows): the same prompts through several generators.

A variant is a generator model reference, optionally with a revisor that revises each valid
example once (as the ``revise`` stage does): e.g. untrained base, junior, junior+revisor, senior,
senior+revisor. Per variant and task kind the comparison reports

- parse rate (a JSON object was found) and schema validity (the kind's keys, non-empty, distinct),
- length adherence (the sampled length attributes, among valid examples),
- diversity: distinct-1 / distinct-2 (unique n-grams over all n-grams of the valid examples) and the
  near-duplicate rate (an example whose word-3-shingle Jaccard with an earlier one is >= 0.8),
- hard-negative margin and false-negative rate by the reference embedder (kinds with a negative),
- the revision rate (revisor variants), the calls and tokens spent,
- optionally the downstream main score of an embedder trained on each variant's valid examples.

Outputs: ``results.json``, ``results.md`` (the table), ``compare.png`` (the plot), ``examples.jsonl``
(every generation with its raw text and parse result), ``ledger.jsonl`` and a request cache.

A spec file (YAML)::

    prompts: {run_dir: runs/demo, count: 16, seed: 0, proportions: {retrieval: 1, classification: 1, sts: 1}}
    # or: prompts: {tasks: [{kind, task, topic}], topics: [{id, text}], count: 8}
    sampling: {temperature: 1.0, top_p: 1.0, max_tokens: 256}   # optional; default: the synthesize stage's
    reference_embedder: all-minilm-l6-v2
    downstream: {tasks: [src/speed/data/eval/STSBenchmark], epochs: 1}   # optional
    variants:
      base: {generator: {backend: llamacpp, model: smollm2-135m-instruct}}
      junior+revisor:
        generator: {backend: llamacpp, model: smollm2-135m-instruct, adapter: runs/demo/train-junior/adapter.gguf}
        revisor: {backend: llamacpp, model: smollm2-135m-instruct, adapter: runs/demo/train-revisor/adapter.gguf}
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..errors import InputError

ALL_KINDS = "all"


@dataclass
class Variant:
    name: str
    generator: Any  # ModelRef
    revisor: Any = None  # ModelRef | None


@dataclass
class CompareSettings:
    temperature: float | None = None  # None: the generating stage's own setting
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int = 0
    near_dup_threshold: float = 0.8
    fn_margin: float = 0.0
    reference_embedder: str = "all-minilm-l6-v2"
    downstream_tasks: list[str] | None = None
    downstream_epochs: float = 1.0
    extra: dict = field(default_factory=dict)


# -- diversity ---------------------------------------------------------------------------------------
_WORD = re.compile(r"\w+", re.UNICODE)


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def distinct_n(texts: Sequence[str], n: int) -> float | None:
    grams, total = set(), 0
    for t in texts:
        w = words(t)
        g = [tuple(w[i:i + n]) for i in range(len(w) - n + 1)]
        grams.update(g)
        total += len(g)
    return len(grams) / total if total else None


def shingles(text: str, k: int = 3) -> set:
    w = words(text)
    if len(w) < k:
        return {tuple(w)} if w else set()
    return {tuple(w[i:i + k]) for i in range(len(w) - k + 1)}


def near_duplicate_rate(texts: Sequence[str], threshold: float = 0.8) -> float | None:
    """Fraction of texts whose shingle Jaccard with an earlier text is >= threshold (exact copies included)."""
    if not texts:
        return None
    seen: list[set] = []
    dups = 0
    for t in texts:
        s = shingles(t)
        if any(s == o or (s and o and len(s & o) / len(s | o) >= threshold) for o in seen):
            dups += 1
        seen.append(s)
    return dups / len(texts)


# -- generation ---------------------------------------------------------------------------------------
def _context(artifact: str, settings: CompareSettings, folder: Path):
    """A stage context for the stage that provides ``artifact``, over ``folder``: the stage's config
    (sampling overridden by the settings that are set) and seeds from ``settings.seed`` as the run seed."""
    import dataclasses

    from ..runtime.config import build_config
    from ..runtime.rundir import RunDir, StageContext
    from ..stages import provider

    name = provider(artifact).name
    config = build_config({"run": {"name": "compare", "seed": settings.seed}})
    sampling = {k: getattr(settings, k) for k in ("temperature", "top_p", "max_tokens") if getattr(settings, k) is not None}
    return StageContext(name=name, config=config, cfg=dataclasses.replace(config.stage(name), **sampling),
                        rundir=RunDir(folder))


def generate_variant(variant: Variant, prompts, settings: CompareSettings, out: Path) -> list[dict]:
    """Every prompt through the variant's generator (and revisor) on the stages' generation path: the
    synthesizing stage's requests, seeds and shards, then the revising stage's; one row per prompt."""
    from ..llm.cache import RequestCache
    from ..llm.client import LLMClient
    from ..llm.ledger import Ledger
    from ..runtime.rundir import clear_stage_dir
    from ..stages.generation import generate_examples, to_example
    from ..stages.revise import revise_examples

    cache = RequestCache(out / "cache.sqlite")
    ledger = Ledger(out / "ledger.jsonl")
    folder = out / "work" / _safe(variant.name)
    clear_stage_dir(folder)  # shards of an earlier comparison: the request cache makes a rerun free instead
    ctx = _context("synthetic-examples", settings, folder)
    gen = LLMClient(variant.generator, role="generator", stage=f"compare:{variant.name}", cache=cache, ledger=ledger)
    try:
        gens = generate_examples(ctx, gen, prompts, ctx.cfg, keep_tokens=True)
    finally:
        gen.close()  # a managed llama-server stops here, not at exit
    rows = [{"variant": variant.name, "prompt_id": g["prompt"]["id"], "kind": g["prompt"]["kind"],
             "task": g["prompt"]["task"], "topic": g["prompt"]["topic"], "attributes": g["prompt"]["attributes"],
             "raw": g["raw"], "error": g["error"], "parsed_json": g["parsed_json"], "valid": g["ok"],
             "reason": g["reason"], "fields": g["fields"], "length_ok": g["length_ok"] if g["ok"] else {},
             "revised": False, "prompt_tokens": g["prompt_tokens"], "completion_tokens": g["completion_tokens"]}
            for g in gens]
    if variant.revisor is not None:
        todo = [i for i, g in enumerate(gens) if g["ok"]]
        rctx = _context("revised-examples", settings, folder)
        rev = LLMClient(variant.revisor, role="revisor", stage=f"compare:{variant.name}", cache=cache, ledger=ledger)
        try:
            revised = revise_examples(rctx, rev, [to_example(gens[i], variant.generator.model) for i in todo], rctx.cfg)
        finally:
            rev.close()
        for i, v in zip(todo, revised):
            r = rows[i]
            r["revision_tokens"] = v["prompt_tokens"] + v["completion_tokens"]
            if v["fields"] is not None:
                r["original_fields"] = r["fields"]
                r["fields"], r["revised"], r["length_ok"] = v["fields"], True, v["length_ok"] or {}
    cache.close()
    return rows


# -- metrics -----------------------------------------------------------------------------------------
def _example(r: dict):
    from ..synth.records import Example

    return Example(id=f"{r['variant']}-{r['prompt_id']}", kind=r["kind"], task=r["task"], topic=r["topic"],
                   fields=r["fields"], attributes=r["attributes"], length_ok=r["length_ok"] or {})


def _mean(vals):
    vals = [v for v in vals if v is not None]
    return sum(vals) / len(vals) if vals else None


def metrics(rows: Sequence[dict], embedder=None, settings: CompareSettings | None = None) -> dict:
    """Per kind (and ``all``): the comparison's signals over one variant's rows."""
    from ..synth.filters import FilterSettings
    from ..synth.quality import length_adherence, similarity_signals

    settings = settings or CompareSettings()
    signals = {}
    valid = [r for r in rows if r["valid"]]
    if embedder is not None and valid:
        sig = similarity_signals([_example(r) for r in valid], embedder,
                                 fn_rule=FilterSettings(false_negative_margin=settings.fn_margin))
        signals = {id(r): s for r, s in zip(valid, sig)}
    out = {}
    kinds = sorted({r["kind"] for r in rows})
    for k in kinds + [ALL_KINDS]:
        sel = rows if k == ALL_KINDS else [r for r in rows if r["kind"] == k]
        ok = [r for r in sel if r["valid"]]
        texts = [_example(r).full_text() for r in ok]
        sig = [signals[id(r)] for r in ok if id(r) in signals]
        margins = [s["margin"] for s in sig if s["margin"] is not None]
        fns = [s["false_negative"] for s in sig if s["false_negative"] is not None]
        lens = [length_adherence(_example(r)) for r in ok]
        out[k] = {
            "prompts": len(sel),
            "parse_rate": sum(r["parsed_json"] for r in sel) / len(sel) if sel else None,
            "valid_rate": len(ok) / len(sel) if sel else None,
            "length_adherence": _mean([float(v) for v in lens if v is not None]),
            "distinct_1": distinct_n(texts, 1),
            "distinct_2": distinct_n(texts, 2),
            "near_duplicate_rate": near_duplicate_rate(texts, settings.near_dup_threshold),
            "mean_margin": _mean(margins),
            "false_negative_rate": (sum(fns) / len(fns)) if fns else None,
            "revised_rate": (sum(r["revised"] for r in ok) / len(ok)) if ok else None,
            "completion_tokens": sum(int(r.get("completion_tokens") or 0) for r in sel),
            "reasons": dict(Counter(r["reason"] or "llm_error" for r in sel if not r["valid"])),
        }
    return out


TABLE_COLUMNS = (("valid_rate", "valid"), ("parse_rate", "parsed"), ("length_adherence", "length ok"),
                 ("distinct_1", "distinct-1"), ("distinct_2", "distinct-2"), ("near_duplicate_rate", "near-dup"),
                 ("mean_margin", "margin"), ("false_negative_rate", "false neg"), ("revised_rate", "revised"))


def _f(v) -> str:
    return "-" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def table_markdown(result: dict) -> str:
    head = ["variant", "kind", "prompts"] + [label for _, label in TABLE_COLUMNS]
    has_down = any(v.get("downstream") for v in result["variants"].values())
    if has_down:
        head.append("downstream")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, v in result["variants"].items():
        for kind, m in v["metrics"].items():
            cells = [name, kind, str(m["prompts"])] + [_f(m[key]) for key, _ in TABLE_COLUMNS]
            if has_down:
                cells.append(_f(v["downstream"]["average"]) if kind == ALL_KINDS and v.get("downstream") else "")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(result: dict) -> bytes:
    from .plots import bar_chart

    keys = (("valid_rate", "valid"), ("length_adherence", "length ok"), ("distinct_2", "distinct-2"),
            ("near_duplicate_rate", "near-dup"), ("false_negative_rate", "false neg"), ("mean_margin", "margin"))
    series = {name: [v["metrics"][ALL_KINDS][k] for k, _ in keys] for name, v in result["variants"].items()}
    return bar_chart([label for _, label in keys], series, "Generator comparison (all kinds)", "value")


# -- the whole comparison ----------------------------------------------------------------------------
def run_compare(variants: Sequence[Variant], prompts, out_dir: str | os.PathLike,
                settings: CompareSettings | None = None, log=print) -> dict:
    from ..io import atomic_write_jsonl, atomic_write_text, atomic_writer

    settings = settings or CompareSettings()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not prompts:
        raise InputError("no prompts to compare on (no tasks or topics?)")
    embedder = None
    if settings.reference_embedder:
        from ..runtime.config import ModelRef
        from ..synth.quality import load_embedder

        embedder = load_embedder(ModelRef(backend="sentence-transformers", model=settings.reference_embedder))
    result = {"prompts": len(prompts), "kinds": dict(Counter(p.kind for p in prompts)),
              "settings": {k: v for k, v in settings.__dict__.items() if k != "extra"}, "variants": {}}
    all_rows = []
    for v in variants:
        t0 = time.time()
        log(f"[compare] {v.name}: {len(prompts)} prompts ...")
        rows = generate_variant(v, prompts, settings, out)
        all_rows += rows
        entry = {"generator": _ref_label(v.generator), "revisor": _ref_label(v.revisor) if v.revisor else None,
                 "seconds": round(time.time() - t0, 2), "metrics": metrics(rows, embedder, settings)}
        if settings.downstream_tasks is not None:
            entry["downstream"] = _downstream(v, rows, settings, out)
        result["variants"][v.name] = entry
        m = entry["metrics"][ALL_KINDS]
        log(f"[compare] {v.name}: valid {_f(m['valid_rate'])}, length ok {_f(m['length_adherence'])}, "
            f"distinct-2 {_f(m['distinct_2'])} ({entry['seconds']:.0f}s)")
    atomic_write_jsonl(out / "examples.jsonl", all_rows)
    atomic_write_text(out / "results.json", json.dumps(result, indent=2, default=str) + "\n")
    md = table_markdown(result)
    atomic_write_text(out / "results.md", "# Generator comparison\n\n" + md + "\n")
    with atomic_writer(out / "compare.png", "wb") as fh:
        fh.write(plot(result))
    result["paths"] = {"json": str(out / "results.json"), "table": str(out / "results.md"),
                       "plot": str(out / "compare.png"), "examples": str(out / "examples.jsonl")}
    return result


def _downstream(v: Variant, rows, settings: CompareSettings, out: Path) -> dict | None:
    from ..evaluate.runner import evaluate_model
    from ..stages.train_embedder import Config
    from ..train.embedder import train_embedder

    data = [{"query": _example(r).query, "positive": _example(r).positive, "negative": _example(r).negative,
             "task": r["task"], "kind": r["kind"]} for r in rows if r["valid"]]
    if not data:
        return None
    trained = train_embedder(settings.reference_embedder, data, out / "models" / _safe(v.name),
                             Config(epochs=settings.downstream_epochs), settings.seed)
    res = evaluate_model(trained["model"], settings.downstream_tasks or None)  # instruction: as trained
    return {"average": res["average"], "scores": {k: r["main_score"] for k, r in res["results"].items()},
            "examples": len(data)}


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _ref_label(ref) -> str:
    return ref.model + (f"+{ref.adapter}" if getattr(ref, "adapter", None) else "")


# -- prompts -----------------------------------------------------------------------------------------
def plan(seed: int, count: int, tasks: list[dict], topics: list[dict], proportions: dict | None = None):
    from ..stages import provider
    from ..synth.planning import PAPER_PROPORTIONS, plan_prompts

    tasks = [dict(t, id=t.get("id") or f"t{i}") for i, t in enumerate(tasks)]
    topics = [dict(t, id=t.get("id") or f"p{i}") for i, t in enumerate(topics)]
    # planned as the synthesizing stage plans (its salt): a run's own prompts for the same seed and count
    return plan_prompts(seed, provider("synthetic-examples").name, count, proportions or PAPER_PROPORTIONS,
                        tasks, topics)


def prompts_from_spec(spec: dict, base: Path):
    from ..io import read_jsonl

    p = spec.get("prompts") or {}
    if p.get("run_dir"):
        rd = (base / p["run_dir"]) if not Path(p["run_dir"]).is_absolute() else Path(p["run_dir"])
        from ..stages import provider

        topics_at, tasks_at = ((rd / s.name / s.provides[a]) for a, s in
                               (("sampled-topics", provider("sampled-topics")), ("tasks", provider("tasks"))))
        topics = list(read_jsonl(topics_at))
        tasks = list(read_jsonl(tasks_at)) if tasks_at.exists() else []
    else:
        tasks, topics = list(p.get("tasks") or []), list(p.get("topics") or [])
    return plan(int(p.get("seed", 0)), int(p.get("count", 8)), tasks, topics, p.get("proportions"))


def variants_from_spec(spec: dict) -> list[Variant]:
    from ..runtime.config import ModelRef
    from ..runtime.configschema import from_dict

    raw = spec.get("variants")
    if not isinstance(raw, dict) or not raw:
        raise InputError("compare spec: 'variants' must be a mapping name -> {generator: MODEL_REF, revisor: MODEL_REF}")
    out = []
    for name, body in raw.items():
        if isinstance(body, str):
            body = {"generator": {"model": body}}
        if "generator" not in body:
            body = {"generator": body}
        gen = body["generator"] if isinstance(body["generator"], dict) else {"model": body["generator"]}
        rev = body.get("revisor")
        rev = rev if isinstance(rev, dict) or rev is None else {"model": rev}
        out.append(Variant(name=str(name), generator=from_dict(ModelRef, gen, f"variants.{name}.generator"),
                           revisor=from_dict(ModelRef, rev, f"variants.{name}.revisor") if rev else None))
    return out


def add_compare_arguments(m) -> None:
    m.add_argument("spec", nargs="?", help="a YAML spec (prompts, sampling, variants; see speed.analysis.compare)")
    m.add_argument("--variant", action="append", default=[], metavar="NAME=MODEL[,revisor=MODEL]",
                   help="a variant without a spec file (backend llamacpp); repeatable")
    m.add_argument("--prompts-from", metavar="RUN_DIR", help="topics and brainstorm tasks of a run directory")
    m.add_argument("--count", type=int, default=None, help="number of prompts")
    m.add_argument("--max-tokens", type=int, default=None)
    m.add_argument("--threads", type=int, default=None, help="n_threads of llamacpp variants")
    m.add_argument("--downstream", nargs="*", metavar="TASK_DIR", default=None,
                   help="also train an embedder on each variant's data and evaluate it (default tasks: built-ins)")
    m.add_argument("--out", default="compare", help="output folder (default ./compare)")
    m.add_argument("--json", action="store_true")


def compare_main(args) -> int:
    import yaml

    spec: dict = {}
    base = Path.cwd()
    if args.spec:
        sp = Path(args.spec)
        if not sp.is_file():
            raise InputError(f"{sp}: file not found")
        try:
            spec = yaml.safe_load(sp.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise InputError(f"{sp}: not valid YAML ({str(exc).splitlines()[0]})") from None
        base = sp.parent
    spec.setdefault("variants", {})
    for v in args.variant:
        name, _, rest = v.partition("=")
        if not name or not rest:
            raise InputError(f"--variant {v!r}: expected NAME=MODEL[,revisor=MODEL]")
        parts = rest.split(",")
        body = {"generator": {"backend": "llamacpp", "model": parts[0]}}
        for extra in parts[1:]:
            k, _, val = extra.partition("=")
            if k == "revisor" and val:
                body["revisor"] = {"backend": "llamacpp", "model": val}
            else:
                raise InputError(f"--variant {v!r}: unknown part {extra!r} (only revisor=MODEL)")
        spec["variants"][name] = body
    if args.threads:
        for body in spec["variants"].values():
            for role in ("generator", "revisor"):
                if isinstance(body, dict) and isinstance(body.get(role), dict):
                    body[role].setdefault("n_threads", args.threads)
    if args.prompts_from:
        spec.setdefault("prompts", {})["run_dir"] = str(Path(args.prompts_from).resolve())
    if args.count:
        spec.setdefault("prompts", {})["count"] = args.count
    if not (spec.get("prompts") or {}).get("run_dir") and not (spec.get("prompts") or {}).get("topics"):
        raise InputError("speed compare needs prompts: --prompts-from RUN_DIR or a spec with prompts.run_dir / topics")
    samp = spec.get("sampling") or {}
    max_tokens = args.max_tokens or samp.get("max_tokens")
    settings = CompareSettings(temperature=samp.get("temperature"), top_p=samp.get("top_p"),
                               max_tokens=int(max_tokens) if max_tokens else None,
                               seed=int((spec.get("prompts") or {}).get("seed", 0)),
                               reference_embedder=spec.get("reference_embedder", "all-minilm-l6-v2"))
    down = spec.get("downstream")
    if args.downstream is not None:
        settings.downstream_tasks = list(args.downstream)
    elif down:
        settings.downstream_tasks = list(down.get("tasks") or [])
        settings.downstream_epochs = float(down.get("epochs", 1.0))
    variants = variants_from_spec(spec)
    prompts = prompts_from_spec(spec, base)
    res = run_compare(variants, prompts, args.out, settings, log=lambda m: __import__("sys").stderr.write(m + "\n"))
    if args.json:
        print(json.dumps(res, indent=2, default=str))
    else:
        print(table_markdown(res))
        print(f"table: {res['paths']['table']}\nplot: {res['paths']['plot']}")
    return 0
