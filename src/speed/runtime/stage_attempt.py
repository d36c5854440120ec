"""One attempt at running a stage: its old outputs set aside, its errors made one line, and what was
there put back when the attempt produced nothing of value.

``StageAttempt(rundir, config, name, entry, resume)`` is a context manager around a stage's ``run``:

- on entry, unless the stage resumes, its folder moves to ``RUN_DIR/.NAME.previous`` (kept until the
  attempt is over), and the ledger's current size marks where this attempt's rows begin;
- a write error (full disk, read-only or unwritable run directory, quota) and an SQLite error on the
  request cache become one line naming the file (``SpeedError``);
- a stage whose every model request failed in this attempt is an error (one line with the last
  error), not a stage of rejections: ``check_not_all_failed``;
- on failure, an attempt that wrote no file, or whose every request failed, is undone: the old
  folder and the old manifest entry come back. Any other failure leaves the partial stage to resume
  from, and drops the old outputs. On success the old outputs are dropped. An interrupt (SIGTERM,
  Ctrl-C) changes nothing more: the next attempt resumes, or clears the old outputs and starts.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

from ..errors import SpeedError
from ..io import is_write_error, write_error
from ..llm.ledger import iter_ledger, summarize, totals
from .rundir import RunDir, clear_stage_dir

_CACHE_ERRORS = ("disk is full", "readonly", "unable to open", "disk I/O")


class StageAttempt:
    def __init__(self, rundir: RunDir, config, name: str, entry: dict, resume: bool):
        self.rundir, self.config, self.name, self.entry, self.resume = rundir, config, name, entry, resume
        self.stage_dir = rundir.stage_dir(name)
        self.previous = rundir.path / f".{name}.previous"  # the old outputs, until the redo is done
        self.ledger_path = rundir.path / "ledger.jsonl"
        self.ledger_start = 0

    def __enter__(self) -> "StageAttempt":
        clear_stage_dir(self.previous)
        if not self.resume and self.stage_dir.exists():
            os.replace(self.stage_dir, self.previous)
        self.ledger_start = self.ledger_path.stat().st_size if self.ledger_path.exists() else 0
        return self

    def run(self, fn) -> None:
        """``fn()`` (the stage's work), with write and cache errors turned into one line."""
        try:
            fn()
        except OSError as exc:
            if is_write_error(exc):  # e.g. a checkpoint on a full disk: one line, the stage stays partial
                raise SpeedError(f"stage {self.name}: {write_error(exc)}") from None
            raise
        except sqlite3.OperationalError as exc:
            msg = str(exc)
            if any(w in msg for w in _CACHE_ERRORS):
                cache = self.config.run.cache or (self.rundir.path / "cache.sqlite")
                raise SpeedError(f"stage {self.name}: cannot write the request cache {cache}: {msg} "
                                 "(check permissions and free space)") from None
            raise
        self.check_not_all_failed()

    def usage(self) -> dict:
        """The ledger summary of this attempt's rows of the stage."""
        return summarize(iter_ledger(self.ledger_path, self.ledger_start), stage=self.name)

    def check_not_all_failed(self) -> None:
        rows = list(iter_ledger(self.ledger_path, self.ledger_start))
        usage = summarize(rows, stage=self.name)
        if not all_failed(usage):
            return
        last = next((r.get("error") for r in reversed(rows) if r.get("stage") == self.name and r.get("error")), "?")
        role = next(iter(usage), "?")
        raise SpeedError(f"stage {self.name}: all {totals(usage)['calls']} {role} requests failed (last: {last}); "
                         f"check models.{role} and rerun")

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc_type is None:
            clear_stage_dir(self.previous)
        elif not issubclass(exc_type, Exception):
            pass  # SIGTERM / Ctrl-C: left as it is; the next attempt resumes or starts from here
        elif not self.resume and (not has_files(self.stage_dir) or all_failed(self.usage())):
            with contextlib.suppress(SpeedError, OSError):  # the error to report is the first one
                self._put_back()
        else:
            clear_stage_dir(self.previous)  # the stage is partial now: it resumes from what it wrote
        return False

    def _put_back(self) -> None:
        """Nothing of value was produced (bad input, every model call failed): restore the old state."""
        clear_stage_dir(self.stage_dir)
        if self.previous.exists():
            os.replace(self.previous, self.stage_dir)
        body = self.rundir.read_manifest()
        if body["stages"].get(self.name) != (self.entry or None):
            if self.entry:
                body["stages"][self.name] = self.entry
            else:
                body["stages"].pop(self.name, None)
            self.rundir.write_manifest(body)


def has_files(folder: Path) -> bool:
    return folder.is_dir() and any(p.is_file() for p in folder.rglob("*"))


def all_failed(usage: dict) -> bool:
    t = totals(usage)
    return t["calls"] > 0 and t["errors"] == t["calls"] and t["cache_hits"] == 0
