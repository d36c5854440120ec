"""``speed study CONFIG``: does the aligned small generator write data that trains a better embedder?

The config is a run config with a ``study`` section (``runtime.config.StudyConfig``). Steps, each
resumable (every model call is cached in ``work_dir/cache.sqlite``, every finished step or model is
kept, so a rerun after a kill pays nothing twice):

1. ``speed-run``: the config's pipeline up to ``run.until`` (the SPEED alignment: teacher seed data,
   junior SFT, teacher judge -> senior DPO, teacher revisions -> revisor SFT).
2. ``generate``: the same planned prompts (the synthesize stage's planning, sampling and generation
   path) through each variant -- untrained base, junior, senior, senior + revisor, teacher-direct -- in
   rounds until ``target`` final examples or ``max_prompts``. Final = schema-valid, not a MinHash
   duplicate of an earlier one (the ``dedup`` stage's settings) and not dropped by the export's
   false-negative rule (``export.false_negative_action``: its ``drop`` kinds); every row keeps its raw text
   and reason. The variants' final examples go to ``results_dir/data/VARIANT.parquet``.
3. ``judge``: the teacher scores a fixed random sample of each variant's examples on a 1-5 rubric.
4. ``select``: training settings of one embedder chosen on a held-out split of senior + revisor data
   (never on the evaluation tasks).
5. ``downstream``: per embedder, the untrained model and one model per variant (trained on equal
   counts: ``target``, and the largest count every variant reached when one fell short), evaluated
   on ``eval_tasks`` with per-item scores kept for paired bootstrap intervals.
6. ``scaling``: the best SPEED variant at five nested sizes.
7. ``cost``: teacher calls and tokens of the SPEED run and of teacher-direct generation (run right after
   ``judge``: with ``raw/generation.json`` it closes the generating half; a rerun, or a fresh clone holding
   only the committed ``results_dir``, then goes on with the embedders without the SPEED run's files).
8. ``filters`` (with ``study.filters``; issue 17): ``filters_variant``'s final examples through each named
   set of export filter keys (``speed.synth.filters``, the export's own code; teacher scores by the score
   stage's rubric when a row uses ``min_score``); each row's held-out in-batch MRR (a split of that variant's
   data no row trains on) picks the filters that beat no filter, whose combination is row ``chosen``; every
   row is then trained and evaluated at one equal count (``downstream.json`` keys ``EMB/filters:ROW/nN``).
8. ``tables``: ``speed.analysis.study_tables`` renders every table and plot from ``results_dir/raw``.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from ..errors import InputError
from ..runtime.rundir import RunDir
from .compare import _safe

SPEED_VARIANTS = ("base", "junior", "senior", "senior+revisor", "junior+revisor")


class Study:
    def __init__(self, config, log: Callable[[str], None] = print, from_data: str | None = None):
        from ..runtime.pipeline import default_run_dir

        self.config, self.sc, self.log, self.from_data = config, config.study, log, from_data
        self.work = Path(self.sc.work_dir)
        self.results = Path(self.sc.results_dir)
        self.raw = self.results / "raw"
        self.run_dir = Path(default_run_dir(config))
        self._embedder = None
        self.generation_key = self._generation_key()  # before any step (the pipeline fills in the config)
        files = []
        if from_data is not None:  # another study's committed data: copied in, so that these results stand alone
            src = Path(from_data)
            files = sorted(src.glob("*.parquet")) if src.is_dir() else []
            if not files:
                raise InputError(f"{src}: no variant data (*.parquet) here; expected e.g. docs/results/data")
        for d in (self.work, self.raw, self.results / "data"):
            d.mkdir(parents=True, exist_ok=True)
        if files and Path(from_data).resolve() != (self.results / "data").resolve():
            import shutil

            for f in files:
                shutil.copy(f, self.results / "data" / f.name)

    # -- bookkeeping ------------------------------------------------------------------------------------
    def read(self, name: str, default=None):
        p = self.raw / f"{name}.json"
        return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else default

    def write(self, name: str, obj) -> None:
        from ..io import atomic_write_text

        atomic_write_text(self.raw / f"{name}.json", json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n")

    @contextmanager
    def step(self, name: str):
        """Wall time of a step, summed over the attempts that worked on it (``raw/timing.json``)."""
        t0 = time.time()
        try:
            yield
        finally:
            timing = self.read("timing", {})
            entry = timing.setdefault(name, {"seconds": 0.0, "attempts": 0})
            entry["seconds"] = round(entry["seconds"] + time.time() - t0, 1)
            entry["attempts"] += 1
            self.write("timing", timing)

    def reference_embedder(self):
        if self._embedder is None:
            from ..runtime.config import ModelRef
            from ..synth.quality import load_embedder

            ref = self.config.models.get("reference_embedder") or ModelRef(backend="sentence-transformers",
                                                                           model="all-minilm-l6-v2")
            self._embedder = load_embedder(ref)
        return self._embedder

    # -- the whole study ----------------------------------------------------------------------------------
    def run(self) -> dict:
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self._provenance(started)
        if not self.from_data and self._generated_before():
            self.log(f"[study] generation, judge and cost done before ({self.raw / 'generation.json'}, data in "
                     f"{self.results / 'data'}): the SPEED run is not needed again")
        elif not self.from_data:
            with self.step("1 speed-run"):
                from ..runtime.pipeline import Pipeline

                Pipeline(self.config, self.run_dir).run(until=self.config.run.until, log=self.log)
            manifest = RunDir(self.run_dir).read_manifest()
            self.write("speed_run", {name: {"seconds": e.get("seconds"), "status": e.get("status"),
                                            "counts": {k: v for k, v in (e.get("counts") or {}).items()
                                                       if isinstance(v, (int, float, str))}}
                                     for name, e in manifest["stages"].items()})
            prompts = self._prompts()
            for v in self._variants():
                with self.step(f"2 generate: {v.name}"):
                    self._generate(v, prompts)
            with self.step("3 judge"):
                self._judge()
            self._fixes()
            with self.step("7 cost"):
                self._cost()
            self.write("generation", {"key": self.generation_key, "complete": True})
        if self._judge_outdated():  # the rubric prompt changed since the data was judged: judge it again
            with self.step("3 judge"):
                self._judge()
            if (self.run_dir / "ledger.jsonl").is_file():  # the cost account counts the judge's calls
                self._cost()
        data = self._load_data()
        with self.step("4 select"):
            chosen = self._select(data)
        with self.step("5 downstream"):
            self._downstream(data, chosen)
        with self.step("6 scaling"):
            self._scaling(data, chosen)
        if self.sc.filters:
            with self.step("8 filters"):
                self._filters(data, chosen)
        self._provenance(started, finished=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        from .study_tables import render

        return render(self.results)

    def _generation_key(self) -> str:
        """What steps 1-3 and 7 depend on: the whole config but the study's embedder-side keys."""
        from ..io import stable_hash

        cfg = self.config.to_dict()
        keep = ("target", "max_prompts", "chunk", "prompt_seed", "variants", "judge_sample", "judge_max_tokens", "seed")
        cfg["study"] = {k: v for k, v in (cfg.get("study") or {}).items() if k in keep}
        cfg.pop("source", None)
        return stable_hash(cfg)

    def _generated_before(self) -> bool:
        """Steps 1-3 and 7 are settled by the committed results alone (``raw/generation.json`` for this config,
        every variant's data file): a fresh clone continues with the embedders without the SPEED run's files."""
        gen = self.read("generation", {})
        return (gen.get("complete") is True and gen.get("key") == self.generation_key
                and all((self.results / "data" / f"{_safe(v)}.parquet").is_file() for v in self.sc.variants))

    def _provenance(self, started: str, finished: str | None = None) -> None:
        import platform

        src = Path(self.config.source) if self.config.source else None
        if src is not None and src.is_file():
            (self.raw / "config.yaml").write_text(src.read_text(encoding="utf-8"), encoding="utf-8")
        try:
            commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10).stdout.strip()
            dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                                        text=True, timeout=10).stdout.strip())
        except (OSError, subprocess.SubprocessError):
            commit, dirty = None, None
        from ..llm.engine_probe import cpu_signature

        cpu, _, flags = cpu_signature().partition("|")
        prov = self.read("provenance", {})
        prov.update({"commit": commit, "dirty": dirty, "config": str(src), "started_first": prov.get("started_first", started),
                     "last_started": started, "machine": {"cpu": cpu, "amx": "amx_tile" in flags.split(), "cores": _cores(),
                                 "python": platform.python_version()}})
        if finished:
            prov["finished"] = finished
        self.write("provenance", prov)

    # -- 2: generation --------------------------------------------------------------------------------------
    def _prompts(self):
        from ..io import read_jsonl
        from ..stages import artifact_path
        from .compare import plan

        tasks = list(read_jsonl(artifact_path(self.run_dir, "tasks")))
        topics = list(read_jsonl(artifact_path(self.run_dir, "sampled-topics")))
        syn = self.config.stage("synthesize")
        prompts = plan(self.sc.prompt_seed, self.sc.max_prompts, tasks, topics, dict(syn.proportions))
        if not prompts:
            raise InputError(f"{self.run_dir}: no tasks or topics to plan the study's prompts from")
        return prompts

    def _variants(self):
        from ..runtime.trained import effective_ref
        from .compare import Variant

        manifest = RunDir(self.run_dir).read_manifest()
        m = self.config.models

        def trained(role):
            ref = effective_ref(m[role], manifest, role, self.run_dir)
            if not ref.adapter:
                raise InputError(f"{self.run_dir}: no trained {role} (run the config through {self.config.run.until})")
            return ref

        make = {"base": lambda: Variant("base", m["senior"]), "junior": lambda: Variant("junior", trained("junior")),
                "senior": lambda: Variant("senior", trained("senior")),
                "senior+revisor": lambda: Variant("senior+revisor", trained("senior"), trained("revisor")),
                "junior+revisor": lambda: Variant("junior+revisor", trained("junior"), trained("revisor")),
                "teacher-direct": lambda: Variant("teacher-direct", m["teacher"])}
        return [make[name]() for name in self.sc.variants]

    def _settings(self):
        from .compare import CompareSettings

        syn = self.config.stage("synthesize")
        return CompareSettings(temperature=syn.temperature, top_p=syn.top_p, max_tokens=syn.max_tokens,
                               seed=self.config.run.seed, reference_embedder="")

    def _generate(self, v, prompts) -> None:
        from .compare import _ref_label, generate_variant, metrics

        done = self.read("variants", {})
        if v.name in done and done[v.name].get("complete"):
            self.log(f"[study] {v.name}: generated before ({done[v.name]['final']} final examples)")
            return
        sc, t0 = self.sc, time.time()
        n = min(sc.chunk, len(prompts))
        while True:
            self.log(f"[study] {v.name}: {n} prompts ...")
            rows = generate_variant(v, prompts[:n], self._settings(), self.work)
            self._finalize(rows)
            k = sum(r["final"] for r in rows)
            self.log(f"[study] {v.name}: {k} final examples from {n} prompts")
            if k >= sc.target or n >= len(prompts):
                break
            rate = (k + 1) / (n + 2)
            n = min(len(prompts), max(n + sc.chunk, math.ceil(sc.target / rate * 1.05)))
        from ..io import atomic_write_jsonl

        atomic_write_jsonl(self.work / "variants" / f"{v.name}.jsonl", rows)
        finals = [i for i, r in enumerate(rows) if r["final"]]
        used = rows[:finals[sc.target - 1] + 1] if len(finals) >= sc.target else rows
        final_rows = [r for r in used if r["final"]]
        self._write_data(v, final_rows)
        m = metrics(used, None)
        for kind, entry in m.items():  # the reference embedder's signals, as computed in _finalize
            sel = [r for r in used if r["valid"] and (kind == "all" or r["kind"] == kind)]
            margins = [r["margin"] for r in sel if r.get("margin") is not None]
            fns = [r["false_negative"] for r in sel if r.get("false_negative") is not None]
            entry["mean_margin"] = sum(margins) / len(margins) if margins else None
            entry["false_negative_rate"] = sum(fns) / len(fns) if fns else None
            entry["final"] = sum(r["final"] for r in sel)
        dropped = {}
        for r in used:
            if not r["final"]:
                reason = r["drop_reason"] or "llm_error"
                dropped[reason] = dropped.get(reason, 0) + 1
        done = self.read("variants", {})
        done[v.name] = {"complete": True, "generator": _ref_label(v.generator),
                        "revisor": _ref_label(v.revisor) if v.revisor else None,
                        "prompts_generated": len(rows), "prompts_used": len(used), "valid": sum(r["valid"] for r in used),
                        "final": len(final_rows), "reached_target": len(final_rows) >= sc.target,
                        "yield": len(final_rows) / len(used) if used else 0.0, "dropped": dropped, "metrics": m,
                        "seconds": round(time.time() - t0, 1)}
        self.write("variants", done)

    def _finalize(self, rows: list[dict]) -> None:
        """``final`` per row, as the pipeline would export it: valid, not an exact or near duplicate of an
        earlier valid row (the ``dedup`` stage's MinHash and settings), and not a likely false negative of a
        kind the export drops them for."""
        from ..synth.dedup import dedup
        from ..synth.quality import similarity_signals
        from .compare import _example

        valid = [r for r in rows if r["valid"]]
        examples = [_example(r) for r in valid]
        dup: dict[int, str] = {}
        if valid:
            d = self.config.stage("dedup")
            res = dedup([e.full_text() for e in examples], threshold=d.threshold, num_perm=d.num_perm,
                        shingle=d.shingle, shingle_size=d.shingle_size, bands=d.bands, rows=d.rows, exact=d.exact,
                        near=d.near, seed=self.config.run.seed)
            dup = {x.index: f"duplicate_{x.reason}" for x in res.duplicates}
        export = self.config.stage("export")
        sig = similarity_signals(examples, self.reference_embedder(), fn_rule=export) if valid else []
        for r in rows:
            r.update(final=False, drop_reason=None if r["valid"] else r["reason"], sim_pos=None, sim_neg=None,
                     margin=None, false_negative=None)
        for i, (r, s) in enumerate(zip(valid, sig)):
            r.update({k: s[k] for k in ("sim_pos", "sim_neg", "margin", "false_negative")})
            if i in dup:
                r["drop_reason"] = dup[i]
            elif s["false_negative"] and export.false_negative_action.get(r["kind"]) == "drop":
                r["drop_reason"] = "false_negative"
            else:
                r["final"] = True

    def _write_data(self, v, final_rows: list[dict]) -> None:
        from ..stages.export import write_parquet
        from .compare import _example, _ref_label

        out = []
        for r in final_rows:
            e = _example(r)
            out.append({"id": f"{v.name}-{r['prompt_id']}", "kind": e.kind, "task": e.task, "query": e.query,
                        "positive": e.positive, "negative": e.negative or "", "topic": e.topic,
                        "model": _ref_label(v.generator) + (f" + revisor {_ref_label(v.revisor)}" if v.revisor else ""),
                        "revised": bool(r["revised"]), "length_ok": _all_true(r["length_ok"]),
                        "sim_pos": r["sim_pos"], "sim_neg": r["sim_neg"], "margin": r["margin"],
                        "false_negative": r["false_negative"]})
        write_parquet(self.results / "data" / f"{_safe(v.name)}.parquet", out)

    def _load_data(self) -> dict[str, list[dict]]:
        import pyarrow.parquet as pq

        data = {}
        for name in self.sc.variants:
            p = self.results / "data" / f"{_safe(name)}.parquet"
            if not p.is_file():
                raise InputError(f"{p}: missing (run the study's generation first: speed study CONFIG)")
            data[name] = pq.read_table(p).to_pylist()
        return data

    def _fixes(self) -> None:
        """Before/after counts of the pipeline fixes this study prompted, on this study's own outputs:
        the teacher's raw brainstorm answers re-read without the fix, and each variant's rows."""
        from ..io import read_jsonl
        from ..prompts.json_repair import extract_json
        from ..prompts.parse import _TASK_NUMBER, _markdown_items, task_problem

        per = self.config.stage("brainstorm").tasks_per_topic
        numbered = questions = answers = kept_before = 0
        examples: dict[str, list[str]] = {"numbered": [], "question": []}
        for shard in sorted((self.run_dir / "brainstorm" / "shards").glob("part-*.jsonl")):
            for a in read_jsonl(shard):
                if not a.get("raw"):
                    continue
                answers += 1
                val, reason, _, _ = extract_json(a["raw"], "list")
                items = _markdown_items(a["raw"]) if reason == "no_json" else val
                if isinstance(items, dict):
                    lists = [v for v in items.values() if isinstance(v, list)]
                    items = lists[0] if len(lists) == 1 else []
                items = [" ".join(t.split()) for t in (items or []) if isinstance(t, str) and t.strip()][:per]
                kept_before += len(items)
                for t in items:
                    if _TASK_NUMBER.match(t):
                        numbered += 1
                        examples["numbered"].append(t)
                    if task_problem(t):
                        questions += 1
                        examples["question"].append(t)
        # off-topic tasks (measured, not filtered): a task nearer to another sampled topic than to its own
        from ..stages import artifact_path

        tasks = list(read_jsonl(artifact_path(self.run_dir, "tasks")))
        topics = {t["id"]: t["text"] for t in read_jsonl(artifact_path(self.run_dir, "sampled-topics"))}
        off, off_examples = 0, []
        if tasks and len(topics) > 1:
            ids = list(topics)
            emb = self.reference_embedder()
            te = emb.encode([t["task"] for t in tasks], normalize_embeddings=True, show_progress_bar=False)
            pe = emb.encode([topics[i] for i in ids], normalize_embeddings=True, show_progress_bar=False)
            best = (te @ pe.T).argmax(axis=1)
            for t, b in zip(tasks, best):
                if ids[int(b)] != t["topic_id"]:
                    off += 1
                    off_examples.append(f"{t['topic']} -> {t['task']}")
        rows = {}
        for name in self.sc.variants:
            p = self.work / "variants" / f"{name}.jsonl"
            if p.is_file():
                from ..prompts.parse import parse_example

                rs = list(read_jsonl(p))
                looped = [r for r in rs if r["raw"] and r["valid"] and "repeated_keys_first_kept" in
                          parse_example(r["kind"], r["raw"], r["attributes"]).repairs]
                rows[name] = {"rows": len(rs), "repeated_keys_kept": len(looped),
                              "repeated_keys_final": sum(r["final"] for r in looped),
                              "classification": sum(r["kind"] == "classification" for r in rs),
                              "too_short": sum(r["reason"] == "too_short" for r in rs),
                              "sts_valid": sum(r["kind"] == "sts" and r["valid"] for r in rs),
                              "sts_false_negative": sum(r["kind"] == "sts" and r["drop_reason"] == "false_negative"
                                                        for r in rs)}
        self.write("fixes", {"brainstorm": {"answers": answers, "tasks_kept_before": kept_before,
                                            "numbered": numbered, "questions": questions,
                                            "examples": {k: v[:3] for k, v in examples.items()},
                                            "tasks": len(tasks), "nearer_another_topic": off,
                                            "off_topic_examples": off_examples[:3]},
                             "variants": rows})

    # -- 3: the teacher's rubric -------------------------------------------------------------------------------
    def _rubric(self, rows: list[dict], keys: tuple[str, ...], max_tokens: int, stage: str, desc: str) -> list[dict]:
        """The teacher's rubric (``keys``) for each row, temperature 0, cached and counted in the study's ledger:
        per row {id, kind, scores (or None), raw, reason (None when usable)}."""
        from ..llm.cache import RequestCache
        from ..llm.client import LLMClient
        from ..llm.ledger import Ledger
        from ..prompts.parse import parse_rubric
        from ..prompts.rubric import rubric_messages
        from ..stages.generation import GenerationConfig, request

        sampling = GenerationConfig(temperature=0.0, max_tokens=max_tokens).sampling()
        reqs = [request(rubric_messages(r["kind"], r["task"], r["query"], r["positive"], r["negative"] or None,
                                        keys=keys), sampling, seed=self.sc.seed) for r in rows]
        cache, ledger = RequestCache(self.work / "cache.sqlite"), Ledger(self.work / "ledger.jsonl")
        client = LLMClient(self.config.models["teacher"], role="teacher", stage=stage, cache=cache, ledger=ledger)
        try:
            self.log(f"[study] {desc} ({len(reqs)} examples) ...")
            comps = client.generate(reqs, desc=desc) if reqs else []
        finally:
            client.close()
            cache.close()
        items = []
        for r, c in zip(rows, comps):
            p = parse_rubric(c[0].text, keys) if c[0].ok else None
            items.append({"id": r["id"], "kind": r["kind"], "scores": p.value if p and p.ok else None,
                          "raw": c[0].text, "reason": None if p and p.ok else (p.reason if p else "llm_error")})
        return items

    def _judge(self) -> None:
        from ..prompts.rubric import RUBRIC_KEYS

        if self.sc.judge_sample == 0:
            return
        data = self._load_data()
        done = self.read("judge", {})
        if done.get("prompt") != _rubric_prompt_id():
            done = {"prompt": _rubric_prompt_id()}
        for name, rows in data.items():
            if name in done:
                continue
            sample = random.Random(f"{self.sc.seed}-judge-{name}").sample(rows, min(self.sc.judge_sample, len(rows)))
            done[name] = self._rubric(sample, RUBRIC_KEYS, self.sc.judge_max_tokens, f"study:judge:{name}",
                                      f"judge {name}")
            self.write("judge", done)

    def _judge_outdated(self) -> bool:
        judge = self.read("judge")
        return self.sc.judge_sample > 0 and judge is not None and judge.get("prompt") != _rubric_prompt_id()

    # -- 4-6: embedders ---------------------------------------------------------------------------------------
    def _train_config(self, name: str, extra: dict | None = None):
        from ..runtime.configschema import from_dict
        from ..stages.train_embedder import Config

        spec = self.sc.embedders[name]
        return from_dict(Config, {**(spec.get("train") or {}), **(extra or {})}, f"study.embedders.{name}.train")

    def _select(self, data) -> dict:
        """Per embedder, the extra training settings: the held-out winner for ``select.embedder``."""
        sel = self.sc.select or {}
        chosen = {name: {} for name in self.sc.embedders}
        cands = sel.get("candidates") or []
        if not cands or sel.get("embedder") not in self.sc.embedders:
            return chosen
        name = sel["embedder"]
        done = self.read("select", {})
        key = json.dumps({"candidates": cands, "holdout": sel.get("holdout", 0.2)}, sort_keys=True)
        if done.get("key") != key:
            rows = _ordered(data.get("senior+revisor") or next(iter(data.values())), self.sc.seed)
            n_hold = min(len(rows) - 1, max(1, round(len(rows) * float(sel.get("holdout", 0.2)))))
            train, held = rows[n_hold:], rows[:n_hold]
            results = []
            for i, extra in enumerate(cands):
                cfg = self._train_config(name, extra)
                self.log(f"[study] select: {name} candidate {i + 1}/{len(cands)} {extra} ...")
                mdir = self.work / "select" / f"c{i}"
                summary = _train(self.sc.embedders[name]["model"], train, mdir, cfg, self.sc.seed)
                results.append({"settings": extra, "heldout": heldout_retrieval(summary["model"], held),
                                "train_loss": summary.get("train_loss"), "steps": summary.get("steps")})
                _rm(mdir)
            best = max(range(len(results)), key=lambda i: results[i]["heldout"]["mrr"])
            done = {"key": key, "embedder": name, "train_rows": len(train), "heldout_rows": len(held),
                    "candidates": results, "chosen": best}
            self.write("select", done)
        chosen[name] = done["candidates"][done["chosen"]]["settings"]
        return chosen

    def _downstream(self, data, chosen) -> None:
        """Per embedder: untrained, and every variant in each of ``ablation_comparisons``."""
        comparisons = ablation_comparisons({name: len(rows) for name, rows in data.items()}, self.sc.target)
        self.write("ablation", {"target": self.sc.target, "embedders": list(self.sc.embedders),
                                "comparisons": comparisons})
        for emb in self.sc.embedders:
            self._evaluate(emb, "untrained", [], chosen)
            for comp in comparisons.values():
                for v, n in comp.items():
                    self._evaluate(emb, v, _ordered(data[v], self.sc.seed)[:n], chosen)

    def _scaling(self, data, chosen) -> None:
        if not self.sc.embedders:
            return
        emb = self.sc.scaling_embedder or next(iter(self.sc.embedders))
        results = self.read("downstream", {})
        cands = [v for v in data if v in SPEED_VARIANTS and f"{emb}/{v}/n{min(self.sc.target, len(data[v]))}" in results]
        if not cands:
            return
        best = max(cands, key=lambda v: results[f"{emb}/{v}/n{min(self.sc.target, len(data[v]))}"]["average"])
        rows = _ordered(data[best], self.sc.seed)
        n, common = len(rows), min(len(r) for r in data.values())
        # five sizes, geometric up to all of it; from the equal-count comparison's size when that is a sensible
        # start (its model is then shared), else from n/16
        lo = common if 8 <= common <= n // 4 else max(1, round(n / 16))
        sizes = self.sc.scaling_sizes or sorted({max(1, round(lo * (n / lo) ** (k / 4))) for k in range(5)})
        sizes = [n for n in sizes if n <= len(rows)]
        for n in sizes:
            self._evaluate(emb, best, rows[:n], chosen)
        self.write("scaling", {"embedder": emb, "variant": best, "sizes": sizes, "target_score": self.sc.target_score,
                               "chosen_by": "best decoder dev-suite average among the SPEED variants"})

    # -- 8: the export's filters (issue 17) -----------------------------------------------------------------
    def _scores(self, rows: list[dict]) -> dict[str, dict | None]:
        """The teacher's ``score`` rubric (the score stage's prompt, four criteria) for every row: id ->
        {score, scores} or None (an unusable verdict). Cached and counted in the study's ledger."""
        from ..prompts.rubric import SCORE_KEYS, rubric_mean

        items = self._rubric(rows, SCORE_KEYS, self.sc.score_max_tokens, "study:score", "filters: teacher score")
        return {it["id"]: {"scores": it["scores"], "score": rubric_mean(it["scores"])} if it["scores"] else None
                for it in items}

    def _filters(self, data, chosen) -> None:
        """Issue 17: ``filters_variant``'s final examples through each filter row (the export's own filter code,
        ``speed.synth.filters``), then the combination of the filters that beat no filter on held-out synthetic
        data (the selection's held-out split and metric, never the evaluation tasks), every row trained and
        evaluated at one equal count on every embedder."""
        from ..runtime.configschema import from_dict
        from ..synth.filters import FilterSettings, apply

        name = self.sc.filters_variant
        if not data.get(name):
            self.log(f"[study] filters: no data for {name}; skipped")
            return
        rows = _ordered(data[name], self.sc.seed)
        n_hold = min(len(rows) - 1, max(1, round(len(rows) * float((self.sc.select or {}).get("holdout", 0.2)))))
        held, pool = rows[:n_hold], rows[n_hold:]  # held out of every filter row's training data
        specs = {k: dict(v or {}) for k, v in self.sc.filters.items()}
        scores = self._scores(pool) if any(v.get("min_score") is not None for v in specs.values()) else {}
        pool = [{**r, **(scores.get(r["id"]) or {"score": None, "scores": None})} for r in pool]

        def run(spec: dict):
            return apply([dict(r) for r in pool], from_dict(FilterSettings, spec, "study.filters"),
                         model=self.reference_embedder())

        out = self.read("filters", {})
        key = json.dumps({"filters": specs, "variant": name, "rows": [r["id"] for r in rows]}, sort_keys=True)
        if out.get("key") != key:
            out = {"key": key, "variant": name, "heldout_rows": len(held), "rows": {}}
        sel_emb = (self.sc.select or {}).get("embedder") or next(iter(self.sc.embedders))
        results = {k: run(v) for k, v in specs.items()}
        n = min(len(r.rows) for r in results.values())
        if n < 8:
            self.log(f"[study] filters: a filter row keeps only {n} examples; too few to train on, skipped")
            out.update(n=n, rows={k: {"spec": specs[k], "kept": len(r.rows), "funnel": r.funnel}
                                  for k, r in results.items()})
            self.write("filters", out)
            return
        for k, res in results.items():
            if k not in out["rows"]:
                out["rows"][k] = {"spec": specs[k], "kept": len(res.rows), "funnel": res.funnel,
                                  "heldout": self._heldout(sel_emb, res.rows[:n], held, chosen, k)}
                self.write("filters", out)
        base = out["rows"]["none"]["heldout"]["mrr"]
        winners = [k for k in specs if k != "none" and out["rows"][k]["heldout"]["mrr"] > base]
        combo: dict = {}
        for k in winners:
            combo.update(specs[k])
        if len(winners) >= 2:  # one winner alone is its own row already
            results["chosen"] = res = run(combo)
            if "chosen" not in out["rows"]:
                out["rows"]["chosen"] = {"spec": combo, "kept": len(res.rows), "funnel": res.funnel, "of": winners,
                                         "heldout": self._heldout(sel_emb, res.rows[:min(n, len(res.rows))], held,
                                                                  chosen, "chosen")}
        n = min(len(r.rows) for r in results.values())  # every row, the combination included, at one count
        out.update(chosen=winners, chosen_spec=combo, n=n,
                   chosen_by=f"held-out in-batch MRR ({sel_emb}) on {len(held)} {name} examples no row trains on")
        self.write("filters", out)
        for emb in self.sc.embedders:
            for k, res in results.items():
                self._evaluate(emb, f"filters:{k}", _export_rows(res.rows[:n]), chosen)

    def _heldout(self, emb: str, rows: list[dict], held: list[dict], chosen, label: str) -> dict:
        cfg = self._train_config(emb, chosen.get(emb))
        self.log(f"[study] filters: {label}: held-out check on {len(rows)} examples ...")
        mdir = self.work / "filters" / _safe(label)
        summary = _train(self.sc.embedders[emb]["model"], _export_rows(rows), mdir, cfg, self.sc.seed)
        res = {**heldout_retrieval(summary["model"], held), "train_rows": len(rows)}
        _rm(mdir)
        return res

    def _evaluate(self, emb: str, variant: str, rows: list[dict], chosen) -> None:
        """Train (unless untrained) and evaluate one embedder; kept in ``raw/downstream.json`` by key."""
        from ..evaluate.runner import evaluate_model
        from ..io import stable_hash
        from ..train.embedder import untrained_embedder

        key = f"{emb}/{variant}" + ("" if variant == "untrained" else f"/n{len(rows)}")
        cfg = self._train_config(emb, chosen.get(emb))
        model = self.sc.embedders[emb]["model"]
        settings = stable_hash({"model": model, "train": _as_dict(cfg), "seed": self.sc.seed,
                                "tasks": self.sc.eval_tasks, "corpus": self.sc.retrieval_corpus,
                                "rows": [r["id"] for r in rows]})[:16]
        results = self.read("downstream", {})
        if key in results and results[key].get("settings") == settings:
            return
        mdir = self.work / "models" / key.replace("/", "_")
        t0 = time.time()
        if variant == "untrained":
            self.log(f"[study] {key}: saving the untrained model ...")
            path, summary = untrained_embedder(model, mdir, cfg), {}
        else:
            self.log(f"[study] {key}: training on {len(rows)} examples ...")
            summary = _train(model, rows, mdir, cfg, self.sc.seed)
            path = summary["model"]
        t1 = time.time()
        self.log(f"[study] {key}: evaluating ...")
        res = evaluate_model(str(path), self.eval_tasks() or None, keep_items=True)
        t2 = time.time()
        results = self.read("downstream", {})
        results[key] = {"embedder": emb, "variant": variant, "n": len(rows), "settings": settings,
                        "train": {k: summary.get(k) for k in ("steps", "epochs", "train_loss", "first_loss",
                                                             "final_loss", "lora", "triplets", "pairs")},
                        "hyperparameters": {k: v for k, v in _as_dict(cfg).items() if v is not None},
                        "instruction": res["instruction"], "average": res["average"],
                        "tasks": {t: {"main_score": r["main_score"], "metric": r["metric"], "items": r.get("items")}
                                  for t, r in res["results"].items()},
                        "train_seconds": round(t1 - t0, 1), "eval_seconds": round(t2 - t1, 1)}
        self.write("downstream", results)
        self.log(f"[study] {key}: average {res['average']:.4f} (train {t1 - t0:.0f}s, eval {t2 - t1:.0f}s)")
        _rm(mdir)

    def eval_tasks(self) -> list[str]:
        """``eval_tasks``, a retrieval task's corpus cut to ``retrieval_corpus`` documents (every judged one,
        then others drawn with the study's seed) in a copy under ``work_dir/eval`` (stated in its name)."""
        cap = self.sc.retrieval_corpus
        if not cap:
            return list(self.sc.eval_tasks)
        from ..evaluate.tasks import discover, load_tasks
        from ..io import atomic_write_jsonl, atomic_write_text

        out = []
        for folder in discover(self.sc.eval_tasks):
            meta = json.loads((folder / "task.json").read_text(encoding="utf-8"))
            if meta.get("type") != "retrieval":
                out.append(str(folder))
                continue
            dest = self.work / "eval" / f"{folder.name}-{cap}"
            if not (dest / "task.json").is_file():
                [task] = load_tasks([folder])
                d = task.data
                judged = sorted({doc for q in d["qrels"].values() for doc in q})
                others = sorted(set(d["corpus"]) - set(judged))
                random.Random(self.sc.seed).shuffle(others)
                keep = set(judged + others[:max(0, cap - len(judged))])
                atomic_write_jsonl(dest / "corpus.jsonl", ({"_id": i, **d["corpus"][i]} for i in d["corpus"] if i in keep))
                (dest / "qrels").mkdir(parents=True, exist_ok=True)
                for name in ("queries.jsonl", f"qrels/{task.split}.tsv"):
                    atomic_write_text(dest / name, (folder / name).read_text(encoding="utf-8"))
                meta.update(name=f"{meta['name']}-{cap}", note=f"{meta['name']} with its corpus cut to {len(keep)} "
                            f"documents (all {len(judged)} judged, the rest drawn with seed {self.sc.seed}), by speed study")
                atomic_write_text(dest / "task.json", json.dumps(meta, indent=2) + "\n")
            out.append(str(dest))
        return out

    # -- 7: cost --------------------------------------------------------------------------------------------
    def _cost(self) -> None:
        from ..llm.ledger import iter_ledger, summarize

        def tally(path: Path, key) -> dict:
            """Calls and tokens that reached a model (``ledger.summarize``), per stage and role."""
            rows = list(iter_ledger(path)) if path.is_file() else []
            out: dict = {}
            for stage in sorted({r["stage"] for r in rows}):
                for role, models in summarize(rows, stage).items():
                    for model, t in models.items():
                        if t["calls"]:
                            out[key(stage, role)] = {"role": role, "model": model, "calls": t["calls"],
                                                     "prompt_tokens": t["prompt_tokens"],
                                                     "completion_tokens": t["completion_tokens"], "errors": t["errors"]}
            return out

        variants = self.read("variants", {})
        self.write("cost", {"speed_run": tally(self.run_dir / "ledger.jsonl", lambda stage, role: f"{stage}:{role}"),
                            "study": tally(self.work / "ledger.jsonl", lambda stage, role: stage),
                            "final_examples": {k: v["final"] for k, v in variants.items()},
                            "prompts_used": {k: v["prompts_used"] for k, v in variants.items()},
                            "prompts_generated": {k: v["prompts_generated"] for k, v in variants.items()}})


# -- helpers -------------------------------------------------------------------------------------------------
def ablation_comparisons(counts: dict[str, int], target: int) -> dict[str, dict[str, int]]:
    """The downstream comparisons: title -> {variant: examples}. Every variant at ``target`` (a variant short
    of it: all it has); when one fell short, every variant at the most they all reached; and, when the
    others all reached more than the variant that fell shortest (the untrained base, typically) but not the
    target, those others again at the most they all reached."""
    comparisons = {f"target: {target} examples per variant": {v: min(target, c) for v, c in counts.items() if c > 0}}
    common = min(counts.values()) if counts else 0
    if 0 < common < target:
        comparisons[f"equal counts: {common} examples per variant (the most every variant reached)"] = \
            {v: common for v in counts}
        weakest = min(counts, key=lambda v: (counts[v], v))
        rest = {v: c for v, c in counts.items() if v != weakest}
        common2 = min(rest.values()) if len(rest) >= 2 else 0
        if common < common2 < target:
            comparisons[f"equal counts without {weakest}: {common2} examples per variant (the most every "
                        f"other variant reached)"] = {v: common2 for v in rest}
    return comparisons


def _rubric_prompt_id() -> str:
    """The rubric prompt's identity (its text for a fixed example): judged samples are kept while it holds."""
    from ..io import stable_hash
    from ..prompts.rubric import RUBRIC_KEYS, rubric_messages

    return stable_hash(rubric_messages("kind", "task", "query", "positive", "negative", keys=RUBRIC_KEYS))[:16]


def _export_rows(rows: list[dict]) -> list[dict]:
    """Filtered rows as the trainer reads them (the export's columns, a mined negative included)."""
    return [{k: r.get(k) for k in ("id", "kind", "task", "query", "positive", "negative", "mined_negative")}
            for r in rows]


def heldout_retrieval(model_path: str, rows: list[dict]) -> dict:
    """In-batch retrieval on held-out synthetic examples: each query ranks its own positive among every
    held-out positive and negative (cosine); MRR and top-1 accuracy."""
    import numpy as np

    from ..train.embedder import format_query, load_trained

    model, info = load_trained(model_path, device="cpu")
    template = info.get("template") if info.get("instruction") else None
    queries = [format_query(r["query"], r["task"], template) for r in rows]
    docs = [r["positive"] for r in rows] + [r["negative"] for r in rows if r.get("negative")]
    q = model.encode(queries, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    d = model.encode(docs, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    sims = q @ d.T
    ranks = np.array([int((sims[i] > sims[i, i]).sum()) + 1 for i in range(len(rows))])
    return {"mrr": float(np.mean(1.0 / ranks)), "top1": float(np.mean(ranks == 1)), "queries": len(rows),
            "documents": len(docs)}


def _train(model: str, rows: list[dict], mdir: Path, cfg, seed: int) -> dict:
    from ..train.embedder import train_embedder

    summary = train_embedder(model, rows, mdir, cfg, seed)
    summary.pop("history", None)
    return summary


def _ordered(rows: list[dict], seed: int) -> list[dict]:
    """A variant's examples in one seeded order: nested subsets (scaling) and equal-count subsets share it."""
    rows = sorted(rows, key=lambda r: r["id"])
    random.Random(seed).shuffle(rows)
    return rows


def _as_dict(cfg) -> dict:
    import dataclasses

    return dataclasses.asdict(cfg)


def _all_true(flags) -> bool | None:
    vals = [v for v in (flags or {}).values() if v is not None]
    return all(vals) if vals else None


def _rm(path: Path) -> None:
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _cores() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
