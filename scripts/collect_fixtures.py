"""Collect real zero-shot outputs of the small local models on our synthesis prompts (parser fixtures).

Runs each model through the llamacpp backend at temperature 1.0 on synthesis prompts of every task
kind and writes one JSON line per output: model, kind, task, topic, attributes, seed, raw text,
finish reason, and the outcome the current parser proposes (``proposed``). The fixture file
``tests/fixtures/model_outputs.jsonl`` was made from this output by reviewing each line and
writing the expected outcome by hand (``expected``).

    SPEED_HOME=/tmp/speedhome python scripts/collect_fixtures.py --per-kind 4 --max-tokens 160 \
        --threads 1 --cache /tmp/fixture_cache.sqlite --out /tmp/candidates.jsonl

(the command that made the 40 lines of the fixture file; seeds 2024 + 1000 * kind index + j)
"""

from __future__ import annotations

import argparse
import json
import random
import sys

TASKS = {
    "retrieval": ["Given a question about a houseplant's health, find care guides that answer it.",
                  "Given a symptom described by a pet owner, retrieve veterinary articles about likely causes."],
    "classification": ["Classify a bug report by the software component it concerns.",
                       "Decide whether a restaurant review mentions service, food quality or price."],
    "sts": [""],
    "short-short": ["Given a product title, find the title of a compatible accessory.",
                    "Given an idiom, find a short phrase with the same meaning."],
    "long-long": ["Given a news article, find another article covering the same event from another outlet.",
                  "Given a research abstract, find the abstract of a study that repeats its experiments."],
}
TOPICS = ["Home/Gardening/Houseplants", "Computers/Software/Bug_Tracking", "Arts/Movies/Reviews",
          "Science/Biology/Genetics", "Recreation/Pets/Dogs"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["smollm2-135m-instruct", "qwen2.5-coder-0.5b-instruct"])
    ap.add_argument("--per-kind", type=int, default=6)
    ap.add_argument("--max-tokens", type=int, default=320)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--cache", default=None, help="a request cache (SQLite) so that a rerun is free")
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)

    from speed.runtime.config import ModelRef
    from speed.llm import LLMClient, Request, RequestCache, SamplingParams
    from speed.prompts import TASK_KINDS, parse_example, synthesis_prompt

    with open(args.out, "w", encoding="utf-8") as fh:
        for model in args.models:
            ref = ModelRef(backend="llamacpp", model=model, n_threads=args.threads, n_ctx=2048)
            cache = RequestCache(args.cache) if args.cache else None
            client = LLMClient(ref, "junior", "fixtures", cache=cache)
            prompts, reqs = [], []
            for kind in TASK_KINDS:
                for j in range(args.per_kind):
                    item_seed = args.seed + 1000 * TASK_KINDS.index(kind) + j
                    rng = random.Random(item_seed)
                    task = TASKS[kind][j % len(TASKS[kind])]
                    topic = TOPICS[j % len(TOPICS)]
                    p = synthesis_prompt(kind, task, topic, rng)
                    prompts.append((p, item_seed))
                    reqs.append(Request(p.messages, SamplingParams(temperature=1.0, top_p=1.0,
                                                                   max_tokens=args.max_tokens), seed=item_seed))
            for (p, item_seed), req in zip(prompts, reqs):
                (c,), = client.generate([req])  # one at a time: each line is written as soon as it exists
                r = parse_example(p.kind, c.text, p.attributes)
                row = {"model": model, "kind": p.kind, "task": p.task, "topic": p.topic, "attributes": p.attributes,
                       "seed": item_seed, "raw": c.text, "finish_reason": c.finish_reason, "error": c.error,
                       "proposed": "accepted" if r.ok else r.reason, "repairs": r.repairs}
                fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                fh.flush()
            client.close()
            print(f"{model}: {len(reqs)} outputs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
