"""Command-line parsers for ``speed eval``, ``speed report``, ``speed scaling`` and ``speed compare``.

``add_parsers(subparsers)`` adds them to the ``speed`` parser (called from ``speed.cli.main``).
Heavy imports stay inside each command.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError, SpeedError


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, default=str))


# -- speed eval --------------------------------------------------------------------------------------
def cmd_eval(args) -> int:
    from ..evaluate.runner import evaluate_model, format_table, run_mteb, write_json

    if args.mteb:
        names = [n.strip() for n in args.mteb.split(",") if n.strip()]
        if not names:
            raise SpeedError("--mteb needs a comma-separated list of MTEB task names")
        result = run_mteb(args.model, names)
    else:
        result = evaluate_model(args.model, args.tasks or None, instruction=args.instruction,
                                cache_dir=args.cache_dir, use_cache=not args.no_cache, batch_size=args.batch_size,
                                log=None if args.json else _stderr)
    if args.output:
        write_json(args.output, result)
    if args.json:
        _print_json(result)
    else:
        print(format_table(result))
        if args.output:
            print(f"results: {args.output}")
    return 0


def _stderr(msg: str) -> None:
    import sys

    sys.stderr.write(msg + "\n")


# -- speed report ------------------------------------------------------------------------------------
def cmd_report(args) -> int:
    from ..analysis.cost import PriceTable
    from ..analysis.report import write_report

    res = write_report(args.run_dir, args.out, PriceTable.load(args.prices))
    if args.json:
        _print_json(res)
    else:
        print(f"report: {res['markdown']}")
        print(f"report: {res['html']} ({len(res['plots'])} plots; sections: {', '.join(res['sections'])})")
    return 0


def cmd_cost(args) -> int:
    from ..analysis.cost import PriceTable, cost_markdown, cost_report

    rep = cost_report(args.run_dir, PriceTable.load(args.prices))
    if args.json:
        _print_json(rep)
    else:
        print(cost_markdown(rep))
    return 0


# -- speed scaling -----------------------------------------------------------------------------------
def _run_inputs(target: str, run_dir: str | None):
    """(run directory, base embedder model name, config or None) from a config file or a run directory."""
    from ..runtime.config import load_config

    p = Path(target)
    if p.is_dir():
        cfg_path = p / "config.yaml"
        cfg = load_config(cfg_path) if cfg_path.is_file() else None
        rd = p
    elif p.is_file():
        from ..runtime.pipeline import default_run_dir

        cfg = load_config(p)
        rd = default_run_dir(cfg)
    else:
        raise InputError(f"{target}: neither a config file nor a run directory")
    model = cfg.models["embedder"].model if cfg is not None and "embedder" in cfg.models else "all-minilm-l6-v2"
    return Path(run_dir) if run_dir else rd, model, cfg


def cmd_scaling(args) -> int:
    from dataclasses import replace

    from ..analysis.scaling import doubling_sizes, run_scaling
    from ..io import read_jsonl
    from ..runtime.config import ScalingConfig
    from ..stages import trainer_of
    from ..stages.train_embedder import Config

    rd, model, cfg = _run_inputs(args.target, args.run_dir)
    model = args.model or model
    sc = cfg.scaling if cfg is not None else ScalingConfig()  # the config's `scaling` section; flags override
    from ..stages import artifact_path

    data = Path(args.data) if args.data else artifact_path(rd, "training-data")
    if not data.is_file():
        raise InputError(f"{data}: file not found (run the pipeline through export first, or pass --data FILE)")
    rows = list(read_jsonl(data))
    if not rows:
        raise InputError(f"{data}: no training rows (empty file)")
    if args.sizes:
        try:
            sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
        except ValueError:
            raise InputError(f"--sizes {args.sizes!r}: expected comma-separated integers") from None
    elif sc.sizes:
        sizes = list(sc.sizes)
    else:
        sizes = doubling_sizes(len(rows), args.min_size or sc.min_size, args.factor or sc.factor,
                               args.max_size or sc.max_size)
    target_score = args.target_score if args.target_score is not None else sc.target_score
    if len(sizes) < 3:
        _stderr(f"speed: warning: {len(sizes)} sizes; the saturating law needs at least 3")
    over = dict(epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr, max_length=args.max_seq_length)
    stage = trainer_of("embedder").name
    train_cfg = replace(cfg.stage(stage) if cfg is not None else Config(), **{k: v for k, v in over.items() if v is not None})
    train_cfg.validate(stage)
    role = cfg.models.get("embedder") if cfg is not None and not args.model else None
    instruction = {"on": True, "off": False}.get(args.instruction, role.instruction if role else None)
    out = Path(args.out) if args.out else rd / "scaling"
    doc = run_scaling(rows, model, out, sizes, task_dirs=args.tasks or None, train_config=train_cfg, seed=args.seed,
                      instruction=instruction, target=target_score, n_boot=args.boot, cache_dir=args.cache_dir,
                      keep_models=args.keep_models, log=_stderr)
    if args.json:
        _print_json({k: v for k, v in doc.items()})
        return 0
    from ..analysis.scaling import fit_table

    print("\n".join(fit_table(doc)))
    print(f"results: {doc['paths']['csv']}\nfit: {doc['paths']['fit']}\nplot: {doc['paths']['plot']}")
    return 0


# -- speed compare -----------------------------------------------------------------------------------
def cmd_compare(args) -> int:
    from ..analysis.compare import compare_main

    return compare_main(args)


def add_parsers(sub) -> None:
    """Add the eval / report / cost / scaling / compare subcommands to ``speed``'s subparsers."""
    e = sub.add_parser("eval", help="evaluate an embedding model on task folders (MTEB protocol)")
    e.add_argument("--model", required=True, help="an offline name, a sentence-transformers folder or a hub id")
    e.add_argument("--tasks", nargs="+", metavar="DIR", help="task folders, or folders of task folders "
                   "(default: the built-in STSBenchmark and Banking77Classification)")
    e.add_argument("--instruction", choices=("auto", "on", "off"), default="auto",
                   help="query-side instruction 'Instruct: ...\\nQuery: ...' (auto: on for instruction models)")
    e.add_argument("--output", metavar="FILE.json", help="write the results as JSON")
    e.add_argument("--cache-dir", default=None, help="embedding cache (default $SPEED_HOME/embcache)")
    e.add_argument("--no-cache", action="store_true", help="encode everything, read and write no cache")
    e.add_argument("--batch-size", type=int, default=32)
    e.add_argument("--mteb", metavar="TASK,TASK", help="run named MTEB tasks through the mteb package instead "
                   "(needs the hub to download their data)")
    e.add_argument("--json", action="store_true", help="print the results as JSON")
    e.set_defaults(func=cmd_eval)

    r = sub.add_parser("report", help="render the run report (Markdown + self-contained HTML)")
    r.add_argument("run_dir")
    r.add_argument("--out", default=None, help="output folder (default RUN_DIR/report)")
    r.add_argument("--prices", default=None, help="price table JSON/YAML {model: [prompt, completion] USD per 1M}")
    r.add_argument("--json", action="store_true")
    r.set_defaults(func=cmd_report)

    c = sub.add_parser("cost", help="the cost of a run from its ledger, against the paper's figures")
    c.add_argument("run_dir")
    c.add_argument("--prices", default=None, help="price table JSON/YAML {model: [prompt, completion] USD per 1M}")
    c.add_argument("--json", action="store_true")
    c.set_defaults(func=cmd_cost)

    s = sub.add_parser("scaling", help="train the embedder on nested subsets, evaluate, fit scaling laws")
    s.add_argument("target", metavar="CONFIG_OR_RUN_DIR")
    s.add_argument("--run-dir", default=None, help="with a config: its run directory (default run.run_dir or runs/NAME)")
    s.add_argument("--data", default=None, help="training rows (default: the run's exported data.jsonl)")
    s.add_argument("--model", default=None, help="base embedder (default: the config's models.embedder)")
    s.add_argument("--sizes", default=None,
                   help="comma-separated subset sizes (default: the config's scaling.sizes, else doubling)")
    s.add_argument("--min-size", type=int, default=None, help="first doubling size (default scaling.min_size, 32)")
    s.add_argument("--factor", type=float, default=None, help="growth factor (default scaling.factor, 2)")
    s.add_argument("--max-size", type=int, default=None)
    s.add_argument("--tasks", nargs="+", metavar="DIR", help="task folders (default: the built-ins)")
    s.add_argument("--target-score", type=float, default=None,
                   help="predict the data size that reaches this score (default scaling.target_score)")
    default = " (default: the run's train-embedder setting, else the stage's by model family)"
    s.add_argument("--epochs", type=float, default=None, help="training epochs" + default)
    s.add_argument("--batch-size", type=int, default=None, help="batch size" + default)
    s.add_argument("--lr", type=float, default=None, help="learning rate" + default)
    s.add_argument("--max-seq-length", type=int, default=None, help="max tokens per text" + default)
    s.add_argument("--instruction", choices=("auto", "on", "off"), default="auto", help="auto: the role's, by family")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--boot", type=int, default=500, help="bootstrap resamples for the confidence intervals")
    s.add_argument("--cache-dir", default=None)
    s.add_argument("--keep-models", action="store_true")
    s.add_argument("--out", default=None, help="output folder (default RUN_DIR/scaling)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_scaling)

    from ..analysis.compare import add_compare_arguments

    m = sub.add_parser("compare", help="compare generator variants on the same prompts")
    add_compare_arguments(m)
    m.set_defaults(func=cmd_compare)

    st = sub.add_parser("study", help="the quality study: ablation, data signals, downstream, scaling, cost (resumable)")
    st.add_argument("config", help="a run config with a study section (configs/study.yaml)")
    st.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    mode = st.add_mutually_exclusive_group()
    mode.add_argument("--tables-only", action="store_true",
                      help="only re-render the tables and plots from RESULTS/raw (no model runs)")
    mode.add_argument("--from-data", metavar="DATA_DIR",
                      help="skip generation: train and evaluate the embedders on the variants' data in DATA_DIR "
                           "(e.g. docs/results/data; copied into study.results_dir), then render")
    st.set_defaults(func=cmd_study)


def cmd_study(args) -> int:
    from ..analysis.study import Study
    from ..analysis.study_tables import render
    from ..runtime.config import load_config
    from ..runtime.pipeline import install_signal_handlers

    config = load_config(args.config, args.set)
    if args.tables_only:
        res = render(config.study.results_dir)
    else:
        install_signal_handlers()
        res = Study(config, log=lambda m: print(m, flush=True), from_data=args.from_data).run()
    for name, path in sorted(res["paths"].items()):
        print(f"{name}: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m speed.cli.eval_commands COMMAND ...``: these commands alone, with speed's error handling."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="speed", description="speed evaluation and reporting commands")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parsers(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SpeedError as exc:
        sys.stderr.write(f"speed: error: {' '.join(str(exc).split())}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("speed: interrupted\n")
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
