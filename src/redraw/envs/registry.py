"""Source simulators and their perturbed targets, by name, from an env-pair file (docs/envs.md).

The file params.yaml names (``env.pairs``; the repository's ``envs.yaml`` holds the paper's
four pairs) has two sections::

    sources:
      pendulum-swingup: {dm_control: pendulum/swingup}
    targets:
      pendulum-swingup-reversed:
        source: pendulum-swingup
        perturbations:
          - {kind: reverse_actions}

A source is a dm_control suite ``domain/task`` or a Gymnasium env (``gymnasium: ID`` or
``module:Class``, with optional ``kwargs``); a target is its source (or, optionally, a simulator
of its own with the same spaces) plus a list of perturbations (``redraw.envs.perturbations``).
Reading a file checks its form; the model's names are checked when an env is built.
"""

from __future__ import annotations

import copy
import math
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping

from redraw.envs.perturbations import (  # noqa: F401 - re-exported
    KINDS, EnvFileError, Perturbation, ReverseActions, Wrench, parse, to_mapping,
)

#: the repository's env-pair file: the default when params.yaml names none
DEFAULT_PAIRS = Path(__file__).resolve().parents[3] / "envs.yaml"


def default_pairs() -> Path:
    """The env-pair file when none is named: ``envs.yaml`` in the working directory (the
    repository root, where every stage runs), else the one beside this source tree. A copy of the
    package bundled with an MLflow model has no file beside it."""
    here = Path("envs.yaml")
    return here if here.is_file() else DEFAULT_PAIRS
SIMULATORS = ("dm_control", "gymnasium")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SIM_KEYS = {"dm_control", "gymnasium", "kwargs"}
#: what a source may set beside its simulator: ``learned``, the return a pretraining's last
#: evaluation must reach to count as learnt (``redraw.results_records.learned_threshold``), and
#: ``reward_range: [lo, hi]``, where its rewards lie (``redraw.envs.dmc.reward_bounds``)
_SOURCE_KEYS = _SIM_KEYS | {"learned", "reward_range"}
_TARGET_KEYS = _SIM_KEYS | {"source", "perturbations", "reward_range"}
#: keys that do not change an env's dynamics: left out of ``Registry.definition`` (a run's identity)
_NOT_DYNAMICS = ("learned", "reward_range")


@dataclass(frozen=True)
class EnvSpec:
    name: str  #: registered name, e.g. ``cup-catch-windy``
    simulator: str  #: dm_control | gymnasium
    id: str  #: dm_control ``domain/task``; gymnasium: a registered id or ``module:Class``
    perturbations: tuple[Perturbation, ...] = ()
    source: str | None = None  #: for a target: the source env it perturbs
    kwargs: Mapping[str, Any] = field(default_factory=dict)  #: gymnasium: passed to the env's constructor
    where: str = ""  #: ``FILE: section.name``, for error messages
    sim_where: str = ""  #: where the simulator is set (the source's entry when a target inherits it)
    learned: float | None = None  #: a source's ``learned:`` (None: not set in the file)
    reward_range: tuple[float, float] | None = None  #: the entry's ``reward_range`` (None: not set in the file)

    @property
    def is_target(self) -> bool:
        return self.source is not None

    @property
    def domain(self) -> str:
        return self.id.split("/", 1)[0]

    @property
    def task(self) -> str:
        return self.id.split("/", 1)[1]

    @property
    def has_own_simulator(self) -> bool:
        """A target that names a simulator of its own (whose spaces must then match its source's)."""
        return self.is_target and self.sim_where.startswith(self.where + ".")

    def describe(self) -> str:
        return "; ".join(p.describe() for p in self.perturbations) or "no perturbation"


class Registry:
    """The envs of one env-pair file."""

    def __init__(self, envs: dict[str, EnvSpec], file: str, raw: dict):
        self.envs, self.file, self._raw = envs, file, raw

    def get(self, name: str) -> EnvSpec:
        try:
            return self.envs[name]
        except KeyError:
            raise KeyError(f"unknown env {name!r}; registered envs: {', '.join(self.envs)} (in {self.file})") from None

    def pairs(self) -> list[tuple[str, str]]:
        return [(s.source, n) for n, s in self.envs.items() if s.source]

    def targets_of(self, source: str) -> list[str]:
        return [t for s, t in self.pairs() if s == source]

    def target_of(self, source: str) -> str:
        self.get(source)
        targets = self.targets_of(source)
        if len(targets) != 1:
            why = f"has {len(targets)} targets ({', '.join(targets)}); name one" if targets else "is not a source env"
            raise KeyError(f"{source!r} {why}; sources: {', '.join(dict.fromkeys(s for s, _ in self.pairs()))}")
        return targets[0]

    def source_of(self, target: str) -> str:
        spec = self.get(target)
        if spec.source is None:
            raise KeyError(f"{target!r} is not a target env; targets: {', '.join(t for _, t in self.pairs())}")
        return spec.source

    def definition(self, name: str) -> dict:
        """What defines env ``name``: its entry and, for a target, its source's (a run's identity)."""
        spec, raw = self.get(name), self.to_mapping()
        for section in raw.values():
            for entry in section.values():
                for key in _NOT_DYNAMICS:
                    entry.pop(key, None)
        if spec.source is None:
            return {"sources": {name: raw["sources"][name]}}
        return {"sources": {spec.source: raw["sources"][spec.source]}, "targets": {name: raw["targets"][name]}}

    def to_mapping(self) -> dict:
        """The file's content in its normal form (what ``load_pairs`` reads back to this registry)."""
        return copy.deepcopy(self._raw)


def _read(path: Path) -> str:
    if not path.is_file():
        raise EnvFileError(f"{path}: env-pair file not found (env.pairs in params.yaml names it; docs/envs.md)")
    return path.read_text()


def _simulator(entry: dict, where: str, required: bool) -> tuple[str, str, dict] | None:
    given = [k for k in SIMULATORS if k in entry]
    if len(given) > 1:
        raise EnvFileError(f"{where}: give one simulator, not {' and '.join(given)}")
    if not given:
        if required:
            raise EnvFileError(f"{where}: needs a simulator: 'dm_control: DOMAIN/TASK' or 'gymnasium: ID'")
        if "kwargs" in entry:
            raise EnvFileError(f"{where}.kwargs: only with a simulator of the target's own ('gymnasium: ID')")
        return None
    sim = given[0]
    value = entry[sim]
    if sim == "dm_control" and not (isinstance(value, str) and re.fullmatch(r"[a-z0-9_]+/[a-z0-9_]+", value)):
        raise EnvFileError(f"{where}.dm_control: expected 'DOMAIN/TASK' (e.g. cartpole/swingup), got {value!r}")
    if sim == "gymnasium" and not (isinstance(value, str) and value):
        raise EnvFileError(f"{where}.gymnasium: expected a registered id or 'module:Class', got {value!r}")
    kwargs = entry.get("kwargs", {})
    if not isinstance(kwargs, dict) or (kwargs and sim != "gymnasium"):
        raise EnvFileError(f"{where}.kwargs: a mapping of constructor arguments, for a gymnasium env only")
    return sim, value, dict(kwargs)


def _learned(entry: dict, where: str) -> float | None:
    """A source's optional ``learned:`` threshold, None where the entry has none."""
    if "learned" not in entry:
        return None
    value = entry["learned"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise EnvFileError(f"{where}.learned: expected a number (the return a pretraining's last evaluation must "
                           f"reach to count as learnt), got {value!r}")
    return float(value)


def _reward_range(entry: dict, where: str) -> tuple[float, float] | None:
    """An entry's optional ``reward_range: [lo, hi]`` (``.inf`` / ``-.inf``: no bound on that side)."""
    if "reward_range" not in entry:
        return None
    value = entry["reward_range"]
    numbers = isinstance(value, list) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v) for v in value)
    if not numbers or not value[0] < value[1]:
        raise EnvFileError(f"{where}.reward_range: expected [lo, hi], two numbers with lo < hi (the range every "
                           f"reward lies in; .inf: no bound), got {value!r}")
    return float(value[0]), float(value[1])


def _section(data: dict, key: str, file: str) -> dict:
    value = data.get(key) or {}
    if not isinstance(value, dict):
        raise EnvFileError(f"{file}: '{key}' must map env names to their definitions")
    for name, entry in value.items():
        if not isinstance(name, str) or not NAME.match(name):
            raise EnvFileError(f"{file}: {key}.{name}: an env name is letters, digits, '_', '-' and '.'")
        if not isinstance(entry, dict):
            raise EnvFileError(f"{file}: {key}.{name}: expected a mapping, got {entry!r}")
        allowed = _SOURCE_KEYS if key == "sources" else _TARGET_KEYS
        unknown = sorted(set(entry) - allowed)
        if unknown:
            raise EnvFileError(f"{file}: {key}.{name}.{unknown[0]}: unknown key (a {key[:-1]} has "
                               f"{', '.join(sorted(allowed))})")
    return value


def parse_pairs(data: Any, file: str) -> Registry:
    """Check an env-pair file's content (``file`` names it in errors) and build its registry."""
    if not isinstance(data, dict):
        raise EnvFileError(f"{file}: expected a mapping with 'sources' and 'targets'")
    unknown = sorted(set(data) - {"sources", "targets"})
    if unknown:
        raise EnvFileError(f"{file}: unknown top-level key {unknown[0]!r} (an env-pair file has sources, targets)")
    sources, targets = _section(data, "sources", file), _section(data, "targets", file)
    if not sources:
        raise EnvFileError(f"{file}: 'sources' is empty; define at least one source simulator")
    envs: dict[str, EnvSpec] = {}
    raw: dict = {"sources": {}, "targets": {}}
    for name, entry in sources.items():
        where = f"{file}: sources.{name}"
        sim, sid, kwargs = _simulator(entry, where, required=True)
        learned, rewards = _learned(entry, where), _reward_range(entry, where)
        envs[name] = EnvSpec(name, sim, sid, kwargs=kwargs, where=where, sim_where=f"{where}.{sim}", learned=learned,
                             reward_range=rewards)
        raw["sources"][name] = {sim: sid, **({"kwargs": kwargs} if kwargs else {}),
                                **({"learned": learned} if learned is not None else {}),
                                **({"reward_range": list(rewards)} if rewards else {})}
    for name, entry in targets.items():
        where = f"{file}: targets.{name}"
        if name in envs:
            raise EnvFileError(f"{where}: {name!r} is also a source; a name is either a source or a target")
        if "source" not in entry:
            raise EnvFileError(f"{where}: missing key 'source' (the source env it perturbs; sources: "
                               f"{', '.join(sources)})")
        src = entry["source"]
        if src not in sources:
            raise EnvFileError(f"{where}.source: {src!r} is not a source in this file (sources: {', '.join(sources)})")
        own = _simulator(entry, where, required=False)
        base = envs[src]
        sim, sid, kwargs = own or (base.simulator, base.id, dict(base.kwargs))
        items = entry.get("perturbations") or []
        if not isinstance(items, list):
            raise EnvFileError(f"{where}.perturbations: expected a list of {{kind: ...}} entries, got {items!r}")
        perts = tuple(parse(p, f"{where}.perturbations[{i}]") for i, p in enumerate(items))
        rewards = _reward_range(entry, where)
        envs[name] = EnvSpec(name, sim, sid, perts, src, kwargs, where,
                             f"{where}.{sim}" if own else base.sim_where, reward_range=rewards)
        raw["targets"][name] = {"source": src, **({sim: sid} if own else {}),
                                **({"kwargs": kwargs} if own and kwargs else {}),
                                "perturbations": [to_mapping(p) for p in perts],
                                **({"reward_range": list(rewards)} if rewards else {})}
    return Registry(envs, file, raw)


@lru_cache(maxsize=16)
def _parse_text(text: str, file: str) -> Registry:
    from ruamel.yaml import YAML, YAMLError

    try:
        data = YAML(typ="safe").load(text)
    except YAMLError as exc:
        from redraw.config import yaml_error

        raise EnvFileError(yaml_error(file, exc)) from None
    return parse_pairs(data, file)


def load_pairs(pairs: str | os.PathLike | Mapping | Registry | None = None) -> Registry:
    """The registry of an env-pair file (a path; None: the repository's ``envs.yaml``), of an
    already-read file's content (a mapping, as ``Registry.to_mapping`` gives), or ``pairs`` itself."""
    if isinstance(pairs, Registry):
        return pairs
    if isinstance(pairs, Mapping):
        return parse_pairs(dict(pairs), "<env pairs recorded with the model>")
    path = Path(pairs) if pairs else default_pairs()
    return _parse_text(_read(path), str(path))


def get_spec(name: str, pairs=None) -> EnvSpec:
    return load_pairs(pairs).get(name)


def target_of(source: str, pairs=None) -> str:
    return load_pairs(pairs).target_of(source)


def source_of(target: str, pairs=None) -> str:
    return load_pairs(pairs).source_of(target)


def __getattr__(name: str):
    """``ENVS`` (name -> EnvSpec) and ``PAIRS`` (source -> target, for sources with one target)
    of the default file, read when first used."""
    if name == "ENVS":
        return dict(load_pairs().envs)
    if name == "PAIRS":
        reg = load_pairs()
        return {s: t for s, t in reg.pairs() if len(reg.targets_of(s)) == 1}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
