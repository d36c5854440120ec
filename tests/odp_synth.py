"""Write a synthetic ODP structure dump in the real RDF format, with any number of topics."""

from __future__ import annotations

import gzip
from pathlib import Path

HEADER = ('<?xml version="1.0" encoding="UTF-8"?>\n\n<RDF xmlns:r="http://www.w3.org/TR/RDF/"\n'
          '     xmlns:d="http://purl.org/dc/elements/1.0/"\n     xmlns="http://dmoz.org/rdf/">\n\n'
          '<!-- synthetic dump for tests -->\n\n<Topic r:id="">\n  <catid>1</catid>\n</Topic>\n\n')
ROOTS = ["Arts", "Business", "Computers", "Games", "Health", "Home", "Recreation", "Reference", "Science",
         "Shopping", "Society", "Sports", "Kids_and_Teens", "World", "Adult", "Regional"]


def synth_paths(n: int):
    """n distinct topic paths, depths 1..8, in a tree (breadth-first, 6 children per node)."""
    frontier = list(ROOTS)
    count = 0
    while frontier and count < n:
        nxt = []
        for path in frontier:
            yield path
            count += 1
            if count >= n:
                return
            depth = path.count("/") + 1
            if depth < 8:
                nxt.extend(f"{path}/Node_{count}_{k}" for k in range(6))
        frontier = nxt


def write_dump(path: Path, n: int) -> Path:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", encoding="utf-8") as fh:
        fh.write(HEADER)
        for i, topic in enumerate(synth_paths(n), 2):
            fh.write(f'<Topic r:id="Top/{topic}">\n  <catid>{i}</catid>\n  <d:Title>{topic.rsplit("/", 1)[-1]}'
                     f'</d:Title>\n  <lastUpdate>2016-01-01 00:00:00</lastUpdate>\n</Topic>\n\n')
        fh.write("</RDF>\n")
    return path
