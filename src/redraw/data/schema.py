"""The episode data contract (schema version 1); docs/episode-schema.md is its prose twin.

A data set is a directory holding ``metadata.json`` and one ``.npz`` file per episode.
Every episode file holds ``T = steps + 1`` rows: row 0 is the reset observation.

==============  ===========  ======================  ==========================================
key             dtype        shape                   meaning
==============  ===========  ======================  ==========================================
action          float32      (T, action_size)        action applied *before* row t (row 0: zeros)
reward          float32      (T,)                    reward received on arriving at row t (row 0: 0)
is_first        bool         (T,)                    True at row 0 only
is_last         bool         (T,)                    True at the final row only
is_terminal     bool         (T,)                    episode ended in a terminal state at row t
image           uint8        (T, H, W, 3)            ``pixels`` mode: RGB camera image
velocity        float32      (T, V)                  ``pixels`` mode: joint velocities
state           float32      (T, S)                  ``proprio`` mode: the domain's state vector
==============  ===========  ======================  ==========================================
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


SCHEMA_VERSION = 1
METADATA_FILE = "metadata.json"
EPISODE_GLOB = "*.npz"

OBS_MODES = ("pixels", "proprio")
OBS_KEYS = {"pixels": ("image", "velocity"), "proprio": ("state",)}
STEP_KEYS = ("action", "reward", "is_first", "is_last", "is_terminal")
STEP_DTYPES = {
    "action": "float32",
    "reward": "float32",
    "is_first": "bool",
    "is_last": "bool",
    "is_terminal": "bool",
}


class DataError(ValueError):
    """Bad episode data. ``file`` and ``field`` say where; the message says what."""

    def __init__(self, file: str | os.PathLike, field: str | None, message: str):
        self.file = str(file)
        self.field = field
        self.message = message
        where = f"{self.file}" + (f" [{field}]" if field else "")
        super().__init__(f"{where}: {message}")


@dataclass
class DatasetMeta:
    """Contents of ``metadata.json``: what a consumer needs to know to use the episodes."""

    env: str  #: registered env name, e.g. ``pendulum-swingup-reversed`` (or a robot's name)
    obs_mode: str  #: ``pixels`` or ``proprio``
    control_hz: float  #: agent steps per second (after action repeat)
    action_size: int
    action_low: list[float]
    action_high: list[float]
    #: observation key -> {"shape": per-step shape, "dtype": numpy dtype name}
    observations: dict[str, dict[str, Any]]
    behaviour: str  #: how the actions were chosen: random, ou, policy:<path>, teleop, ...
    action_repeat: int = 1
    source: str = "simulator"  #: simulator | robot | import
    seed: int | None = None
    schema_version: int = SCHEMA_VERSION
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    def step_spec(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Every key an episode file must hold -> (per-row shape, dtype)."""
        spec: dict[str, tuple[tuple[int, ...], str]] = {
            "action": ((self.action_size,), "float32"),
            "reward": ((), "float32"),
            "is_first": ((), "bool"),
            "is_last": ((), "bool"),
            "is_terminal": ((), "bool"),
        }
        for key, desc in self.observations.items():
            spec[key] = (tuple(int(d) for d in desc["shape"]), str(desc["dtype"]))
        return spec


_REQUIRED_META = {
    "env": str,
    "obs_mode": str,
    "control_hz": (int, float),
    "action_size": int,
    "action_low": list,
    "action_high": list,
    "observations": dict,
    "behaviour": str,
    "schema_version": int,
}


def parse_metadata(raw: Any, path: str | os.PathLike) -> DatasetMeta:
    """Check a decoded ``metadata.json`` field by field and build a :class:`DatasetMeta`."""
    if not isinstance(raw, dict):
        raise DataError(path, None, f"expected a JSON object, got {type(raw).__name__}")
    for key, typ in _REQUIRED_META.items():
        if key not in raw:
            raise DataError(path, key, "missing required field")
        if isinstance(raw[key], bool) or not isinstance(raw[key], typ):
            raise DataError(path, key, f"expected {_typename(typ)}, got {raw[key]!r}")
    if raw["schema_version"] != SCHEMA_VERSION:
        raise DataError(
            path, "schema_version",
            f"schema version {raw['schema_version']} is not supported (this redraw reads {SCHEMA_VERSION})",
        )
    if raw["obs_mode"] not in OBS_MODES:
        raise DataError(path, "obs_mode", f"{raw['obs_mode']!r} is not one of {OBS_MODES}")
    expected_obs = set(OBS_KEYS[raw["obs_mode"]])
    if set(raw["observations"]) != expected_obs:
        raise DataError(
            path, "observations",
            f"obs_mode {raw['obs_mode']!r} needs observation keys {sorted(expected_obs)}, "
            f"got {sorted(raw['observations'])}",
        )
    for key, desc in raw["observations"].items():
        if not isinstance(desc, dict) or "shape" not in desc or "dtype" not in desc:
            raise DataError(path, f"observations.{key}", "needs 'shape' and 'dtype'")
    for key in ("action_low", "action_high"):
        if len(raw[key]) != raw["action_size"]:
            raise DataError(path, key, f"has {len(raw[key])} entries, action_size is {raw['action_size']}")
    known = {f for f in DatasetMeta.__dataclass_fields__}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise DataError(path, unknown[0], f"unknown metadata field (known: {sorted(known)})")
    return DatasetMeta(**raw)


def _typename(typ: Any) -> str:
    if isinstance(typ, tuple):
        return " or ".join(t.__name__ for t in typ)
    return typ.__name__


def read_metadata(directory: str | os.PathLike) -> DatasetMeta:
    path = Path(directory) / METADATA_FILE
    if not path.is_file():
        raise DataError(path, None, f"no {METADATA_FILE}: every data set directory needs one (docs/episode-schema.md)")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(path, None, f"not valid JSON: {exc}") from None
    return parse_metadata(raw, path)


def write_metadata(directory: str | os.PathLike, meta: DatasetMeta) -> Path:
    path = Path(directory) / METADATA_FILE
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(meta.to_json())
    os.replace(tmp, path)
    return path

