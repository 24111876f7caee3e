"""Atomic checkpoints that know what they were trained for.

A checkpoint stores an ``identity`` dict (env, obs mode, model sizes, ...). Loading it for a
different identity is refused with a message naming the first field that differs. Files are
written to a temporary name and renamed, so a crash never leaves a half-written checkpoint, and
loaded with ``weights_only=True``.

A training's checkpoints live under ``checkpoint_root()``: ``checkpoints/`` in the pipeline
directory, or ``$REDRAW_CHECKPOINTS`` where that is set (the Prefect sweep sets it to one
directory per machine, so that the points of one pair and seed share their trainings and a
retried point resumes them). ``hold_lock`` keeps two processes from training the same run in the
same directory at once: the second waits, then resumes from where the first left off.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path
from typing import IO, Any

import torch


class CheckpointMismatch(ValueError):
    pass


#: where trainings keep their checkpoints when set (else ``checkpoints/`` of the working directory)
CHECKPOINTS_ENV = "REDRAW_CHECKPOINTS"


_HELD: dict[Path, IO] = {}  # the training locks this process holds, by directory


def checkpoint_root() -> Path:
    return Path(os.environ.get(CHECKPOINTS_ENV) or "checkpoints")


def hold_lock(directory: str | os.PathLike, who: str) -> IO:
    """An exclusive lock on ``directory/lock``, held until the returned file is closed or the
    process ends (a killed process never leaves it held). If another process holds it, says so
    and waits; within one process it is re-entrant."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    key = directory.resolve()
    held = _HELD.get(key)
    if held is not None and not held.closed:  # this process holds it (a run here that raised before releasing)
        return held
    fh = open(directory / "lock", "a")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"{who}: another process is training this run in {directory}; waiting for it to finish or stop",
              flush=True)
        fcntl.flock(fh, fcntl.LOCK_EX)
    _HELD[key] = fh
    return fh


def identity_hash(identity: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:12]


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any], identity: dict[str, Any]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save({"identity": json.dumps(identity, sort_keys=True, default=str), "state": state}, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | os.PathLike, expect: dict[str, Any] | None = None, map_location="cpu",
                    subset: bool = False) -> dict[str, Any]:
    """Load a checkpoint whose stored identity matches ``expect`` exactly (or, with ``subset``,
    on the keys ``expect`` names)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint here")
    blob = torch.load(path, map_location=map_location, weights_only=True)
    identity = json.loads(blob["identity"])
    if expect is not None:
        from redraw.config import flatten

        stored = flatten(identity)
        expect = flatten(json.loads(json.dumps(expect, sort_keys=True, default=str)))
        for key in sorted(set(expect) if subset else set(expect) | set(stored)):
            if stored.get(key) != expect.get(key):
                raise CheckpointMismatch(
                    f"{path}: checkpoint was made for {key}={stored.get(key)!r}, "
                    f"but this run has {key}={expect.get(key)!r}"
                )
    return {"identity": identity, **blob["state"]}


def file_hash(path: str | os.PathLike) -> str:
    """sha256 of a file's bytes (e.g. the model a stage run starts from, part of its identity)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class RunCheckpoint:
    """The resumable checkpoint of one stage run: ``checkpoint_root()/<name>-<hash>/checkpoint.pt``,
    the hash covering ``identity`` (everything that shapes the run), so another run never resumes
    it. Holds the directory's lock (``hold_lock``) from construction until ``close``."""

    def __init__(self, name: str, identity: dict[str, Any], who: str):
        self.identity = identity
        self.dir = checkpoint_root() / f"{name}-{identity_hash(identity)}"
        self.path = self.dir / "checkpoint.pt"
        self.lock = hold_lock(self.dir, who)

    def load(self, map_location="cpu") -> dict[str, Any] | None:
        """The saved state, or None where the run has not written one yet."""
        return load_checkpoint(self.path, expect=self.identity, map_location=map_location) \
            if self.path.is_file() else None

    def save(self, state: dict[str, Any]) -> None:
        save_checkpoint(self.path, state, self.identity)

    def kept(self) -> str:
        """For an error message: where the last good checkpoint is, if there is one."""
        return f"the last good checkpoint is kept at {self.path}" if self.path.is_file() else \
            "no checkpoint had been written yet"

    def close(self) -> None:
        self.lock.close()
