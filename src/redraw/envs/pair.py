"""The pair a params file picks (``env.source``, ``env.target`` from the env-pair file ``env.pairs``),
checked before any stage runs: every stage's ``main`` reads its params through
``redraw.stages.stage_params``, and ``redraw repro`` and ``redraw pair`` run the same check.

A pair runs when ``env.source`` is a source of the file, ``env.target`` one of its targets whose
``source:`` is ``env.source``, and the two have the same observations and action space. A target
that runs in its source's simulator has them by construction; one with a simulator of its own is
built, with its source, to compare them (a second or two). Errors name the params file and its
keys, and the env-pair file. ``env_settings``: the rest of ``env``, as every stage builds its envs.
"""

from __future__ import annotations

from redraw.config import ConfigError, get
from redraw.envs.perturbations import EnvFileError
from redraw.envs.registry import Registry, load_pairs


def pairs_of(params: dict) -> str | None:
    """``env.pairs`` of a params mapping (None: the repository's envs.yaml)."""
    env = params.get("env")
    pairs = env.get("pairs") if isinstance(env, dict) else None
    return str(pairs) if pairs else None


def env_settings(params: dict, path: str = "params.yaml") -> dict:
    """The ``env`` settings every stage that builds an env passes to ``make_env`` (beside the name).
    ``pairs`` is the env-pair file, ``env.pairs`` (the repository's envs.yaml when params has none)."""
    return dict(
        pairs=pairs_of(params),
        obs_mode=get(params, "env.obs_mode", path),
        action_repeat=int(get(params, "env.action_repeat", path)),
        episode_steps=int(get(params, "env.episode_steps", path)),
        image_size=int(get(params, "env.image_size", path)),
        antialias=bool(get(params, "env.antialias", path)),
    )


def check_names(registry: Registry, source: str, target: str, path: str = "params.yaml") -> None:
    """Refuse a pair whose names do not fit the env-pair file: ``env.source`` must be a source,
    ``env.target`` a target, and the target's ``source:`` must be ``env.source``."""
    file = registry.file
    sources = [n for n, s in registry.envs.items() if not s.is_target]
    if source not in registry.envs:
        raise ConfigError(f"{path}: env.source {source!r} is not an env of {file} (env.pairs); "
                          f"sources: {', '.join(sources)}")
    if registry.envs[source].is_target:
        raise ConfigError(f"{path}: env.source {source!r} is a target in {file}, not a source "
                          f"(its source: {registry.envs[source].source}); sources: {', '.join(sources)}")
    mine = registry.targets_of(source)
    listing = f"targets of {source!r}: {', '.join(mine)}" if mine else f"{source!r} has no target there"
    if target not in registry.envs:
        raise ConfigError(f"{path}: env.target {target!r} is not a target in {file} (env.pairs); {listing}")
    spec = registry.envs[target]
    if not spec.is_target:
        raise ConfigError(f"{path}: env.target {target!r} is a source in {file}, not a target; {listing}")
    if spec.source != source:
        raise ConfigError(f"{path}: env.target {target!r} is a target of {spec.source!r} in {file}, not of "
                          f"env.source {source!r}; set env.source: {spec.source}, or pick one of the {listing} "
                          f"(`redraw pair SOURCE TARGET` sets both)")


def check_spaces(registry: Registry, source: str, target: str, settings: dict, path: str = "params.yaml") -> None:
    """Build env.source and env.target (``settings``: ``env_settings``' keyword arguments but
    ``pairs``) and refuse them unless their observations and action spaces are the same."""
    from redraw.envs.dmc import build_env, env_spaces

    spaces = {}
    for name in (source, target):
        with build_env(name, pairs=registry, **settings) as env:
            spaces[name] = env_spaces(env)
    for what, a in spaces[source].items():
        b = spaces[target][what]
        if a != b:
            raise ConfigError(f"{path}: env.source {source!r} and env.target {target!r} have different {what} "
                              f"({a} and {b}); a target must have its source's spaces "
                              f"({registry.envs[target].sim_where})")


def check_pair(params: dict, path: str = "params.yaml") -> Registry:
    """Refuse the pair ``params`` picks unless it can run (this module's docstring); returns the
    env-pair file's registry. A bad env-pair file is refused as a ``ConfigError`` naming it."""
    source, target = get(params, "env.source", path), get(params, "env.target", path)
    try:
        registry = load_pairs(pairs_of(params))
        check_names(registry, source, target, path)
        if registry.envs[target].has_own_simulator:
            settings = {k: v for k, v in env_settings(params, path).items() if k != "pairs"}
            check_spaces(registry, source, target, settings, path)
    except EnvFileError as exc:
        raise ConfigError(str(exc)) from None
    return registry
