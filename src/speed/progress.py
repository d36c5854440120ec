"""Progress bars for long work (tqdm on stderr; SPEED_PROGRESS=0 turns them off)."""

from __future__ import annotations

import os


def progress(total=None, desc=None, unit="it", **kw):
    from tqdm.auto import tqdm

    disable = os.environ.get("SPEED_PROGRESS", "1") == "0"
    return tqdm(total=total, desc=desc, unit=unit, disable=disable, dynamic_ncols=True, **kw)
