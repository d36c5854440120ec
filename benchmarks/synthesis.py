"""Benchmark: valid examples per minute of the project's synthesis path against plain transformers.

    .venv/bin/python benchmarks/synthesis.py [--run-dir runs/demo] [--prompts 16] [--threads 2]

Both sides use the trained senior generator of a finished run (``make demo`` leaves one in
runs/demo: SmolLM2-135M-Instruct + the DPO LoRA adapter of ``train-senior``), the same synthesis
prompts (planned from the run's brainstorm tasks exactly as the ``synthesize`` stage plans them,
with a salt of their own), the same sampling (the run's ``synthesize`` temperature, top_p and
max_tokens) and the same parser (``speed.prompts.parse_example``): an example counts when it
parses and validates as its kind.

- **project**: ``speed.llm.LLMClient`` on the run's senior reference (llama.cpp with the GGUF LoRA
  adapter, the path the ``synthesize`` stage takes), with an empty request cache so that every
  sample is generated;
- **baseline**: the way the paper's public release runs its generators: transformers
  ``AutoModelForCausalLM`` + the PEFT adapter, ``model.generate`` called on one prompt at a time
  (chat template, ``do_sample=True``).

Prints valid examples per minute of both and the ratio project/baseline (target: >= 5x), plus
tokens per second and the valid fraction of each side.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def plan(run_dir: Path, n: int, cfg):
    from speed.io import read_jsonl
    from speed.planning import plan_prompts

    tasks = list(read_jsonl(run_dir / "brainstorm" / "tasks.jsonl"))
    topics = list(read_jsonl(run_dir / "topics" / "topics.jsonl"))
    return plan_prompts(cfg.run.seed, "bench-synthesis", n, cfg.stage("synthesize").proportions, tasks, topics)


def project(run_dir: Path, prompts, scfg, cfg, backend: str = "llamacpp", batch_size: int = 16,
            threads: int = 2) -> dict:
    from speed.llm.cache import RequestCache
    from speed.llm.client import LLMClient
    from speed.llm.ledger import Ledger
    from speed.prompts import example_schema, parse_example
    from speed.rundir import RunDir
    from speed.stages._gen import request
    from speed.trained import effective_ref

    import dataclasses

    senior = dataclasses.replace(cfg.model("senior"), backend=backend, batch_size=batch_size, n_threads=threads)
    ref = effective_ref(senior, RunDir(run_dir).read_manifest(), "senior", run_dir)
    with tempfile.TemporaryDirectory() as tmp:
        client = LLMClient(ref, role="senior", stage="bench", cache=RequestCache(Path(tmp) / "c.sqlite"),
                           ledger=Ledger(Path(tmp) / "ledger.jsonl"))
        # load the model outside the timed part (the baseline warms up too)
        client.generate([request(prompts[0].messages, scfg.sampling(), seed=0, schema=example_schema(prompts[0].kind))])
        reqs = [request(p.messages, scfg.sampling(), seed=1000 + i, schema=example_schema(p.kind))
                for i, p in enumerate(prompts)]
        t0 = time.perf_counter()
        outs = client.generate(reqs, desc="project")
        secs = time.perf_counter() - t0
        client.close()
    comps = [c[0] for c in outs]
    valid = sum(bool(c.ok and parse_example(p.kind, c.text, p.attributes).ok) for p, c in zip(prompts, comps))
    what = f"batched {batch_size}" if backend == "hf" else "one context"
    return {"label": f"project {backend} ({what}) {ref.model} + {Path(ref.adapter).name if ref.adapter else 'no adapter'}",
            "seconds": secs, "valid": valid, "tokens": sum(c.completion_tokens for c in comps)}


def baseline(run_dir: Path, prompts, scfg, threads: int) -> dict:
    import peft
    import torch
    import transformers

    from speed.prompts import parse_example
    from speed.rundir import RunDir
    from speed.train.common import trained_generator

    torch.set_num_threads(threads)
    gen = trained_generator(RunDir(run_dir), "train-senior")
    tok = transformers.AutoTokenizer.from_pretrained(gen.base_path)
    model = transformers.AutoModelForCausalLM.from_pretrained(gen.base_path, dtype=torch.float32)
    model = peft.PeftModel.from_pretrained(model, gen.adapter).eval()
    s = scfg.sampling()

    def one(p, seed):
        torch.manual_seed(seed)
        ids = tok.apply_chat_template(p.messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        with torch.no_grad():
            out = model.generate(**ids, do_sample=s.temperature > 0, temperature=s.temperature or None,
                                 top_p=s.top_p, max_new_tokens=s.max_tokens, pad_token_id=tok.eos_token_id)
        new = out[0, ids["input_ids"].shape[1]:]
        return tok.decode(new, skip_special_tokens=True), int(new.shape[0])

    one(prompts[0], 0)  # warm-up
    t0 = time.perf_counter()
    texts = [one(p, 1000 + i) for i, p in enumerate(prompts)]
    secs = time.perf_counter() - t0
    valid = sum(parse_example(p.kind, text, p.attributes).ok for p, (text, _) in zip(prompts, texts))
    return {"label": f"transformers generate, one prompt at a time ({Path(gen.base_path).name} + PEFT)",
            "seconds": secs, "valid": valid, "tokens": sum(n for _, n in texts)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run-dir", default=str(ROOT / "runs" / "demo"))
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--backends", default="llamacpp,hf",
                    help="the project's backends to measure (comma-separated: llamacpp, hf)")
    ap.add_argument("--batch-size", type=int, default=16, help="the hf backend's batch")
    ap.add_argument("--json", help="also write the results to this file")
    args = ap.parse_args()
    from speed.config import load_config

    run_dir = Path(args.run_dir)
    if not (run_dir / "config.yaml").is_file() or not (run_dir / "train-senior").is_dir():
        print(f"error: {run_dir} is not a run with a trained senior generator; run `make demo` first "
              "(or pass --run-dir of a run whose train-senior stage is done)", file=sys.stderr)
        return 2
    cfg = load_config(run_dir / "config.yaml")
    scfg = cfg.stage("synthesize")
    prompts = plan(run_dir, args.prompts, cfg)
    print(f"{len(prompts)} synthesis prompts, max_tokens {scfg.max_tokens}, temperature {scfg.temperature}, "
          f"{args.threads} threads", flush=True)
    sides = [project(run_dir, prompts, scfg, cfg, b.strip(), args.batch_size, args.threads)
             for b in args.backends.split(",") if b.strip()]
    base = baseline(run_dir, prompts, scfg, args.threads)
    for side in sides + [base]:
        side["valid_per_min"] = 60.0 * side["valid"] / side["seconds"]
        side["tokens_per_s"] = side["tokens"] / side["seconds"]
        print(f"{side['label']}: {side['valid']}/{len(prompts)} valid in {side['seconds']:.1f}s = "
              f"{side['valid_per_min']:.1f} valid/min, {side['tokens_per_s']:.1f} completion tok/s", flush=True)
    for side in sides:
        side["ratio"] = side["valid_per_min"] / base["valid_per_min"] if base["valid_per_min"] else float("inf")
        side["token_ratio"] = side["tokens_per_s"] / base["tokens_per_s"] if base["tokens_per_s"] else float("inf")
        print(f"ratio ({side['label']} / baseline), valid examples per minute: {side['ratio']:.1f}x "
              f"(target >= 5x: {'met' if side['ratio'] >= 5 else 'missed'}); tokens per second "
              f"{side['token_ratio']:.1f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"prompts": len(prompts), "project": sides, "baseline": base},
                                              indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
