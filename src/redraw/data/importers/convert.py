"""From recording units to schema episodes: control steps, as-of alignment, selection, action meaning.

``convert(cfg, out_dir)`` checks ``target.control_hz`` against the env's agent-step rate, reads
every unit of the source (one reader per format) and puts it on its control steps (a bag: one
per action message; a table: every n-th row), each observation stream as of the step's time
(``resample``), cuts stale spans, builds the episode rows of docs/episode-schema.md (row 0: the
first observation, zero action; row t: the action sent before observation t), normalises the
action to [-1, 1] and writes the episodes and ``metadata.json`` into ``out_dir``, with the
resolved config and a per-episode quality report in ``metadata.extra.import``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from redraw.data.episodes import Episode, episode_name, save_episode
from redraw.data.importers.config import ImportConfig
from redraw.data.importers.resample import (
    NS, Stream, Unit, asof, check_increasing, decimation, row_times, spans, split_times, table_grid,
)
from redraw.data.schema import DataError, DatasetMeta, write_metadata


@dataclass
class TargetEnv:
    """The env the imported data must fit: its vector sizes and its agent-step rate."""

    name: str  #: the env of the env-pair file (``target.env``, or params ``env.source`` for an unregistered robot)
    dims: dict[str, int]  #: ``action`` and ``velocity`` (pixels) or ``state`` (proprio)
    timestep: float  #: seconds per control step of the simulator
    action_repeat: int | None  #: params ``env.action_repeat``; None when no params were given
    where: str  #: where the env and the action repeat come from, for messages

    @property
    def control_hz(self) -> float | None:
        """Agent steps per second: 1 / (control timestep x action repeat)."""
        return None if self.action_repeat is None else 1.0 / (self.timestep * self.action_repeat)


def target_env(cfg: ImportConfig, params: dict | None = None, params_path: str = "params.yaml") -> TargetEnv | None:
    """The env of ``cfg.target.env`` in the env-pair file of ``params`` (``env.pairs``; the default
    file without params), or, for a robot the file does not name, params' ``env.source`` (the
    simulator the world model is pretrained in). None when neither is an env of the file."""
    from redraw.envs.registry import load_pairs

    env_params = (params or {}).get("env") or {}
    pairs = env_params.get("pairs") or None
    registry = load_pairs(pairs)
    name = cfg.target.env
    where = f"env {name!r} of {registry.file}"
    if name not in registry.envs:
        name = env_params.get("source")
        if name not in registry.envs:
            return None
        where = (f"{params_path} env.source {name!r} ({cfg.target.env!r} is not an env of {registry.file}; the "
                 f"world model is pretrained in its source)")
    repeat = env_params.get("action_repeat")
    if repeat is not None:
        repeat = int(repeat)
        where += f", env.action_repeat {repeat} in {params_path}"
    dims, timestep = env_facts(name, cfg.target.obs_mode, cfg.target.image_size, registry)
    return TargetEnv(name, dims, timestep, repeat, where)


def env_facts(name: str, obs_mode: str, image_size: int = 64, pairs=None) -> tuple[dict[str, int], float]:
    """(vector sizes: ``action`` and ``velocity`` or ``state``; seconds per control step) of env
    ``name`` of the env-pair file ``pairs`` (a path, a Registry, or None for the default file)."""
    from redraw.envs.registry import load_pairs

    spec = load_pairs(pairs).get(name)
    if spec.simulator == "dm_control":
        from dm_control import suite

        env = suite.load(spec.domain, spec.task)
        obs = env.observation_spec()
        dims = {"action": int(env.action_spec().shape[0])}
        if obs_mode == "pixels":
            dims["velocity"] = int(np.prod(obs["velocity"].shape))
        else:
            dims["state"] = int(sum(int(np.prod(s.shape)) for s in obs.values()))
        return dims, float(env.control_timestep())
    from redraw.envs.gymnasium_env import GymEnv

    with GymEnv(name, obs_mode=obs_mode, action_repeat=1, image_size=image_size, pairs=pairs) as env:
        dims = {"action": int(env.action_size)}
        dims.update({k: int(np.prod(shape)) for k, (shape, _) in env.observation_spec().items() if k != "image"})
        return dims, 1.0 / float(env.control_hz)


def check_rate(cfg: ImportConfig, env: TargetEnv | None) -> None:
    """Refuse a ``target.control_hz`` that is not the env's agent-step rate (a world model
    pretrained at one rate does not predict another's transitions), unless
    ``target.allow_rate_mismatch``."""
    hz, path = cfg.target.control_hz, cfg.config_path
    if cfg.target.allow_rate_mismatch:
        return
    override = f"or set target.allow_rate_mismatch: true to import at {hz:g} Hz anyway"
    if env is None:
        raise DataError(path, "target.control_hz", f"cannot be checked: {cfg.target.env!r} is not an env of the "
                        f"env-pair file and no env.source names one; {override}")
    if env.control_hz is None:
        raise DataError(path, "target.control_hz", f"cannot be checked against the agent-step rate of {env.where} "
                        f"(control timestep {env.timestep:g} s x env.action_repeat): no params with env.action_repeat "
                        f"(`redraw data import` reads them from --params, default params.yaml); {override}")
    if abs(hz - env.control_hz) > 1e-6 * env.control_hz:
        raise DataError(path, "target.control_hz", f"is {hz:g} Hz, but {env.where} takes {env.control_hz:g} agent "
                        f"steps per second (control timestep {env.timestep:g} s x action repeat {env.action_repeat}); "
                        f"set control_hz: {env.control_hz:g} (the rate of the log's control steps must match), "
                        f"{override}")


def selection(stream: Stream, spec, file: str) -> np.ndarray | None:
    """Indices that ``spec.select`` keeps of ``stream`` (None: all), checked against its size and names."""
    if stream.image:
        if spec.select is not None:
            raise DataError(file, f"{stream.key}.select", "images are not selected by dimension; use crop")
        return None
    names = spec.names or stream.names
    if spec.names is not None and stream.size is not None and len(spec.names) != stream.size:
        raise DataError(file, f"{stream.key}.names", f"{stream.where!r} has {stream.size} dimensions, names lists "
                        f"{len(spec.names)}")
    if spec.select is None:
        return None
    out = []
    for item in spec.select:
        if isinstance(item, str):
            if not names:
                raise DataError(file, f"{stream.key}.select", f"{stream.where!r} has no dimension names; select by "
                                "index or give names")
            if item not in names:
                raise DataError(file, f"{stream.key}.select", f"{stream.where!r} has no dimension named {item!r} "
                                f"(names: {', '.join(names)})")
            out.append(names.index(item))
        else:
            if not 0 <= item < (stream.size or 0):
                raise DataError(file, f"{stream.key}.select", f"{stream.where!r}: index {item} is out of range "
                                f"(size {stream.size})")
            out.append(int(item))
    return np.asarray(out, np.int64)


class ActionMap:
    """u = sign * scale * raw + offset; a = 2 (u - low) / (high - low) - 1; clipped to [-1, 1]."""

    def __init__(self, cfg: ImportConfig, n: int):
        spec, path = cfg.action, cfg.config_path
        def vec(name, default):
            v = getattr(spec, name)
            if v is None:
                return np.full(n, default, np.float64)
            if len(v) != n:
                raise DataError(path, f"action.{name}", f"has {len(v)} entries; the selected action has {n} dimensions")
            return np.asarray(v, np.float64)
        self.sign, self.scale, self.offset = vec("sign", 1.0), vec("scale", 1.0), vec("offset", 0.0)
        self.low, self.high = vec("low", -1.0), vec("high", 1.0)
        self.clip, self.n = spec.clip, n
        self.clipped = np.zeros(n, np.int64)
        self.total = 0

    def __call__(self, raw: np.ndarray, file: str) -> np.ndarray:
        u = self.sign * self.scale * raw.astype(np.float64) + self.offset
        a = 2.0 * (u - self.low) / (self.high - self.low) - 1.0
        out = np.abs(a) > 1.0 + 1e-6
        if out.any() and not self.clip:
            i, j = map(int, np.argwhere(out)[0])
            raise DataError(file, "action.clip", f"action dimension {j} maps to {a[i, j]:.4g}, outside [-1, 1] "
                            f"(check action.low/high, or set action.clip: true); {int(out.sum())} value(s)")
        self.clipped += out.sum(axis=0)
        self.total += len(a)
        return np.clip(a, -1.0, 1.0).astype(np.float32)


def _windows(unit: Unit, ref: Stream, cfg: ImportConfig) -> list[tuple[int, int]]:
    if cfg.episodes.split == "gaps":
        return split_times(ref.t, int(cfg.episodes.gap * NS))
    return [(int(ref.t[0]), int(ref.t[-1]))]


def _stale(key: str, stream: Stream, age: int, max_age: int, hz: float | None = None) -> str:
    """Why a stream is not usable at a step; ``hz`` for a bag's action, whose ``age`` is the
    interval since the previous command."""
    if hz is not None:
        return (f"action ({stream.where}): {age / 1e6:.3g} ms since the previous command, not one control period "
                f"({1e3 / hz:.3g} ms +- {STEP_TOLERANCE:.0%})")
    if age == np.iinfo(np.int64).max:
        return f"{key} ({stream.where}): no sample yet"
    return f"{key} ({stream.where}): newest sample {age / NS:.3f} s old > max_age {max_age / NS:g} s"


def build_episodes(unit: Unit, cfg: ImportConfig, dims: dict | None, amap_box: dict) -> tuple[list[Episode], dict]:
    """The episodes of one unit and its quality report."""
    file, hz = unit.file, cfg.target.control_hz
    specs = dict(cfg.streams())
    for key, stream in unit.streams.items():
        check_increasing(stream.t, file, key, stream.where)
    sel = {k: selection(s, specs[k], file) for k, s in unit.streams.items()}
    width = {k: (len(sel[k]) if sel[k] is not None else s.size) for k, s in unit.streams.items()}
    obs_parts = {name: [k for k in unit.streams if k == f"observations.{name}" or k.startswith(f"observations.{name}.")]
                 for name in cfg.observations}
    if dims is not None:
        for name, keys in obs_parts.items():
            if name != "image" and sum(width[k] for k in keys) != dims[name]:
                raise DataError(file, f"observations.{name}", f"gives {sum(width[k] for k in keys)} dimensions "
                                f"({' + '.join(str(width[k]) for k in keys)}); env {cfg.target.env!r} has {dims[name]}")
        if width["action"] != dims["action"]:
            raise DataError(file, "action.select", f"gives {width['action']} action dimensions; env "
                            f"{cfg.target.env!r} has {dims['action']}")
    if "reward" in width and width["reward"] != 1:
        raise DataError(file, "reward.select", f"{unit.streams['reward'].where!r} gives {width['reward']} values per "
                        "sample; a reward is one number (select one)")
    if "map" not in amap_box:
        amap_box["map"] = ActionMap(cfg, width["action"])
    elif amap_box["map"].n != width["action"]:
        raise DataError(file, "action", f"has {width['action']} dimensions here, {amap_box['map'].n} in earlier units")
    amap = amap_box["map"]

    streams = dict(unit.streams)
    timing = cfg.action.timing or "after"
    if unit.table_rate is not None and timing == "after":  # row t's action was sent after observation t
        for key in ("action", "reward"):
            if key in streams:
                s = streams[key]
                streams[key] = Stream(s.key, s.where, s.t[1:], s.take, s.names, s.size, s.image)
    obs_keys = [k for keys in obs_parts.values() for k in keys]
    step_keys = [k for k in ("action", "reward") if k in streams]
    ref = streams[obs_keys[0]]
    if unit.table_rate is None:
        command_rate(streams["action"], hz, file)
        _refuse_slow(streams, obs_keys, cfg, file)
    report = {"file": file, "unit": unit.label, "grid_points": 0, "used_points": 0, "stale_points": {},
              "repeated_samples": {}, "cuts": [], "dropped_short": [], **unit.info}
    episodes: list[Episode] = []
    windows = _windows(unit, ref, cfg)
    for w, (ws, we) in enumerate(windows):
        if unit.table_rate is not None:
            step = decimation(unit.table_rate, hz, file)
            g = table_grid(int(round(ws * unit.table_rate / NS)), int(round(we * unit.table_rate / NS)),
                           unit.table_rate, step)
            max_age = {k: 0 for k in streams}
            aligned = {k: asof(streams[k].t, g, max_age[k]) for k in streams}
        else:  # each command is a control step: its time is the row's
            max_age = {k: cfg.max_age_ns(specs[k]) for k in streams}
            act = streams["action"]
            end = we + max_age[obs_keys[0]]  # the window's last observation still serves a command this late
            if w + 1 < len(windows):
                end = min(end, windows[w + 1][0] - 1)
            cmds = np.flatnonzero((act.t >= ws) & (act.t <= end))
            g = act.t[cmds]
            aligned = {k: asof(streams[k].t, g, max_age[k]) for k in streams if k != "action"}
            aligned["action"] = _previous_command(cmds, g, hz)
        first_ok = np.logical_and.reduce([aligned[k][2] for k in obs_keys])
        step_ok = np.logical_and.reduce([aligned[k][2] for k in step_keys]) if step_keys else np.ones(len(g), bool)
        report["grid_points"] += len(g)
        for k in streams:  # a step stream is never needed at the first grid point (row 0: zeros)
            n_bad = int((~aligned[k][2][(1 if k in step_keys else 0):]).sum())
            if n_bad:
                report["stale_points"][k] = report["stale_points"].get(k, 0) + n_bad
        for a, b in spans(first_ok, step_ok):
            why = None
            if b < len(g):
                why = "; ".join(_stale(k, streams[k], int(aligned[k][1][b]), max_age[k],
                                       hz if k == "action" and unit.table_rate is None else None)
                                for k in obs_keys + step_keys if not aligned[k][2][b])
                report["cuts"].append({"at_s": round((g[b] - ref.t[0]) / NS, 6), "why": why})
            steps = b - a - 1
            if steps < cfg.episodes.min_length:
                msg = (f"{unit.label}: a span of {steps} agent steps starting {(g[a] - ref.t[0]) / NS:.3f} s into the "
                       f"recording" + (f", cut by {why}" if why else "") +
                       f", is shorter than episodes.min_length {cfg.episodes.min_length}")
                if cfg.episodes.on_short == "error":
                    raise DataError(file, "episodes.min_length", msg + " (episodes.on_short: drop skips such spans)")
                report["dropped_short"].append(msg)
                continue
            report["used_points"] += b - a
            for k in obs_keys:
                n = int(np.sum(np.diff(aligned[k][0][a:b]) == 0))
                if n:
                    report["repeated_samples"][k] = report["repeated_samples"].get(k, 0) + n
            episodes.append(_rows(streams, aligned, sel, obs_parts, a, b, amap, file))
    report["episodes"] = len(episodes)
    return episodes, report


#: a command interval may be this far from one control period (in periods) before it ends the
#: episode: a dropped command (two periods) or a doubled one (close to zero) is not one agent step
STEP_TOLERANCE = 0.5
#: a bag's command rate may differ this much (relative) from control_hz
RATE_TOLERANCE = 0.05
#: an observation stream this much (relative) slower than control_hz repeats samples in rows
SLOW_TOLERANCE = 0.02


def median_rate(t: np.ndarray) -> float | None:
    """Samples per second from the median interval (robust to pauses and jitter)."""
    return NS / float(np.median(np.diff(t))) if len(t) > 1 else None


def command_rate(act: Stream, hz: float, file: str) -> None:
    """The action topic's messages are the control steps: their rate must be ``control_hz``."""
    rate = median_rate(act.t)
    if rate is None or abs(rate / hz - 1.0) <= RATE_TOLERANCE:
        return
    ratio = rate / hz
    hint = (f"; it is {round(ratio)} x control_hz: a controller that commands {round(ratio)} times per agent step "
            "does not hold one action for the step" if ratio > 1.5 and abs(ratio - round(ratio)) < 0.1 else "")
    raise DataError(file, "target.control_hz", f"{hz:g} Hz, but the action topic {act.where!r} runs at {rate:.4g} Hz "
                    f"(median interval {NS / rate / 1e6:.3g} ms). Each of its messages is one control step, so "
                    f"control_hz must be its rate{hint}")


def _previous_command(cmds: np.ndarray, g: np.ndarray, hz: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row k's action is the command of step k - 1 (it led to observation k): (index, interval, ok)."""
    prev = np.concatenate([cmds[:1], cmds[:-1]])
    interval = np.concatenate([[0], np.diff(g)]).astype(np.int64)
    period = NS / hz
    ok = (interval >= (1 - STEP_TOLERANCE) * period) & (interval <= (1 + STEP_TOLERANCE) * period)
    return prev, interval, ok


def _refuse_slow(streams: dict, obs_keys: list[str], cfg: ImportConfig, file: str) -> None:
    """An observation stream slower than control_hz makes rows repeat its samples: refused unless
    ``alignment.allow_repeats`` (the report counts the repeats either way)."""
    hz = cfg.target.control_hz
    for k in obs_keys:
        rate = median_rate(streams[k].t)
        if rate is None or rate >= (1 - SLOW_TOLERANCE) * hz or cfg.alignment.allow_repeats:
            continue
        raise DataError(file, k, f"{streams[k].where!r} runs at {rate:.4g} Hz, slower than target.control_hz {hz:g}: "
                        f"about {1 - rate / hz:.0%} of the rows would repeat the previous row's sample. Lower "
                        f"control_hz, or set alignment.allow_repeats: true to keep such rows (counted in the report)")


def _rows(streams, aligned, sel, obs_parts, a, b, amap: ActionMap, file: str) -> Episode:
    def values(key, lo):
        idx = aligned[key][0][lo:b]
        rows = np.asarray(streams[key].take(idx))
        return rows if sel[key] is None else rows[:, sel[key]]

    T = b - a
    ep: Episode = {}
    for name, keys in obs_parts.items():
        if name == "image":
            ep[name] = np.asarray(values(keys[0], a), np.uint8)
        else:
            ep[name] = np.concatenate([values(k, a).astype(np.float32).reshape(T, -1) for k in keys], axis=1)
    action = np.zeros((T, amap.n), np.float32)
    action[1:] = amap(values("action", a + 1).reshape(T - 1, -1), file)
    ep["action"] = action
    reward = np.zeros(T, np.float32)
    if "reward" in streams:
        reward[1:] = values("reward", a + 1).reshape(T - 1, -1)[:, 0]
    ep["reward"] = reward
    ep["is_first"] = np.arange(T) == 0
    ep["is_last"] = np.arange(T) == T - 1
    ep["is_terminal"] = np.zeros(T, bool)
    return ep


def _sha256(path: str) -> str | None:
    p = Path(path)
    return hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None


def convert(cfg: ImportConfig, out_dir: str | Path, progress: bool = True, params: dict | None = None,
            params_path: str = "params.yaml") -> dict:
    """Write the converted episodes and metadata.json into the (empty) ``out_dir``; return the import record.

    ``params`` (the project's params, read from ``params_path``) give the env-pair file, the
    action repeat and the source env that ``target.control_hz`` and the sizes are checked against."""
    from tqdm.auto import tqdm

    from redraw import __version__
    from redraw.data.importers import reader

    out_dir = Path(out_dir)
    env = target_env(cfg, params, params_path)
    check_rate(cfg, env)
    dims = env.dims if env is not None else None
    total, units = reader(cfg.source.format)(cfg)
    amap_box: dict = {}
    reports, n, shapes = [], 0, {}
    for unit in tqdm(units, total=total, desc=f"import {cfg.source.format}", unit="unit", disable=not progress):
        episodes, report = build_episodes(unit, cfg, dims, amap_box)
        report["episode_files"] = []
        for ep in episodes:
            save_episode(out_dir / episode_name(n), ep)
            report["episode_files"].append(episode_name(n))
            shapes = {k: list(ep[k].shape[1:]) for k in cfg.observations}
            n += 1
        reports.append(report)
    if n == 0:
        raise DataError(cfg.config_path, "source.paths", "no episode came out of the source (see the span report)")
    amap = amap_box["map"]
    record = {
        "format": cfg.source.format,
        "sources": [str(cfg.resolve(p)) for p in cfg.source.paths],
        "config": cfg.model_dump(mode="json"),
        "config_file": str(cfg.config_path),
        "config_sha256": _sha256(cfg.config_path),
        "action_clipped_fraction": (amap.clipped / max(amap.total, 1)).round(6).tolist(),
        "env_agent_hz": env.control_hz if env is not None else None,
        "env_checked": env.where if env is not None else None,
        "units": reports,
    }
    meta = DatasetMeta(
        env=cfg.target.env, obs_mode=cfg.target.obs_mode, control_hz=float(cfg.target.control_hz),
        action_size=amap.n, action_low=[-1.0] * amap.n, action_high=[1.0] * amap.n,
        observations={k: {"shape": shapes[k], "dtype": "uint8" if k == "image" else "float32"} for k in cfg.observations},
        behaviour=cfg.behaviour, action_repeat=1, source="robot", seed=None, notes=cfg.notes,
        extra={"import": record, "redraw_version": __version__},
    )
    write_metadata(out_dir, meta)
    return record


__all__ = ["convert", "build_episodes", "target_env", "check_rate", "TargetEnv", "ActionMap", "row_times"]
