"""Atomic checkpoints that know what they were trained for.

A checkpoint stores an ``identity`` dict (env, obs mode, model sizes, ...). Loading it for a
different identity is refused with a message naming the first field that differs. Files are
written to a temporary name and renamed, so a crash never leaves a half-written checkpoint, and
loaded with ``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch


class CheckpointMismatch(ValueError):
    pass


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
