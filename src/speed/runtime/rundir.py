"""The run directory: frozen config, manifest, one folder per stage, shard done-markers.

Layout::

    RUN_DIR/config.yaml        the resolved config of the latest run
    RUN_DIR/manifest.json      per stage: status, config/input hashes, outputs, counts, timings, usage
    RUN_DIR/<stage>/...        the stage's records (JSONL) and side files
    RUN_DIR/<stage>/shards/    shard outputs and their ``.done`` markers while a stage works

Everything is written atomically (temp file + rename). A stage is marked done only after all its
outputs are complete, and a shard's marker only after the shard's output.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import random
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

from ..errors import SpeedError
from ..io import atomic_write_json, atomic_write_jsonl, read_jsonl, sha256_file, stable_hash
from ..io import now as _now

MANIFEST_FORMAT = 1


class ManifestError(SpeedError):
    pass


def _checksum(body: dict) -> str:
    return stable_hash({k: v for k, v in body.items() if k != "checksum"})


class RunDir:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.manifest_path = self.path / "manifest.json"
        self._lock_fh = None

    def __getstate__(self) -> dict:
        """Pickled (for a shard worker), a run directory travels as its absolute path, without the lock."""
        return {"path": self.path.resolve(), "manifest_path": self.manifest_path.resolve(), "_lock_fh": None}

    # -- locking ---------------------------------------------------------------------------------
    def lock(self) -> None:
        """Take an exclusive lock so that two runs cannot write one run directory at once."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock_fh = open(self.path / ".lock", "w")
        except OSError as exc:
            raise SpeedError(f"cannot write run directory {self.path}: {exc.strerror} "
                             "(check permissions and free space, or pass --run-dir)") from None
        try:
            fcntl.flock(self._lock_fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SpeedError(f"run directory {self.path} is in use by another speed process") from None

    def unlock(self) -> None:
        if self._lock_fh is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fh, fcntl.LOCK_UN)
                self._lock_fh.close()
            self._lock_fh = None

    # -- manifest --------------------------------------------------------------------------------
    def read_manifest(self) -> dict:
        if not self.manifest_path.exists():
            return {"format": MANIFEST_FORMAT, "stages": {}}
        try:
            body = json.loads(self.manifest_path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ManifestError(f"{self.manifest_path} is corrupted ({exc}); move it away to start the run afresh")
        if not isinstance(body, dict) or not isinstance(body.get("stages"), dict):
            raise ManifestError(f"{self.manifest_path} is corrupted (no 'stages' mapping); move it away to start afresh")
        if body.get("checksum") != _checksum(body):
            raise ManifestError(f"{self.manifest_path} was edited by hand or corrupted (checksum mismatch); "
                                "restore it or move it away to start the run afresh")
        return body

    def write_manifest(self, body: dict) -> None:
        body["format"] = MANIFEST_FORMAT
        body["updated_at"] = _now()
        body["checksum"] = _checksum(body)
        atomic_write_json(self.manifest_path, body)

    def update_stage(self, name: str, **fields: Any) -> dict:
        body = self.read_manifest()
        entry = body["stages"].setdefault(name, {})
        entry.update(fields)
        self.write_manifest(body)
        return entry

    def stage_entry(self, name: str) -> dict | None:
        return self.read_manifest()["stages"].get(name)

    def stage_dir(self, name: str) -> Path:
        return self.path / name


@dataclass
class StageContext:
    """What a stage's ``run`` gets: its config, its folder, seeded RNGs, shard and output helpers."""

    name: str
    config: Any  # SpeedConfig
    cfg: Any  # the stage's own config dataclass
    rundir: RunDir
    outputs: dict[str, dict] = field(default_factory=dict)
    counts: dict[str, Any] = field(default_factory=dict)
    # what later stages use from this one, e.g. a trained model:
    # {"model": {"base": ..., "adapter": "adapter", "adapter_gguf": "adapter.gguf"}} (paths relative to ctx.dir)
    artifacts: dict[str, Any] = field(default_factory=dict)

    @property
    def dir(self) -> Path:
        return self.rundir.stage_dir(self.name)

    @property
    def seed(self) -> int:
        return self.config.run.seed

    def rng(self, *item: Any) -> random.Random:
        """An RNG seeded by (run seed, stage, item id): the same draw in a resumed shard as in a full run."""
        return random.Random(int(stable_hash([self.seed, self.name, *item])[:16], 16))

    def input_path(self, artifact: str) -> Path:
        """The file of ``artifact`` (see ``speed.stages.Stage.needs``) in its providing stage's folder."""
        from ..stages import artifact_path, provider

        stage, path = provider(artifact), artifact_path(self.rundir.path, artifact)
        if not path.exists():
            raise SpeedError(f"stage {self.name} needs {path}, which stage {stage.name} did not produce; "
                             f"rerun {stage.name}")
        return path

    def read_input(self, artifact: str) -> Iterator[dict]:
        return read_jsonl(self.input_path(artifact))

    def input_counts(self, artifact: str) -> dict:
        """The counts its providing stage recorded in the manifest ({} before it is done)."""
        from ..stages import provider

        return (self.rundir.stage_entry(provider(artifact).name) or {}).get("counts") or {}

    # -- models ------------------------------------------------------------------------------------
    def model_ref(self, role: str):
        """The role's model reference, with the adapter of its training stage once that is done."""
        from .trained import effective_ref

        return effective_ref(self.config.model(role), self.rundir.read_manifest(), role, self.rundir.path)

    def item_seed(self, *item: Any) -> int:
        """A 31-bit seed for one item's model request, from (run seed, stage, item id)."""
        return int(stable_hash([self.seed, self.name, *item])[:8], 16) & 0x7FFFFFFF

    # -- outputs -----------------------------------------------------------------------------------
    def write_jsonl(self, filename: str, rows: Iterable[Any]) -> int:
        path = self.dir / filename
        n = atomic_write_jsonl(path, rows)
        self.register_output(filename, rows=n)
        return n

    def register_output(self, filename: str, rows: int | None = None) -> None:
        path = self.dir / filename
        entry = {"sha256": sha256_file(path), "bytes": path.stat().st_size}
        if rows is not None:
            entry["rows"] = rows
        self.outputs[filename] = entry

    # -- shards ----------------------------------------------------------------------------------
    @property
    def shard_dir(self) -> Path:
        return self.dir / "shards"

    def shard_paths(self, index: int, part: str = "part") -> tuple[Path, Path]:
        base = self.shard_dir / f"{part}-{index:05d}"
        return base.with_suffix(".jsonl"), base.with_suffix(".done")

    def map_shards(
        self,
        items: Sequence[Any],
        shard_size: int,
        process: Callable[[Sequence[Any], int], Iterable[Any]],
        part: str = "part",
        desc: str | None = None,
    ) -> Iterator[dict]:
        """Process ``items`` in shards of ``shard_size``; skip shards whose done-marker exists.

        ``process(shard_items, shard_index)`` returns the rows of that shard. Each shard's rows are
        written atomically, then its marker; a killed stage resumes at the shard it was in.
        Yields every row of every shard, in order.

        The executor (``run.executor``) decides where shards run: in this process, one after the
        other (``local``), or on Ray workers (``ray``), which need ``process`` to be picklable and
        to have no effect but its rows (a worker's changes to ``ctx`` are not seen here). Both write
        the same files, so a stage started by one resumes under the other.
        """
        from ..executors import ShardTask, executor_for
        from ..progress import progress

        n_shards = (len(items) + shard_size - 1) // shard_size
        tasks: list[ShardTask] = []
        for i in range(n_shards):
            out, marker = self.shard_paths(i, part)
            if not (marker.exists() and out.exists()):
                tasks.append(ShardTask(index=i, items=items[i * shard_size:(i + 1) * shard_size], out=out,
                                       marker=marker))
        done_before = n_shards - len(tasks)
        with progress(total=n_shards, desc=desc or f"{self.name} shards", unit="shard") as bar:
            bar.update(done_before)
            executor_for(self.config, self.name).run(tasks, process, on_done=lambda task: bar.update(1))
        self.counts.setdefault("shards", n_shards)
        self.counts["shards_resumed"] = done_before
        for i in range(n_shards):
            out, _ = self.shard_paths(i, part)
            yield from read_jsonl(out)

    def shards_done(self, part: str = "part") -> int:
        if not self.shard_dir.exists():
            return 0
        return len(list(self.shard_dir.glob(f"{part}-*.done")))


def output_intact(stage_dir: Path, outputs: dict) -> bool:
    for filename, meta in (outputs or {}).items():
        path = stage_dir / filename
        if not path.exists() or path.stat().st_size != meta.get("bytes", -1):
            return False
    return True


def clear_stage_dir(path: Path) -> None:
    if path.exists():
        shutil.rmtree(path)
