"""``redraw data inspect``: what a log holds (streams, rates, shapes, gaps, jitter) and a draft
mapping config guessed from it, for the user to check and complete."""

from __future__ import annotations

from pathlib import Path

from redraw.data.importers import inspector

_HDF5 = (".hdf5", ".h5", ".he5")
_BAG = (".bag", ".db3", ".mcap")


def is_bag(path: Path) -> bool:
    """A ROS 1 ``.bag``, a ``.db3`` or ``.mcap`` file, or a rosbag2 directory (with metadata.yaml)."""
    return (path.is_file() and path.suffix in _BAG) or (path.is_dir() and (path / "metadata.yaml").is_file())


def bag_paths(path: str | Path) -> list[Path]:
    """The bags ``path`` names: itself if it is a bag, else the bags directly in it (a folder of
    bags), in name order; none if it holds none."""
    p = Path(path)
    if is_bag(p):
        return [p]
    return sorted(q for q in p.iterdir() if is_bag(q)) if p.is_dir() else []


def detect_format(path: str | Path) -> str:
    p = Path(path)
    if p.is_dir() and (p / "meta" / "info.json").is_file():
        return "lerobot"
    if p.suffix in _HDF5 or (p.is_dir() and any(q.suffix in _HDF5 for q in p.iterdir())):
        return "hdf5"
    if bag_paths(p):
        return "rosbag"
    raise ValueError(f"{p}: cannot tell the format (a ROS bag or a folder of bags, a LeRobot dataset or HDF5 files); "
                     "pass --format")


def survey(path: str | Path, fmt: str | None = None) -> tuple[str, list[dict]]:
    fmt = fmt or detect_format(path)
    p = Path(path)
    if fmt == "hdf5" and p.is_dir():
        p = sorted(q for q in p.iterdir() if q.suffix in _HDF5)[0]
    return fmt, inspector(fmt)(str(p))


def survey_all(paths: list[str | Path], fmt: str | None = None) -> tuple[str, list[tuple[str, list[dict]]]]:
    """(format, [(source, its streams)]) of several sources of one format; a folder of bags is each
    of its bags. Every row names its source (``source``)."""
    fmts = {str(p): fmt or detect_format(p) for p in paths}
    if len(set(fmts.values())) > 1:
        raise ValueError("the sources are of different formats (" + ", ".join(f"{p}: {f}" for p, f in fmts.items())
                         + "); inspect one format at a time")
    fmt = next(iter(fmts.values()))
    out = []
    for p in paths:
        for one in (bag_paths(p) or [Path(p)]) if fmt == "rosbag" else [Path(p)]:
            rows = survey(one, fmt)[1]
            out.append((str(one), [{"source": str(one), **r} for r in rows]))
    return fmt, out


def describe(rows: list[dict]) -> str:
    lines = []
    for r in rows:
        bits = [f"{r['stream']}", f"[{r.get('type')}]"]
        if r.get("count") is not None:
            bits.append(f"{r['count']} samples")
        if r.get("rate_hz"):
            bits.append(f"{r['rate_hz']:g} Hz, jitter {r['jitter_ms']:g} ms, longest gap {r['max_gap_s']:g} s")
        for key in ("episodes", "fps", "shape", "names", "fields"):
            if r.get(key) is not None:
                bits.append(f"{key} {r[key]}")
        lines.append("  " + "  ".join(bits))
    return "\n".join(lines)


def _pick(rows, test):
    return next((r for r in rows if test(r)), None)


def _is_image(row: dict) -> bool:
    return str(row.get("type", "")).endswith(("/Image", "/CompressedImage"))


def _command(rows: list[dict], width: int | None) -> tuple[dict | None, str]:
    """The likeliest command topic and its field: a name that says so (cmd, command, action) before a
    command-like type (Twist, Float64, Float64MultiArray); a field as wide as the env's action first."""
    def score(r):
        name, typ = r["stream"].lower(), str(r.get("type", ""))
        return (any(w in name for w in ("cmd", "command", "action")),
                any(typ.endswith(t) for t in ("/Twist", "/TwistStamped", "/Float64", "/Float64MultiArray")))
    found = sorted((r for r in rows if not _is_image(r) and any(score(r))), key=score, reverse=True)
    if not found:
        return None, "data"
    row = found[0]
    vectors = row.get("vectors") or {}
    fits = [f for f, n in vectors.items() if n == width]
    for field in ("linear.x", "twist.linear.x", "data"):
        if field in vectors and (width is None or field in fits):
            return row, field
    return row, (fits or list(vectors) or ["data"])[0]


def _observation(rows: list[dict], key: str, width: int | None, skip: str | None, env: str,
                 notes: list[str]) -> dict:
    """The ``observations.<key>`` entry of a bag's draft: a topic's field as wide as the env's
    ``key`` (a name saying state/observation, or velocity, first); for a proprio state, else a
    JointState's position + velocity if they add up; else a guess, with the candidates in ``notes``."""
    vectors = [(r["stream"], f, n, r) for r in rows if r["stream"] != skip and not _is_image(r)
               for f, n in (r.get("vectors") or {}).items()]
    words = ("vel",) if key == "velocity" else ("state", "obs")
    joints = _pick(rows, lambda r: str(r.get("type", "")).endswith("JointState") and r["stream"] != skip)
    exact = sorted((v for v in vectors if v[2] == width),
                   key=lambda v: (not any(w in (v[0] + "." + v[1]).lower() for w in words), -(v[3].get("rate_hz") or 0)))
    if width is None:
        notes.append(f"observations.{key}: env {env!r} is not in the env-pair file, so its size is unknown: check it")
    elif exact:
        topic, field, _, _ = exact[0]
        others = ", ".join(f"{t} {f}" for t, f, _, _ in exact[1:])
        notes.append(f"observations.{key}: {topic} {field} gives the {width} values env {env!r} has"
                     + (f" (so do: {others})" if others else ""))
        return {"topic": topic, "field": field}
    if key == "state" and joints is not None:
        v = joints.get("vectors") or {}
        if width is not None and v.get("position", 0) + v.get("velocity", 0) == width:
            notes.append(f"observations.state: {joints['stream']} position + velocity give the {width} values env "
                         f"{env!r} has")
        elif width is not None:
            notes.append(f"observations.state: no topic gives the {width} values env {env!r} has; candidates: "
                         + (", ".join(f"{t} {f} ({n})" for t, f, n, _ in vectors) or "none") + ": fix this")
        return {"parts": [{"topic": joints["stream"], "field": "position"},
                          {"topic": joints["stream"], "field": "velocity"}]}
    wide = [v for v in vectors if width is not None and v[2] > width]
    pick = (joints["stream"], "velocity") if key == "velocity" and joints else (wide[0][:2] if wide else None)
    if width is not None:
        notes.append(f"observations.{key}: no topic gives the {width} values env {env!r} has; candidates: "
                     + (", ".join(f"{t} {f} ({n})" for t, f, n, _ in vectors) or "none")
                     + ": set topic and field, and select the dimensions the env has")
    topic, field = pick or ("/joint_states", "velocity" if key == "velocity" else "position")
    return {"topic": topic, "field": field}


def draft(paths: str | list[str], fmt: str, rows: list[dict], env: str, obs_mode: str, control_hz: float | None,
          dims: dict[str, int] | None = None, notes: list[str] | None = None) -> dict:
    """A mapping config guessed from ``rows`` (the streams of ``paths``; of a stream that several
    sources have, the first one's); every guess is worth a look (docs/import.md). ``dims`` (the
    env's sizes: ``action``, ``state`` or ``velocity``) let a bag's draft pick the topics that fit;
    what was picked and the candidates when nothing fits go to ``notes``."""
    notes = [] if notes is None else notes
    src: dict = {"format": fmt, "paths": [str(p) for p in ([paths] if isinstance(paths, str) else paths)]}
    first: dict[str, dict] = {}
    for r in rows:
        first.setdefault(r["stream"], r)
    rows = list(first.values())
    obs: dict = {}
    action: dict = {}
    hz = control_hz
    if fmt == "rosbag":
        dims = dims or {}
        image = _pick(rows, _is_image)
        command, field = _command(rows, dims.get("action"))
        skip = command["stream"] if command else None
        if obs_mode == "pixels":
            obs = {"image": {"topic": image["stream"] if image else "/camera/image_raw"},
                   "velocity": _observation(rows, "velocity", dims.get("velocity"), skip, env, notes)}
        else:
            obs = {"state": _observation(rows, "state", dims.get("state"), skip, env, notes)}
        action = {"topic": command["stream"] if command else "/cmd", "field": field}
        if hz is None and command is not None and command.get("rate_hz"):
            hz = round(float(command["rate_hz"]), 1)
            notes.append(f"target.control_hz: the rate of {command['stream']} (one row per command); it must be env "
                         f"{env!r}'s agent-step rate")
        hz = hz or 25.0
    elif fmt == "lerobot":
        info = rows[0]
        image = _pick(rows[1:], lambda r: r.get("type") in ("video", "image"))
        state = _pick(rows[1:], lambda r: r["stream"] == "observation.state")
        skey = state["stream"] if state else "observation.state"
        obs = ({"image": {"key": image["stream"] if image else "observation.images.main"}, "velocity": {"key": skey}}
               if obs_mode == "pixels" else {"state": {"key": skey}})
        action = {"key": "action"}
        hz = hz or float(info.get("fps") or 25)
    else:
        names = {r["stream"] for r in rows}
        if "data/demo_*" in names:
            src["preset"] = "robomimic"
            image = _pick(rows, lambda r: r["stream"].startswith("obs/") and len(r.get("shape") or []) == 3)
            vel = _pick(rows, lambda r: r["stream"].startswith("obs/") and "vel" in r["stream"])
            obs = ({"image": {"path": image["stream"] if image else "obs/agentview_image"},
                    "velocity": {"path": vel["stream"] if vel else "obs/robot0_joint_vel"}} if obs_mode == "pixels"
                   else {"state": {"path": "obs/robot0_joint_pos"}})
            action = {"path": "actions"}
            hz = hz or 20.0
        elif "observations/qpos" in names and "action" in names:
            src["preset"] = "aloha"
            cams = [r["stream"] for r in rows if r["stream"].startswith("observations/images/")]
            obs = ({"image": {"path": cams[0] if cams else "observations/images/cam_high"},
                    "velocity": {"path": "observations/qvel"}} if obs_mode == "pixels"
                   else {"state": {"parts": [{"path": "observations/qpos"}, {"path": "observations/qvel"}]}})
            action = {"path": "action"}
            hz = hz or 25.0
        else:
            src["rate"] = 50.0
            first = rows[0]["stream"] if rows else "obs"
            obs = ({"image": {"path": "images"}, "velocity": {"path": first}} if obs_mode == "pixels"
                   else {"state": {"path": first}})
            action = {"path": "action"}
            hz = hz or 25.0
    action.update({"low": None, "high": None})
    action = {k: v for k, v in action.items() if v is not None}
    return {"version": 1, "source": src, "target": {"env": env, "obs_mode": obs_mode, "control_hz": hz},
            "observations": obs, "action": action, "episodes": {"min_length": 64, "on_short": "drop"}}


DRAFT_HEADER = """\
# Draft mapping config written by `redraw data inspect`; check every line before importing
# (docs/import.md). Most often to fix: `select` (the dimensions your env expects, by name or
# index), action.low/high (your actuator's physical limits, mapped to [-1, 1]; sign only for a
# logging convention, never a reversed actuator), target.control_hz (the env's agent-step rate,
# which a bag's command topic must run at) and alignment.max_age.
"""
