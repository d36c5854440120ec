"""Stage ``report``: the run report (``report/report.md`` and the self-contained ``report/report.html``).

It renders whatever stages are done (funnel, quality, cost, evaluation, scaling) and runs at the
end of a run; ``speed report RUN_DIR`` renders the same at any time.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from . import Stage


@dataclass
class Config:
    prices: str | None = None  # a JSON/YAML price table {model: [prompt, completion] USD per 1M tokens}

    def validate(self, where: str) -> None:
        pass


def run(ctx) -> None:
    from ..analysis.cost import PriceTable
    from ..analysis.report import write_report

    res = write_report(ctx.rundir.path, ctx.dir, PriceTable.load(ctx.cfg.prices))
    for p in ["report.md", "report.html"] + [p.rsplit("/", 1)[-1] for p in res["plots"]]:
        ctx.register_output(p)
    ctx.counts.update({"sections": len(res["sections"]), "plots": len(res["plots"])})


def summary(entry: dict, run_dir) -> list[str]:
    path = Path(run_dir) / STAGE.name / STAGE.provides["run-report"]
    return [f"report: {path}"] if path.exists() else []


STAGE = Stage("report", Config, run, needs=("eval-results",), provides={"run-report": "report.html"}, summary=summary)
