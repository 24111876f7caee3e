"""params.yaml: the single source of hyperparameters, and the named presets that override it.

Each preset file (``presets/<name>.yaml``) sets the *same* set of keys, so switching from any
preset to any other is exact; ``apply_preset`` writes them into params.yaml (keeping its
comments) and records ``preset: <name>`` there, which every run records with its params.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

DEFAULT_PARAMS = "params.yaml"
PRESETS_DIR = "presets"


class ConfigError(ValueError):
    """A params file or preset is wrong; the message names the file and key."""


def _yaml():
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 100
    # a null is written as such (ruamel writes an empty value), as params.yaml writes its nulls
    yaml.representer.add_representer(type(None), lambda r, _: r.represent_scalar("tag:yaml.org,2002:null", "null"))
    return yaml


def yaml_error(file: str | os.PathLike, exc: Exception) -> str:
    """One line for a YAML library's error: the file, the line, what is wrong. A duplicate key is
    named as such, without the library's advice on switching its check off."""
    from ruamel.yaml.constructor import DuplicateKeyError

    mark = getattr(exc, "problem_mark", None)
    line = f"line {mark.line + 1}" if mark is not None else ""
    problem = str(getattr(exc, "problem", None) or exc).strip().splitlines()[0]
    if isinstance(exc, DuplicateKeyError):
        found = re.match(r'found duplicate key "(.*)" with value', problem)
        key = found.group(1) if found else problem
        return f"{file}: {line}: duplicate key '{key}' (a key may appear once in a mapping)"
    context, cmark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    started = f" ({context}, from line {cmark.line + 1})" if context and cmark is not None else ""
    where = f"{line}, column {mark.column + 1}: " if mark is not None else ""
    return f"{file}: not valid YAML: {where}{problem}{started}"


def load_params(path: str | os.PathLike = DEFAULT_PARAMS, round_trip: bool = False) -> dict[str, Any]:
    """Read a params file into plain Python types (``round_trip`` keeps comments for rewriting)."""
    from ruamel.yaml import YAML, YAMLError

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: params file not found (run from the repository root, or pass --params)")
    try:
        data = (_yaml() if round_trip else YAML(typ="safe")).load(path.read_text())
    except YAMLError as exc:
        raise ConfigError(yaml_error(path, exc)) from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def is_count(value: Any, least: int = 0) -> bool:
    """Whether ``value`` is a whole number (an int, not a bool: YAML's ``true`` is one) >= ``least``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def get(params: dict[str, Any], dotted: str, path: str | os.PathLike = DEFAULT_PARAMS) -> Any:
    """``get(params, "env.obs_mode")`` with an error naming the missing key and file."""
    node: Any = params
    for i, part in enumerate(dotted.split(".")):
        if not isinstance(node, dict) or part not in node:
            prefix = ".".join(dotted.split(".")[: i + 1])
            raise ConfigError(f"{path}: missing key '{prefix}'")
        node = node[part]
    return node


def section(params: dict[str, Any], name: str, cls, path: str | os.PathLike = DEFAULT_PARAMS, **extra):
    """Build dataclass ``cls`` from section ``name`` (dotted); unknown keys are refused by name."""
    from dataclasses import fields

    raw = dict(get(params, name, path))
    known = {f.name for f in fields(cls)} - set(extra)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown key '{name}.{unknown[0]}' (known: {', '.join(sorted(known))})")
    return cls(**raw, **extra)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, name + "."))
        else:
            out[name] = value
    return out


def preset_names(root: str | os.PathLike = ".") -> list[str]:
    return sorted(p.stem for p in (Path(root) / PRESETS_DIR).glob("*.yaml"))


def apply_preset(name: str, params_path: str | os.PathLike = DEFAULT_PARAMS, root: str | os.PathLike = ".") -> list[str]:
    """Write preset ``name`` into params.yaml; returns the dotted keys that changed."""
    preset_path = Path(root) / PRESETS_DIR / f"{name}.yaml"
    if not preset_path.is_file():
        raise ConfigError(f"unknown preset {name!r}; available: {', '.join(preset_names(root)) or 'none'} (in {PRESETS_DIR}/)")
    from ruamel.yaml import YAMLError

    try:
        overrides = flatten(_yaml().load(preset_path.read_text()) or {})
    except YAMLError as exc:
        raise ConfigError(yaml_error(preset_path, exc)) from None
    return set_params({**overrides, "preset": name}, params_path, source=preset_path)


def set_params(overrides: dict[str, Any], params_path: str | os.PathLike = DEFAULT_PARAMS,
               source: str | os.PathLike = "overrides", known: dict | None = None) -> list[str]:
    """Set dotted keys that already exist in params.yaml (its comments kept; the file replaced
    atomically, or left untouched when a key is unknown); returns the keys that changed.
    A key missing from params.yaml is refused naming ``source`` (where it came from), unless
    ``known`` (another params mapping, e.g. a newer checkout's) has it under an existing section:
    then it is added there (an option newer than the file)."""
    yaml = _yaml()
    params_path = Path(params_path)
    params = load_params(params_path, round_trip=True)
    changed = []
    for dotted, value in overrides.items():
        node, ref = params, known
        parts = dotted.split(".")
        for part in parts[:-1]:
            if part not in node or not isinstance(node[part], dict):
                raise ConfigError(f"{source}: key '{dotted}' does not exist in {params_path}")
            node = node[part]
            ref = ref.get(part) if isinstance(ref, dict) else None
        newer = isinstance(ref, dict) and parts[-1] in ref
        if parts[-1] not in node and dotted != "preset" and not newer:
            raise ConfigError(f"{source}: key '{dotted}' does not exist in {params_path}")
        if node.get(parts[-1]) != value:
            changed.append(dotted)
        node[parts[-1]] = value
    tmp = params_path.with_name(f".{params_path.name}.tmp")
    with open(tmp, "w") as fh:
        yaml.dump(params, fh)
    os.replace(tmp, params_path)
    return changed
