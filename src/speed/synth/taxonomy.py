"""Topic taxonomies (ODP RDF dump, path lists, the built-in IAB taxonomy), truncation and sampling.

Every source yields topic paths ``A/B/C`` one at a time, so that a million-topic ODP dump is
parsed with flat memory. Sampling is seeded bottom-k sampling: each (truncated) path gets a
priority from a hash of (seed, path) and the ``count`` smallest are kept in a bounded heap, which
gives a uniform sample over all nodes (every depth, not only leaves) without duplicates, in
O(count) memory, independent of the order of the source.
"""

from __future__ import annotations

import gzip
import hashlib
import heapq
import html
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterable, Iterator

from ..errors import InputError

BUILTIN = {"iab-3.1": ("iab-content-3.1", "content-taxonomy-3.1.tsv")}
_TOPIC_RE = re.compile(r'<Topic\s+r:id="([^"]*)"\s*/?>')


@dataclass(frozen=True)
class Topic:
    id: str
    path: str  # truncated
    original_path: str
    depth: int  # depth of the original path
    text: str  # what prompts get: the truncated path with underscores as spaces

    def to_dict(self) -> dict:
        return {"id": self.id, "path": self.path, "original_path": self.original_path,
                "depth": self.depth, "text": self.text}


def truncate(path: str, max_depth: int) -> str:
    """Keep paths up to ``max_depth`` levels; deeper ones keep their first and last levels.

    With the paper's max_depth 4: first two and last two
    ("Arts/Movies/Titles/3/36_Hours_-_1964/Cast_and_Crew" -> "Arts/Movies/36_Hours_-_1964/Cast_and_Crew").
    """
    parts = path.split("/")
    if len(parts) <= max_depth:
        return path
    head = max_depth // 2
    tail = max_depth - head
    return "/".join(parts[:head] + parts[-tail:])


def topic_text(path: str) -> str:
    return " / ".join(p.replace("_", " ").strip() for p in path.split("/"))


def _open_text(path: Path):
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8", errors="strict")
    return open(path, encoding="utf-8", errors="strict")


def iter_odp(path: Path) -> Iterator[str]:
    """Topic paths from an ODP ``structure.rdf.u8`` dump (optionally gzipped), streamed line by line.

    The ``Top/`` prefix is removed; the root itself is skipped.
    """
    lineno = 0
    try:
        with _open_text(path) as fh:
            saw_rdf = False
            for lineno, line in enumerate(fh, 1):
                if not saw_rdf:
                    if "<RDF" in line:
                        saw_rdf = True
                    elif lineno > 20 or (line.strip() and not line.lstrip().startswith(("<?xml", "<!--"))):
                        raise InputError(f"{path}:{lineno}: not an ODP RDF structure dump (no <RDF> element)")
                if "<Topic" not in line:
                    continue
                m = _TOPIC_RE.search(line)
                if m is None:
                    raise InputError(f"{path}:{lineno}: malformed <Topic> element: {line.strip()[:80]!r}")
                topic = html.unescape(m.group(1)).strip("/")
                if topic == "Top" or not topic:
                    continue
                if topic.startswith("Top/"):
                    topic = topic[4:]
                yield topic
            if not saw_rdf:
                raise InputError(f"{path}:{max(lineno, 1)}: not an ODP RDF structure dump (no <RDF> element)")
    except (UnicodeDecodeError, EOFError, gzip.BadGzipFile, OSError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputError(f"{path}:{lineno + 1}: cannot read ({exc.__class__.__name__}: {exc})") from None


def iter_paths_file(path: Path) -> Iterator[str]:
    """One ``A/B/C`` path per line; blank lines and ``#`` comments are skipped."""
    lineno = 0
    try:
        with _open_text(path) as fh:
            for lineno, line in enumerate(fh, 1):
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                text = text.strip("/")
                if any(not p.strip() for p in text.split("/")):
                    raise InputError(f"{path}:{lineno}: empty level in topic path {line.strip()!r}")
                yield text
    except (UnicodeDecodeError, EOFError, gzip.BadGzipFile) as exc:
        raise InputError(f"{path}:{lineno + 1}: cannot read as UTF-8 text, one path per line "
                         f"({exc.__class__.__name__})") from None


def iter_iab_tsv(path: Path) -> Iterator[str]:
    """Paths "Tier 1/Tier 2/..." from the IAB Content Taxonomy TSV (two header lines)."""
    with open(path, encoding="utf-8", newline="") as fh:
        for lineno, line in enumerate(fh, 1):
            cells = line.rstrip("\r\n").split("\t")
            if lineno <= 2:
                if lineno == 2 and (len(cells) < 7 or cells[0] != "Unique ID"):
                    raise InputError(f"{path}:{lineno}: not an IAB content taxonomy TSV (header missing)")
                continue
            if not line.strip():
                continue
            if len(cells) < 7:
                raise InputError(f"{path}:{lineno}: expected at least 7 tab-separated columns, got {len(cells)}")
            tiers = [c.strip().replace("/", ", ") for c in cells[3:7] if c.strip()]
            if not tiers:
                raise InputError(f"{path}:{lineno}: row without any tier name")
            yield "/".join(tiers)


def builtin_path(name: str) -> Path:
    if name not in BUILTIN:
        raise InputError(f"unknown built-in taxonomy {name!r} (available: {', '.join(BUILTIN)})")
    folder, filename = BUILTIN[name]
    return Path(str(resources.files("speed") / "data" / "taxonomies" / folder / filename))


def open_source(source: str) -> tuple[Iterator[str], str]:
    """``odp:PATH`` | ``paths:PATH`` | ``builtin:NAME`` -> (iterator of paths, description)."""
    kind, _, arg = source.partition(":")
    if kind == "builtin":
        path = builtin_path(arg)
        return iter_iab_tsv(path), f"built-in {arg} ({path.name})"
    if kind in ("odp", "paths"):
        path = Path(arg).expanduser()
        if not path.is_file():
            raise InputError(f"taxonomy file {path} not found (topics.source = {source!r})")
        return (iter_odp(path) if kind == "odp" else iter_paths_file(path)), str(path)
    raise InputError(f"topics.source = {source!r} is not allowed: expected odp:PATH, paths:PATH or builtin:NAME")


def excluded(path: str, exclude: Iterable[str]) -> bool:
    for prefix in exclude:
        prefix = prefix.strip("/")
        if prefix and (path == prefix or path.startswith(prefix + "/")):
            return True
    return False


def _priority(seed: int, path: str) -> int:
    return int.from_bytes(hashlib.blake2b(f"{seed}\x00{path}".encode(), digest_size=8).digest(), "big")


def sample_topics(paths: Iterable[str], count: int, seed: int, max_depth: int = 4,
                  exclude: Iterable[str] = ("World", "Adult"), min_depth: int = 1,
                  balance_depths: bool = False, stats: dict | None = None) -> list[Topic]:
    """Seeded, duplicate-free, multi-grained sample of ``count`` topics, in flat memory.

    With ``balance_depths`` the sample is spread evenly over the depths present (the rest of the
    quota of a depth with too few topics goes to the others); otherwise it is uniform over nodes.
    """
    exclude = list(exclude)
    heaps: dict[int, list] = {}
    members: dict[int, dict[str, int]] = {}
    seen = kept = dropped_excluded = 0
    cap = count
    for original in paths:
        seen += 1
        if excluded(original, exclude):
            dropped_excluded += 1
            continue
        depth = original.count("/") + 1
        if depth < min_depth:
            continue
        kept += 1
        path = truncate(original, max_depth)
        bucket = depth if balance_depths else 0
        heap = heaps.setdefault(bucket, [])
        mem = members.setdefault(bucket, {})
        pri = _priority(seed, path)
        if path in mem:
            continue  # a duplicate after truncation (or in the source)
        item = (-pri, path, original, depth)
        if len(heap) < cap:
            heapq.heappush(heap, item)
            mem[path] = pri
        elif -heap[0][0] > pri:
            _, old, _, _ = heapq.heapreplace(heap, item)
            del mem[old]
            mem[path] = pri
    if stats is not None:
        stats.update({"source_topics": seen, "excluded": dropped_excluded, "eligible": kept})
    if balance_depths and heaps:
        chosen = _balance(heaps, count)
    else:
        chosen = [(-p, path, orig, d) for p, path, orig, d in heaps.get(0, [])]
    chosen.sort()
    return [Topic(id=hashlib.sha1(path.encode()).hexdigest()[:12], path=path, original_path=orig,
                  depth=d, text=topic_text(path)) for _, path, orig, d in chosen[:count]]


def _balance(heaps: dict[int, list], count: int) -> list:
    ordered = {d: sorted((-p, path, orig, dd) for p, path, orig, dd in h) for d, h in heaps.items()}
    # Depth-balanced quota; a depth that runs short gives its remainder to the others. A path may
    # appear under two depths after truncation: keep its first (smallest priority) occurrence.
    picked, taken = [], set()
    quota = {d: 0 for d in ordered}
    remaining = count
    while remaining > 0:
        active = [d for d in sorted(ordered) if quota[d] < len(ordered[d])]
        if not active:
            break
        share = max(1, remaining // len(active))
        for d in active:
            take = min(share, len(ordered[d]) - quota[d], remaining)
            for item in ordered[d][quota[d]:quota[d] + take]:
                if item[1] not in taken:
                    taken.add(item[1])
                    picked.append(item)
                    remaining -= 1
            quota[d] += take
            if remaining <= 0:
                break
    return picked
