"""Benchmark: synthesis throughput of the local engines, for a trained generator and for the teacher.

    .venv/bin/python benchmarks/synthesis.py [--run-dir runs/demo] [--models generator,teacher]
        [--prompts 16] [--teacher-prompts 8] [--slots 8] [--threads 2] [--json out.json]

Models, from a finished run (``make demo`` leaves one in runs/demo):
- **generator**: the trained senior (SmolLM2-135M-Instruct + the DPO LoRA adapter of ``train-senior``);
- **teacher**: the run's teacher (Qwen2.5-Coder-1.5B-Instruct Q4_K_M), asked the same synthesis
  prompts (teacher-direct generation, the costliest row of any ablation).

Every side gets the same synthesis prompts (planned from the run's brainstorm tasks as
``synthesize`` plans them, with a salt of their own), the same sampling (the run's ``synthesize``
temperature, top_p and max_tokens), the same parser (an example counts when it parses and
validates as its kind), the same threads, and an empty request cache. Sides:

- **server**: ``LLMClient`` on ``engine: server``: the managed ``llama-server`` with ``--slots``
  parallel slots and continuous batching (what a ``speed run`` stage runs now);
- **in-process**: ``LLMClient`` on ``engine: in-process``: llama-cpp-python, one sample at a time
  (the engine before this benchmark's issue);
- **transformers**: transformers ``AutoModelForCausalLM`` (+ PEFT for the generator),
  ``model.generate`` on one prompt at a time (how the paper's public release runs its generators),
  on the first ``--transformers-prompts`` prompts (the fp32 1.5B teacher makes ~2 tokens/s here);
- **raw**: llama.cpp's own ``llama-batched-bench`` on the same GGUF (and adapter), the same slot
  count, prompt and generation lengths (the server side's mean prompt and completion tokens): the
  ceiling of this machine. No parsing; its aggregate tokens/s is compared with the server's.

Prints, per model, valid examples per minute and tokens per second for each side, and the ratios
against their targets: server / in-process (teacher >= 2.5x, generator >= 1.3x), server /
transformers (generator >= 5x), server tokens/s / raw (both >= 80%).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

TARGETS = {"generator": {"in-process": 1.3, "transformers": 5.0, "raw": 0.8},
           "teacher": {"in-process": 2.5, "raw": 0.8}}


def plan(run_dir: Path, n: int, cfg):
    from speed.io import read_jsonl
    from speed.synth.planning import plan_prompts

    from speed.stages import artifact_path, provider

    tasks = list(read_jsonl(artifact_path(run_dir, "tasks")))
    topics = list(read_jsonl(artifact_path(run_dir, "sampled-topics")))
    proportions = cfg.stage(provider("synthetic-examples").name).proportions
    return plan_prompts(cfg.run.seed, "bench-synthesis", n, proportions, tasks, topics)


def model_ref(run_dir: Path, cfg, model: str, threads: int):
    from speed.runtime.rundir import RunDir
    from speed.runtime.trained import effective_ref

    if model == "teacher":
        ref = cfg.model("teacher")
    else:
        ref = effective_ref(cfg.model("senior"), RunDir(run_dir).read_manifest(), "senior", run_dir)
    return dataclasses.replace(ref, backend="llamacpp", n_threads=threads)


def engine_side(ref, engine: str, slots: int, prompts, scfg) -> dict:
    from speed.llm.cache import RequestCache
    from speed.llm.client import LLMClient
    from speed.llm.ledger import Ledger
    from speed.prompts import example_schema, parse_example
    from speed.stages.generation import request

    ref = dataclasses.replace(ref, engine=engine, slots=slots)
    with tempfile.TemporaryDirectory() as tmp:
        client = LLMClient(ref, role="bench", stage="bench", cache=RequestCache(Path(tmp) / "c.sqlite"),
                           ledger=Ledger(Path(tmp) / "ledger.jsonl"), show_progress=False)
        # load the model (and start the server) outside the timed part; the other sides warm up too
        client.generate([request(prompts[0].messages, scfg.sampling(), seed=0, schema=example_schema(prompts[0].kind))])
        reqs = [request(p.messages, scfg.sampling(), seed=1000 + i, schema=example_schema(p.kind))
                for i, p in enumerate(prompts)]
        t0 = time.perf_counter()
        outs = client.generate(reqs)
        secs = time.perf_counter() - t0
        describe = client.backend.describe()
        client.close()
    comps = [c[0] for c in outs]
    valid = sum(bool(c.ok and parse_example(p.kind, c.text, p.attributes).ok) for p, c in zip(prompts, comps))
    return {"side": engine, "label": f"{engine}: {describe.split(', at http')[0]}", "samples": len(prompts),
            "seconds": secs, "valid": valid, "errors": sum(not c.ok for c in comps),
            "completion_tokens": sum(c.completion_tokens for c in comps),
            "prompt_tokens": sum(c.prompt_tokens for c in comps)}


def transformers_side(run_dir: Path, model: str, cfg, prompts, scfg, threads: int) -> dict:
    import torch
    import transformers

    from speed.models import resolve_model
    from speed.prompts import parse_example
    from speed.runtime.rundir import RunDir
    from speed.stages import trainer_of
    from speed.train.common import trained_generator

    torch.set_num_threads(threads)
    if model == "teacher":
        base, adapter = resolve_model(cfg.model("teacher").model, want="hf"), None
    else:
        gen = trained_generator(RunDir(run_dir), trainer_of("senior").name)
        base, adapter = gen.base_path, gen.adapter
    tok = transformers.AutoTokenizer.from_pretrained(base)
    net = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    if adapter:
        import peft

        net = peft.PeftModel.from_pretrained(net, adapter)
    net.eval()
    s = scfg.sampling()

    def one(p, seed):
        torch.manual_seed(seed)
        ids = tok.apply_chat_template(p.messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = net.generate(**ids, do_sample=s.temperature > 0, temperature=s.temperature or None,
                               top_p=s.top_p, max_new_tokens=s.max_tokens, pad_token_id=tok.eos_token_id)
        new = out[0, ids["input_ids"].shape[1]:]
        return tok.decode(new, skip_special_tokens=True), int(new.shape[0]), int(ids["input_ids"].shape[1])

    one(prompts[0], 0)  # warm-up
    t0 = time.perf_counter()
    outs = [one(p, 1000 + i) for i, p in enumerate(prompts)]
    secs = time.perf_counter() - t0
    valid = sum(parse_example(p.kind, text, p.attributes).ok for p, (text, _, _) in zip(prompts, outs))
    return {"side": "transformers", "label": f"transformers generate, one prompt at a time ({Path(base).name}"
            f"{' + PEFT' if adapter else ''}, fp32)", "samples": len(prompts), "seconds": secs, "valid": valid,
            "errors": 0, "completion_tokens": sum(n for _, n, _ in outs), "prompt_tokens": sum(n for _, _, n in outs)}


def raw_side(ref, slots: int, threads: int, pp: int, tg: int) -> dict:
    """llama-batched-bench at ``slots`` parallel sequences of ``pp`` prompt and ``tg`` generated tokens."""
    from speed.llm.backends.llamacpp_server_backend import server_spec
    from speed.llm.llama_server import find_binary

    spec, adapter = server_spec(dataclasses.replace(ref, slots=slots))  # the same GGUF, adapter and repack
    argv = [find_binary(name="llama-batched-bench"), "-m", spec.model, "-c", str(slots * (pp + tg) + 64),
            "-b", str(spec.n_batch), "-ub", str(spec.n_batch), "-npp", str(pp), "-ntg", str(tg), "-npl", str(slots),
            "-t", str(threads), "-tb", str(threads), "--output-format", "jsonl"]
    if adapter:
        argv += ["--lora", adapter]
    if not spec.repack:
        argv.append("-nr")
    out = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not rows:
        raise SystemExit(f"llama-batched-bench failed ({out.returncode}): {out.stderr[-1500:]}")
    r = rows[-1]
    return {"side": "raw", "label": f"llama-batched-bench, {slots} sequences x (pp {pp} + tg {tg})"
            f"{', -nr' if not spec.repack else ''}", "samples": slots, "seconds": r["t"], "valid": None,
            "errors": 0, "completion_tokens": slots * tg, "prompt_tokens": slots * pp,
            "tokens_per_s": r["speed"], "gen_tokens_per_s": r["speed_tg"], "pp_tokens_per_s": r["speed_pp"]}


def finish(side: dict) -> dict:
    secs = side["seconds"]
    side.setdefault("tokens_per_s", (side["prompt_tokens"] + side["completion_tokens"]) / secs)
    side["completion_tokens_per_s"] = side["completion_tokens"] / secs
    side["samples_per_min"] = 60.0 * side["samples"] / secs
    side["valid_per_min"] = None if side["valid"] is None else 60.0 * side["valid"] / secs
    return side


def bench_model(args, run_dir: Path, cfg, model: str, prompts, scfg) -> dict:
    ref = model_ref(run_dir, cfg, model, args.threads)
    sides: dict[str, dict] = {}
    wanted = [s.strip() for s in args.sides.split(",") if s.strip()]
    print(f"\n== {model}: {ref.model}{' + ' + Path(ref.adapter).name if ref.adapter else ''}, {len(prompts)} prompts",
          flush=True)
    for side in wanted:
        if side in ("server", "in-process"):
            r = engine_side(ref, side, args.slots, prompts, scfg)
        elif side == "transformers":
            n = args.transformers_prompts if model == "generator" else args.teacher_transformers_prompts
            if n <= 0:
                continue
            r = transformers_side(run_dir, model, cfg, prompts[:n], scfg, args.threads)
        elif side == "raw":
            srv = sides.get("server")
            if srv is None:
                continue
            pp = round(srv["prompt_tokens"] / srv["samples"])
            tg = max(1, round(srv["completion_tokens"] / srv["samples"]))
            r = raw_side(ref, args.slots, args.threads, pp, tg)
        else:
            raise SystemExit(f"unknown side {side!r} (server, in-process, transformers, raw)")
        sides[side] = finish(r)
        vpm = "" if r["valid_per_min"] is None else f"{r['valid']}/{r['samples']} valid, {r['valid_per_min']:.1f} valid/min, "
        print(f"  {r['label']}: {r['seconds']:.1f} s, {r['samples_per_min']:.1f} samples/min, {vpm}"
              f"{r['tokens_per_s']:.1f} tok/s in all ({r['completion_tokens_per_s']:.1f} generated)", flush=True)
    ratios = {}
    srv = sides.get("server")
    if srv:
        for other, target in TARGETS[model].items():
            o = sides.get(other)
            if not o:
                continue
            if other == "raw":
                ratio, what = srv["tokens_per_s"] / o["tokens_per_s"], "tokens/s"
            else:
                ratio = (srv["valid_per_min"] / o["valid_per_min"]) if o["valid_per_min"] else float("inf")
                what = "valid examples/min"
            samples = srv["samples_per_min"] / o["samples_per_min"]
            ratios[other] = {"ratio": ratio, "samples_ratio": samples, "target": target, "met": ratio >= target}
            print(f"  server / {other}: {ratio:.2f}x {what} ({samples:.2f}x samples/min); target >= {target}x: "
                  f"{'met' if ratio >= target else 'MISSED'}", flush=True)
    return {"model": ref.model, "adapter": ref.adapter, "sides": sides, "ratios": ratios}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default=str(ROOT / "runs" / "demo"))
    ap.add_argument("--models", default="generator,teacher")
    ap.add_argument("--sides", default="server,in-process,transformers,raw")
    ap.add_argument("--prompts", type=int, default=16, help="prompts for the generator")
    ap.add_argument("--teacher-prompts", type=int, default=8)
    ap.add_argument("--transformers-prompts", type=int, default=6, help="the generator's transformers side")
    ap.add_argument("--teacher-transformers-prompts", type=int, default=2)
    ap.add_argument("--slots", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    from speed.runtime.config import load_config
    from speed.stages import provider, trainer_of

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").is_file() or not (run_dir / trainer_of("senior").name).is_dir():
        print(f"error: {run_dir} is not a run with a trained senior generator; run `make demo` first "
              "(or pass --run-dir of a run whose train-senior stage is done)", file=sys.stderr)
        return 2
    cfg = load_config(run_dir / "config.yaml")
    scfg = cfg.stage(provider("synthetic-examples").name)
    print(f"synthesis prompts, max_tokens {scfg.max_tokens}, temperature {scfg.temperature}, {args.threads} threads, "
          f"{args.slots} slots", flush=True)
    results = {}
    for model in [m.strip() for m in args.models.split(",") if m.strip()]:
        n = args.prompts if model == "generator" else args.teacher_prompts
        results[model] = bench_model(args, run_dir, cfg, model, plan(run_dir, n, cfg), scfg)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
