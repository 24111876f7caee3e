"""Phase 1 of the data contract: read a data set once and summarise it in small tables.

Episodes are loaded one at a time (never all images at once) and reduced to one row per
(episode file, key) in the ``fields`` table and one row per episode in the ``episodes`` table;
``dataset`` (one row) and ``observations`` (one row per metadata observation key) describe the
directory and its ``metadata.json``. The Great Expectations suites (``suite.py``) then run on
these tables, so every unexpected row maps back to a file and a field.

Problems that stop a file from being summarised at all (unreadable metadata, an npz that cannot
be loaded) come back as ``problems``: (check, file, field, message) tuples.
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from redraw.data.episodes import list_episodes, load_episode
from redraw.data.schema import METADATA_FILE, DataError, DatasetMeta, read_metadata

#: the schema's fixed dtype and rank per observation key (docs/episode-schema.md)
OBS_SCHEMA = {"image": ("uint8", 3), "velocity": ("float32", 1), "state": ("float32", 1)}
_IMAGE_CHUNK = 128  # frames per chunk when computing per-frame pixel std
#: columns of the ``fields`` table (a key's row leaves the ones that do not apply to it empty)
_FIELD_COLUMNS = (
    "file", "field", "present", "expected", "dtype", "expected_dtype", "row_shape", "expected_row_shape",
    "length", "expected_length", "n_nonfinite", "min", "max", "low", "high",
    "first_flags_ok", "last_flags_ok", "terminal_flags_ok", "true_rows", "blank_frames", "blank_fraction",
)


@dataclass
class Summary:
    directory: Path
    meta: DatasetMeta | None = None
    dataset: pd.DataFrame | None = None  #: one row: env, obs_mode, episodes, transitions
    observations: pd.DataFrame | None = None  #: one row per metadata observation key
    episodes: pd.DataFrame | None = None  #: one row per readable episode file
    fields: pd.DataFrame | None = None  #: one row per (readable episode file, key)
    problems: list[tuple[str, str, str | None, str]] = field(default_factory=list)
    returns: list[float] = field(default_factory=list)
    unreadable: int = 0


def _shape_str(shape: tuple[int, ...]) -> str:
    return str(tuple(int(d) for d in shape))


def _numeric(arr: np.ndarray) -> bool:
    return arr.dtype.kind in "biuf"


def _blank_frames(image: np.ndarray, min_std: float) -> int:
    """Frames whose pixel standard deviation is below ``min_std``, computed in chunks."""
    flat = image.reshape(len(image), -1)
    blank = 0
    for start in range(0, len(flat), _IMAGE_CHUNK):
        std = flat[start : start + _IMAGE_CHUNK].astype(np.float32).std(axis=1)
        blank += int(np.sum(std < min_std))
    return blank


def _flags_ok(key: str, arr: np.ndarray) -> bool | None:
    """is_first: True at row 0 only; is_last: True at the final row only; is_terminal: final row only."""
    if arr.ndim != 1 or not _numeric(arr):
        return None  # the dtype / shape checks report it
    flags = arr.astype(bool)
    if len(flags) == 0:
        return False
    if key == "is_first":
        return bool(flags[0] and not flags[1:].any())
    if key == "is_last":
        return bool(flags[-1] and not flags[:-1].any())
    return bool(not flags[:-1].any())  # is_terminal


def _field_row(
    file: str, key: str, arr: np.ndarray, spec: dict, expected_length: int | None, meta: DatasetMeta, min_image_std: float
) -> dict:
    expected_shape, expected_dtype = spec.get(key, (None, None))
    row = {
        "file": file,
        "field": key,
        "present": True,
        "expected": key in spec,
        "dtype": str(arr.dtype),
        "expected_dtype": expected_dtype,
        "row_shape": _shape_str(arr.shape[1:]) if arr.ndim >= 1 else "scalar ()",
        "expected_row_shape": _shape_str(expected_shape) if expected_shape is not None else None,
        "length": int(arr.shape[0]) if arr.ndim >= 1 else None,
        "expected_length": expected_length,
    }
    if arr.dtype.kind == "f":
        finite = np.isfinite(arr)
        row["n_nonfinite"] = int(arr.size - np.count_nonzero(finite))
    if key in ("action", "reward") and _numeric(arr) and arr.ndim >= 1 and len(arr) > 1:
        body = arr[1:].astype(np.float64)  # row 0 holds placeholders (zero action, zero reward)
        body = body.reshape(len(body), -1)
        body = np.where(np.isfinite(body), body, np.nan)
        with warnings.catch_warnings():  # all-NaN columns: the finite check reports them
            warnings.simplefilter("ignore", RuntimeWarning)
            mins, maxs = np.nanmin(body, axis=0), np.nanmax(body, axis=0)
        if key == "action" and body.shape[1] == meta.action_size:
            # per dimension: report the dimension that violates its bound the most
            low, high = np.asarray(meta.action_low, float), np.asarray(meta.action_high, float)
            lo_d = int(np.nanargmin(mins - low)) if np.isfinite(mins - low).any() else 0
            hi_d = int(np.nanargmax(maxs - high)) if np.isfinite(maxs - high).any() else 0
            row.update(min=mins[lo_d], max=maxs[hi_d], low=low[lo_d], high=high[hi_d])
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                row.update(min=np.nanmin(mins), max=np.nanmax(maxs))
    if key in ("is_first", "is_last", "is_terminal"):
        row[f"{key.removeprefix('is_')}_flags_ok"] = _flags_ok(key, arr)
        if arr.ndim == 1 and _numeric(arr):
            rows = np.flatnonzero(arr.astype(bool))
            row["true_rows"] = str(rows[:6].tolist())[:-1] + (", ...]" if len(rows) > 6 else "]")
    if key == "image" and _numeric(arr) and arr.ndim == 4 and len(arr):
        blank = _blank_frames(arr, min_image_std)
        row["blank_frames"] = blank
        row["blank_fraction"] = blank / len(arr)
    return row


def _failing_key(path: Path) -> str | None:
    """The first member of an npz file that cannot be read, if the archive itself opens."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            for key in npz.files:
                try:
                    npz[key]
                except Exception:
                    return key
    except Exception:
        return None
    return None


def _content_hash(episode: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha1()
    for key in sorted(episode):
        arr = np.ascontiguousarray(episode[key])
        digest.update(f"{key}|{arr.dtype.str}|{arr.shape}|".encode())
        digest.update(arr.view(np.uint8).reshape(-1) if arr.size else b"")
    return digest.hexdigest()


def _observation_rows(meta: DatasetMeta, meta_file: str) -> list[dict]:
    rows = []
    for key, desc in meta.observations.items():
        dtype, rank = OBS_SCHEMA.get(key, (None, None))
        shape = desc.get("shape")
        ok = isinstance(shape, (list, tuple)) and all(isinstance(d, int) and d > 0 for d in shape)
        ok = ok and rank is not None and len(shape) == rank and (key != "image" or shape[-1] == 3)
        rows.append(
            {
                "file": meta_file,
                "field": f"observations.{key}",
                "dtype": str(desc.get("dtype")),
                "expected_dtype": dtype,
                "shape": str(shape),
                "shape_ok": bool(ok),
            }
        )
    return rows


def summarize(directory: str | Path, min_image_std: float) -> Summary:
    """Read ``directory`` (never writing to it) into the summary tables."""
    directory = Path(directory)
    out = Summary(directory)
    if not directory.is_dir():
        out.problems.append(("directory", str(directory), None, "no such directory"))
        return out
    meta_file = str(directory / METADATA_FILE)
    try:
        meta = read_metadata(directory)
        spec = meta.step_spec()
    except DataError as exc:
        out.problems.append(("metadata", exc.file, exc.field, exc.message))
        meta = None
    except (TypeError, ValueError) as exc:
        out.problems.append(("metadata", meta_file, "observations", f"observation shapes must be lists of ints ({exc})"))
        meta = None
    paths = list_episodes(directory)
    if meta is None:
        if not paths:
            out.problems.append(("no_episodes", str(directory), None, "no episode files (*.npz) in the directory"))
        return out
    out.meta = meta

    field_rows, episode_rows, transitions = [], [], 0
    for path in paths:
        try:
            episode = load_episode(path)
        except DataError as exc:
            out.problems.append(("readable", exc.file, exc.field, exc.message))
            out.unreadable += 1
            continue
        except Exception as exc:  # e.g. zlib.error from a corrupt compressed member
            out.problems.append(("readable", str(path), _failing_key(path), f"corrupt npz file ({type(exc).__name__}: {exc})"))
            out.unreadable += 1
            continue
        file = str(path)
        reward = episode.get("reward")
        if reward is not None and reward.ndim >= 1:
            expected_length = int(len(reward))
        else:  # no usable reward: the most common leading dimension stands in
            lengths = [int(a.shape[0]) for a in episode.values() if a.ndim >= 1]
            expected_length = max(set(lengths), key=lengths.count) if lengths else None
        for key in sorted(set(spec) | set(episode)):
            if key not in episode:
                shape, dtype = spec[key]
                field_rows.append(
                    {
                        "file": file, "field": key, "present": False, "expected": True,
                        "expected_dtype": dtype, "expected_row_shape": _shape_str(shape),
                    }
                )
                continue
            field_rows.append(_field_row(file, key, episode[key], spec, expected_length, meta, min_image_std))
        steps = expected_length - 1 if expected_length else 0
        ret = float("nan")
        if reward is not None and reward.ndim == 1 and _numeric(reward):
            ret = float(np.sum(reward[1:], dtype=np.float64))
            out.returns.append(ret)
        episode_rows.append({"file": file, "field": "reward", "steps": steps, "content_hash": _content_hash(episode), "return": ret})
        transitions += max(steps, 0)
        del episode

    out.fields = pd.DataFrame(field_rows, columns=list(_FIELD_COLUMNS))
    out.episodes = pd.DataFrame(episode_rows, columns=["file", "field", "steps", "content_hash", "return"])
    out.observations = pd.DataFrame(_observation_rows(meta, meta_file), columns=["file", "field", "dtype", "expected_dtype", "shape", "shape_ok"])
    out.dataset = pd.DataFrame(
        [{"directory": str(directory), "metadata": meta_file, "env": meta.env, "obs_mode": meta.obs_mode,
          "control_hz": float(meta.control_hz), "episodes": len(episode_rows), "transitions": transitions}]
    )
    return out

