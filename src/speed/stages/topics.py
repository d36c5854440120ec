"""Stage ``topics``: multi-grained, seeded topic sampling from a taxonomy -> ``topics/topics.jsonl``."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..errors import InputError
from ..runtime.configschema import check
from ..synth.taxonomy import open_source, sample_topics
from . import Stage


@dataclass
class Config:
    source: str = "builtin:iab-3.1"
    count: int = 100
    max_depth: int = 4
    min_depth: int = 1
    exclude: list[str] = field(default_factory=lambda: ["World", "Adult"])
    balance_depths: bool = False

    def validate(self, where: str) -> None:
        check(self.source.split(":", 1)[0] in ("odp", "paths", "builtin") and ":" in self.source,
              f"{where}.source", self.source, "odp:PATH, paths:PATH or builtin:iab-3.1")
        check(self.count >= 1, f"{where}.count", self.count, "must be >= 1")
        check(self.max_depth >= 2, f"{where}.max_depth", self.max_depth, "must be >= 2")
        check(1 <= self.min_depth, f"{where}.min_depth", self.min_depth, "must be >= 1")


def preflight(config, cfg: Config) -> None:
    """Checked before anything is written: the taxonomy source must exist."""
    open_source(cfg.source)


def run(ctx) -> None:
    cfg: Config = ctx.cfg
    paths, described = open_source(cfg.source)
    stats: dict = {}
    topics = sample_topics(paths, count=cfg.count, seed=ctx.seed, max_depth=cfg.max_depth,
                           exclude=cfg.exclude, min_depth=cfg.min_depth,
                           balance_depths=cfg.balance_depths, stats=stats)
    if stats["source_topics"] == 0:
        raise InputError(f"{described}:1: empty taxonomy (no topics found)")
    if not topics:
        raise InputError(f"taxonomy {described} has no topics left after exclusion ({', '.join(cfg.exclude)})")
    ctx.write_jsonl("topics.jsonl", topics)
    depths: dict[str, int] = {}
    for t in topics:
        depths[str(t.depth)] = depths.get(str(t.depth), 0) + 1
    ctx.counts.update(stats)
    ctx.counts.update({"topics": len(topics), "by_depth": depths,
                       "truncated": sum(t.path != t.original_path for t in topics)})


STAGE = Stage("topics", Config, run, provides={"sampled-topics": "topics.jsonl"}, preflight=preflight)
