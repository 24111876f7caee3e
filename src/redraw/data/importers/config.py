"""The mapping config of ``redraw data import --config`` (docs/import.md), version 1.

A YAML file says where each observation key and the action come from in a recorded log
(``topic`` + ``field`` in a ROS bag, ``key`` in a LeRobot dataset, ``path`` in an HDF5 file),
which dimensions to keep, how to align them with the control steps (a bag's action messages,
a table's rows), and what the action means physically. It is parsed with pydantic (unknown keys refused) and checked across fields;
every error is a :class:`DataError` naming the config file and the dotted key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from redraw.data.schema import OBS_KEYS, DataError

CONFIG_VERSION = 1
FORMATS = ("rosbag", "lerobot", "hdf5")
#: the key that locates a stream in each format
LOCATOR = {"rosbag": "topic", "lerobot": "key", "hdf5": "path"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StreamSpec(_Strict):
    """Where one stream comes from, and which of its dimensions to keep."""

    topic: Optional[str] = None  #: rosbag: topic name
    #: rosbag: message attribute (dotted, e.g. ``position`` or ``twist.linear.x``); a list is concatenated
    field: Optional[Union[str, list[str]]] = None
    key: Optional[str] = None  #: lerobot: feature name, e.g. ``observation.state``
    path: Optional[str] = None  #: hdf5: dataset path (relative to the demo group for robomimic)
    select: Optional[list[Union[int, str]]] = None  #: dimensions to keep, by index or by name
    names: Optional[list[str]] = None  #: names of the source's dimensions, when it has none
    time: Optional[Literal["log", "header"]] = None  #: rosbag: log time or header stamp
    max_age: Optional[float] = Field(None, gt=0)  #: seconds; default ``alignment.max_age``

    @field_validator("select")
    @classmethod
    def _select_not_empty(cls, v):
        if v is not None and not v:
            raise ValueError("select needs at least one dimension (omit it to keep all)")
        return v


class ObsSpec(StreamSpec):
    """One observation key: a single stream or the concatenation of ``parts``."""

    parts: Optional[list[StreamSpec]] = None
    crop: Optional[list[int]] = None  #: images: [top, left, height, width] in source pixels
    colour: Literal["rgb", "bgr"] = "rgb"  #: images: channel order of the source

    @field_validator("crop")
    @classmethod
    def _crop4(cls, v):
        if v is not None and (len(v) != 4 or min(v) < 0 or v[2] == 0 or v[3] == 0):
            raise ValueError("crop is [top, left, height, width], non-negative, with height and width > 0")
        return v


class ActionSpec(StreamSpec):
    """The action: its stream and what it means (u = sign * scale * raw + offset, then limits -> [-1, 1])."""

    #: per dimension (+1 / -1): a logging convention (a driver that logs the command negated), never a
    #: reversed actuator, which is a dynamics difference for calibration to learn (docs/import.md)
    sign: Optional[list[float]] = None
    scale: Optional[list[float]] = None  #: per dimension
    offset: Optional[list[float]] = None  #: per dimension, added after scaling
    low: Optional[list[float]] = None  #: physical lower limit per dimension (maps to -1); default -1
    high: Optional[list[float]] = None  #: physical upper limit per dimension (maps to +1); default +1
    clip: bool = True  #: clip to [-1, 1] (the clipped fraction is reported); False: out of range is an error
    #: tables only: ``after`` (row t holds the action sent after observation t: LeRobot, ALOHA,
    #: robomimic) is shifted one row; ``before`` is taken as it is
    timing: Optional[Literal["after", "before"]] = None


class SourceSpec(_Strict):
    format: Literal["rosbag", "lerobot", "hdf5"]
    paths: list[str] = Field(min_length=1)  #: bags/files/dataset roots, relative to the config file
    preset: Optional[Literal["aloha", "robomimic"]] = None  #: hdf5 layouts
    rate: Optional[float] = Field(None, gt=0)  #: hdf5: rows per second (presets: aloha 50, robomimic 20)
    typestore: str = "ros2_humble"  #: rosbag: message types for bags that carry no definitions
    msg_types: dict[str, str] = Field(default_factory=dict)  #: rosbag: custom type name -> .msg file
    episodes: Optional[list[int]] = None  #: lerobot: episode indices to import (default: all)

    @field_validator("paths", mode="before")
    @classmethod
    def _one_path(cls, v):
        return [v] if isinstance(v, str) else v


class TargetSpec(_Strict):
    env: str  #: env name written to metadata.json (must equal params env.target to be calibrated on)
    obs_mode: Literal["pixels", "proprio"]
    control_hz: float = Field(gt=0)  #: agent steps per second of the output: the env's agent-step rate
    image_size: int = Field(64, gt=0)  #: pixels: square image side (params env.image_size)
    #: import at a control_hz other than the env's agent-step rate (its control timestep x
    #: params env.action_repeat); refused unless this is true
    allow_rate_mismatch: bool = False


class AlignmentSpec(_Strict):
    #: seconds an observation may be older than the control step it is paired with (a bag's
    #: command); default: 1.5 control periods (one late sample is jitter, two are a dropout)
    max_age: Optional[float] = Field(None, gt=0)
    time: Literal["log", "header"] = "log"  #: rosbag default time source
    #: a bag's observation stream slower than control_hz makes rows repeat its samples: refused
    #: unless this is true (then the repeats are counted in the report)
    allow_repeats: bool = False


class EpisodeSpec(_Strict):
    split: Literal["source", "gaps"] = "source"  #: per file/bag/episode index, or also at recording gaps
    gap: float = Field(0.5, gt=0)  #: split: gaps: seconds without a message that end an episode
    min_length: int = Field(16, ge=1)  #: agent steps per episode after resampling
    on_short: Literal["error", "drop"] = "error"  #: a shorter span is an error, or dropped (reported)


class ImportConfig(_Strict):
    version: Literal[1]
    source: SourceSpec
    target: TargetSpec
    observations: dict[str, ObsSpec]
    action: ActionSpec
    reward: Optional[StreamSpec] = None  #: zeros unless given
    alignment: AlignmentSpec = Field(default_factory=AlignmentSpec)
    episodes: EpisodeSpec = Field(default_factory=EpisodeSpec)
    behaviour: str = "teleop"  #: metadata.json behaviour
    notes: str = ""
    #: the file this config was read from (not a YAML key)
    config_path: str = Field("<config>", exclude=True)

    def max_age_ns(self, spec: StreamSpec) -> int:
        """How old a sample of the stream ``spec`` may be at its control step, in ns."""
        seconds = spec.max_age or self.alignment.max_age or 1.5 / self.target.control_hz
        return int(round(seconds * 1_000_000_000))

    def resolve(self, path: str) -> Path:
        """A source path relative to the config file's directory."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else Path(self.config_path).parent / p

    def streams(self) -> list[tuple[str, StreamSpec]]:
        """(config key, spec) of every stream to read: observation parts, action, reward."""
        out: list[tuple[str, StreamSpec]] = []
        for name, obs in self.observations.items():
            if obs.parts:
                out += [(f"observations.{name}.parts[{i}]", part) for i, part in enumerate(obs.parts)]
            else:
                out.append((f"observations.{name}", obs))
        out.append(("action", self.action))
        if self.reward is not None:
            out.append(("reward", self.reward))
        return out


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<top level>"


def parse_config(raw: Any, path: str | os.PathLike) -> ImportConfig:
    """Validate a decoded mapping config; errors name the file and the dotted key."""
    if not isinstance(raw, dict):
        raise DataError(path, None, f"expected a YAML mapping at the top level, got {type(raw).__name__}")
    if "version" not in raw:
        raise DataError(path, "version", f"missing; this redraw reads mapping config version {CONFIG_VERSION}")
    try:
        cfg = ImportConfig.model_validate({**raw, "config_path": str(path)})
    except ValidationError as exc:
        err = exc.errors()[0]
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise DataError(path, _loc(err["loc"]), f"{err['msg']}{more}") from None
    _check(cfg, path)
    return cfg


def load_config(path: str | os.PathLike) -> ImportConfig:
    from ruamel.yaml import YAML, YAMLError

    path = Path(path)
    if not path.is_file():
        raise DataError(path, None, "mapping config not found")
    try:
        raw = YAML(typ="safe").load(path.read_text())
    except YAMLError as exc:
        raise DataError(path, None, f"not valid YAML: {exc}") from None
    return parse_config(raw, path)


def _check(cfg: ImportConfig, path) -> None:
    """Cross-field rules pydantic cannot express alone."""
    fmt = cfg.source.format
    want = set(OBS_KEYS[cfg.target.obs_mode])
    if set(cfg.observations) != want:
        raise DataError(path, "observations", f"target.obs_mode {cfg.target.obs_mode!r} needs exactly the keys "
                        f"{sorted(want)}, got {sorted(cfg.observations)}")
    if fmt != "hdf5" and (cfg.source.preset or cfg.source.rate):
        raise DataError(path, "source.preset" if cfg.source.preset else "source.rate", "is for hdf5 sources only")
    if fmt == "hdf5" and cfg.source.preset is None and cfg.source.rate is None:
        raise DataError(path, "source.rate", "an hdf5 source needs its row rate (rows per second) or a preset")
    for key, spec in cfg.streams():
        for fmt_name, loc in LOCATOR.items():
            if fmt_name != fmt and getattr(spec, loc) is not None:
                raise DataError(path, f"{key}.{loc}", f"is for {fmt_name} sources; source.format is {fmt!r} "
                                f"(use {LOCATOR[fmt]!r})")
        if getattr(spec, LOCATOR[fmt]) is None and not (fmt == "hdf5" and cfg.source.preset):
            raise DataError(path, f"{key}.{LOCATOR[fmt]}", f"missing: where in the {fmt} source this stream comes from")
        if fmt != "rosbag" and (spec.field is not None or spec.time is not None):
            raise DataError(path, f"{key}.{'field' if spec.field is not None else 'time'}", "is for rosbag sources only")
        if key.startswith("observations.") and "parts" not in key and isinstance(spec, ObsSpec) and spec.parts:
            if any(getattr(spec, k) is not None for k in ("topic", "key", "path", "select", "names")):
                raise DataError(path, key, "give either parts or one stream's topic/key/path, not both")
    image = cfg.observations.get("image")
    if image is not None and image.parts:
        raise DataError(path, "observations.image.parts", "an image comes from one stream; parts are for vectors")
    for key in ("sign", "scale", "offset", "low", "high"):
        values = getattr(cfg.action, key)
        if values is not None and key in ("low", "high") and getattr(cfg.action, "high" if key == "low" else "low") is None:
            raise DataError(path, f"action.{key}", "action.low and action.high go together")
    if cfg.action.low is not None and cfg.action.high is not None:
        if len(cfg.action.low) != len(cfg.action.high) or any(h <= lo for lo, h in zip(cfg.action.low, cfg.action.high)):
            raise DataError(path, "action.high", "needs as many entries as action.low, each above its low")
    if cfg.action.timing is not None and fmt == "rosbag":
        raise DataError(path, "action.timing", "a bag's commands are aligned by time (as-of); timing is for tables")
    for name, file in cfg.source.msg_types.items():
        if not cfg.resolve(file).is_file():
            raise DataError(path, f"source.msg_types.{name}", f"{cfg.resolve(file)}: no such .msg file")
