"""Episode files: atomic ``.npz`` writes, safe loads (never unpickles), listing and statistics."""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path
from typing import Iterator

import numpy as np

from redraw.data.schema import EPISODE_GLOB, DataError

Episode = dict[str, np.ndarray]


def episode_name(index: int) -> str:
    return f"episode-{index:06d}.npz"


def save_episode(path: str | os.PathLike, episode: Episode, compress: bool = True) -> Path:
    """Write ``episode`` to ``path`` atomically: a reader never sees a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        (np.savez_compressed if compress else np.savez)(fh, **episode)
    os.replace(tmp, path)
    return path


def load_episode(path: str | os.PathLike) -> Episode:
    """Load every array of an episode file into memory.

    Refuses pickled objects (``allow_pickle=False``) and turns every way a file can be broken
    (truncated, not a zip, corrupt member) into a :class:`DataError` naming file and key.
    """
    path = Path(path)
    key = None
    try:
        with np.load(path, allow_pickle=False) as npz:
            out = {}
            for key in npz.files:
                out[key] = npz[key]
            return out
    except ValueError as exc:
        if "allow_pickle" in str(exc) or "pickle" in str(exc).lower():
            raise DataError(path, key, "holds a pickled Python object; episodes must be plain arrays") from None
        raise DataError(path, key, f"unreadable array: {exc}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, KeyError) as exc:
        raise DataError(path, key, f"corrupt or truncated npz file ({type(exc).__name__}: {exc})") from None


def list_episodes(directory: str | os.PathLike) -> list[Path]:
    return sorted(p for p in Path(directory).glob(EPISODE_GLOB) if not p.name.startswith("."))


def iter_episodes(directory: str | os.PathLike) -> Iterator[tuple[Path, Episode]]:
    for path in list_episodes(directory):
        yield path, load_episode(path)


def episode_return(episode: Episode) -> float:
    return float(np.sum(episode["reward"][1:], dtype=np.float64))


def episode_steps(episode: Episode) -> int:
    """Agent steps (transitions) in an episode: rows minus the reset row."""
    return int(len(episode["reward"]) - 1)


def dataset_stats(directory: str | os.PathLike) -> dict[str, float]:
    """Episodes, transitions and return statistics of a data set directory."""
    returns, steps = [], 0
    for _, episode in iter_episodes(directory):
        returns.append(episode_return(episode))
        steps += episode_steps(episode)
    if not returns:
        return {"episodes": 0, "transitions": 0}
    r = np.asarray(returns)
    return {
        "episodes": len(returns),
        "transitions": steps,
        "return_mean": float(r.mean()),
        "return_std": float(r.std()),
        "return_min": float(r.min()),
        "return_max": float(r.max()),
    }


def dataset_fingerprint(directory: str | os.PathLike) -> str:
    """SHA-256 over the metadata and every episode file's name and bytes: the data's identity."""
    import hashlib

    from redraw.data.schema import METADATA_FILE

    digest = hashlib.sha256()
    paths = list_episodes(directory)
    meta = Path(directory) / METADATA_FILE
    if meta.is_file():
        paths = [meta, *paths]
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()
