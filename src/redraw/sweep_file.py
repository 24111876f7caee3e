"""Sweep definitions: env pairs x methods x seeds x target-data sizes, checked before anything runs.

A sweep file (see ``flows/sweeps/``)::

    name: smoke                    # names the DVC experiments and tags the MLflow runs
    preset: smoke                  # optional: applied to params.yaml first
    pairs:                         # "source -> target", or a source alone (its registered target)
      - pendulum-swingup -> pendulum-swingup-reversed
    methods: [redraw, no_adapt]    # evaluate@<method> stages of dvc.yaml
    seeds: [0, 1]
    target_transitions: [5000, 10000]
    params:                        # optional: other params.yaml keys, the same for every point
      calibrate.updates: 500
    retries: 2                     # optional: re-runs of a point whose worker died (default 2)
    clone_steps: 20000             # optional: also clone the target data's actions without a world model
                                   #   (redraw experiment bc_reference, this many steps) in each point that
                                   #   has target data and the source pretraining, paired with its method

Every entry is checked against the env-pair file's envs (params.yaml's ``env.pairs``), dvc.yaml's methods, params.yaml's keys and
the presets before a single point is scheduled; the error names the file and the entry.
No torch, no dm_control: the Prefect flow that schedules a sweep stays light.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from redraw.config import ConfigError, flatten, is_count, load_params, preset_names

AXES = ("env.source", "env.target", "seed", "target_transitions")  #: keys the sweep's axes set
KNOWN = {"name", "preset", "pairs", "methods", "seeds", "target_transitions", "params", "retries", "clone_steps"}
NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,40}$")


@dataclass(frozen=True)
class Point:
    """One configuration of a sweep: what the DVC experiment of that name runs."""

    sweep: str
    source: str
    target: str
    method: str
    seed: int
    size: int
    preset: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    clone_steps: int = 0  #: the cloned reference's gradient steps in this point (0: none)

    @property
    def overrides(self) -> dict[str, Any]:
        """params.yaml keys this point sets (after its preset)."""
        return {**self.params, "env.source": self.source, "env.target": self.target, "seed": self.seed,
                "target_transitions": self.size}

    @property
    def key(self) -> str:
        blob = json.dumps({"preset": self.preset, "method": self.method, **self.overrides}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:8]

    @property
    def name(self) -> str:
        """A valid DVC experiment (git ref) name, unique within the sweep."""
        pair = self.source.replace("_", "-")
        return f"{self.sweep}-{pair}-{self.method.replace('_', '-')}-s{self.seed}-n{self.size}-{self.key}"

    def as_dict(self) -> dict[str, Any]:
        return {"sweep": self.sweep, "source": self.source, "target": self.target, "method": self.method,
                "seed": self.seed, "size": self.size, "preset": self.preset, "params": dict(self.params),
                "clone_steps": self.clone_steps}


@dataclass(frozen=True)
class Sweep:
    name: str
    points: tuple[Point, ...]
    retries: int
    path: str


def _methods(root: Path) -> list[str]:
    import yaml

    dvc_file = root / "dvc.yaml"
    stages = yaml.safe_load(dvc_file.read_text())["stages"]
    foreach = stages.get("evaluate", {}).get("foreach")
    if not isinstance(foreach, dict):
        raise ConfigError(f"{dvc_file}: no foreach 'evaluate' stage to take the methods from")
    return list(foreach)


def _list(raw: dict, key: str, path: str, kind: type) -> list:
    value = raw.get(key)
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{path}: '{key}' must be a non-empty list, got {value!r}")
    for item in value:
        if not isinstance(item, kind) or isinstance(item, bool):
            raise ConfigError(f"{path}: {key} entry {item!r} is not a {kind.__name__}")
    if len(set(map(str, value))) != len(value):
        raise ConfigError(f"{path}: '{key}' lists an entry twice: {value}")
    return value


def _pair(entry: Any, path: str, registry) -> tuple[str, str]:
    envs = registry.envs
    if isinstance(entry, str) and "->" in entry:
        source, target = (s.strip() for s in entry.split("->", 1))
    elif isinstance(entry, str):
        source = entry.strip()
        targets = registry.targets_of(source)
        if source in envs and len(targets) != 1:
            sources = ", ".join(dict.fromkeys(s for s, _ in registry.pairs()))
            raise ConfigError(f"{path}: pairs entry {entry!r} is not a source env with one registered target "
                              f"({', '.join(targets) or 'it has none'}); write 'SOURCE -> TARGET' (sources: {sources})")
        target = targets[0] if targets else None
    else:
        raise ConfigError(f"{path}: pairs entry {entry!r} must be 'SOURCE -> TARGET' or a source env name")
    for env in (source, target):
        if env not in envs:
            raise ConfigError(f"{path}: pairs entry {entry!r} names unknown env {env!r} "
                              f"(`redraw envs` lists the envs of {registry.file}: {', '.join(envs)})")
    return source, target


def load_sweep(path: str | Path, root: str | Path = ".") -> Sweep:
    """Read and check a sweep file against the repository at ``root``; expand its points."""
    root, where = Path(root), str(path)
    if not Path(path).is_file():
        raise ConfigError(f"{where}: sweep file not found")
    raw = load_params(path)
    unknown = sorted(set(raw) - KNOWN)
    if unknown:
        raise ConfigError(f"{where}: unknown entry {unknown[0]!r} (a sweep file has {', '.join(sorted(KNOWN))})")
    name = raw.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise ConfigError(f"{where}: 'name' must be 1-41 lowercase letters, digits, '-', '_' or '.', got {name!r}")
    preset = raw.get("preset")
    if preset is not None and preset not in preset_names(root):
        raise ConfigError(f"{where}: unknown preset {preset!r} (presets: {', '.join(preset_names(root))})")
    from redraw.envs.registry import load_pairs

    env_file = (load_params(root / "params.yaml").get("env") or {}).get("pairs")
    registry = load_pairs(root / env_file if env_file else None)
    pairs = [_pair(p, where, registry) for p in _list(raw, "pairs", where, str)]
    known_methods = _methods(root)
    methods = _list(raw, "methods", where, str)
    for m in methods:
        if m not in known_methods:
            raise ConfigError(f"{where}: unknown method {m!r} (dvc.yaml evaluates: {', '.join(known_methods)})")
    seeds = _list(raw, "seeds", where, int)
    sizes = _list(raw, "target_transitions", where, int)
    if any(s <= 0 for s in sizes):
        raise ConfigError(f"{where}: target_transitions entries must be positive, got {sizes}")
    extra = raw.get("params") or {}
    if not isinstance(extra, dict):
        raise ConfigError(f"{where}: 'params' must map params.yaml keys to values, got {extra!r}")
    extra = flatten(extra)
    params = flatten(load_params(root / "params.yaml"))
    preset_keys = flatten(load_params(root / "presets" / f"{preset}.yaml")) if preset else {}
    for key in extra:
        if key in AXES or key == "preset":
            raise ConfigError(f"{where}: params key {key!r} is set by the sweep itself (pairs, seeds, "
                              "target_transitions, preset); put it there")
        if key not in params:
            raise ConfigError(f"{where}: params key {key!r} does not exist in {root / 'params.yaml'}")
    effective = {**params, **preset_keys, **extra}
    if effective.get("target_data") == "data/target":  # the simulator's data set: its size is known
        available = int(effective["collect_target.transitions"])
        too_big = [s for s in sizes if s > available]
        if too_big:
            raise ConfigError(f"{where}: target_transitions {too_big[0]} exceeds the {available} transitions "
                              "collect_target collects (collect_target.transitions)")
    retries = raw.get("retries", 2)
    if not is_count(retries):
        raise ConfigError(f"{where}: 'retries' must be a non-negative integer, got {retries!r}")
    clone_steps = raw.get("clone_steps", 0)
    if not is_count(clone_steps):
        raise ConfigError(f"{where}: 'clone_steps' must be a non-negative integer (0: no cloned reference), "
                          f"got {clone_steps!r}")
    points = tuple(Point(name, s, t, m, seed, size, preset, extra, clone_steps)
                   for (s, t), m, seed, size in itertools.product(pairs, methods, seeds, sizes))
    return Sweep(name, points, retries, where)
