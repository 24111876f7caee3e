"""The perturbations a target applies to its source, as the env-pair file spells them.

Three families, applied at three places (docs/envs.md):

* **model** (``body_mass``, ``geom_friction``, ``joint_damping``, ``actuator_gear``, ``gravity``):
  set once on the MuJoCo model after loading, by name, then ``mj_setConst`` re-derives the
  constants that depend on them (as compiling the edited XML would);
* **control** (``reverse_actions``, ``action_scale``, ``action_offset``, ``wrench``): every control
  step, on the command the actuators receive or as a force on a body;
* **timing** (``action_delay``, ``observation_delay``): in agent steps, in the env's step loop.

Parsing is pure Python (no MuJoCo import), so a file can be checked anywhere; the names of
bodies, geoms, joints and actuators are checked against the model when an env is built.
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar

import numpy as np

from redraw.config import is_count


class EnvFileError(ValueError):
    """An env-pair file is wrong; the message names the file, the env and the key."""


def _vector(value: Any, n: int, where: str) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != n or not all(_is_number(v) for v in value):
        raise EnvFileError(f"{where}: expected a list of {n} numbers, got {value!r}")
    return tuple(float(v) for v in value)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def _per_dim(value: Any, where: str, positive: bool) -> float | tuple[float, ...]:
    """A number for every action dimension, or a list with one per dimension."""
    items = value if isinstance(value, (list, tuple)) else [value]
    if not items or not all(_is_number(v) for v in items):
        raise EnvFileError(f"{where}: expected a number or a list of numbers, got {value!r}")
    if positive and any(v <= 0 for v in items):
        raise EnvFileError(f"{where}: must be positive, got {value!r}")
    return tuple(float(v) for v in items) if isinstance(value, (list, tuple)) else float(value)


def _scale(value: Any, where: str) -> float:
    if not _is_number(value) or value <= 0:
        raise EnvFileError(f"{where}: must be a positive number, got {value!r}")
    return float(value)


def _steps(value: Any, where: str) -> int:
    if not is_count(value):
        raise EnvFileError(f"{where}: must be a non-negative whole number of agent steps, got {value!r}")
    return value


def _name(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise EnvFileError(f"{where}: must be a name from the MuJoCo model, got {value!r}")
    return value


def _fmt(v) -> str:
    return "[" + ", ".join(f"{x:g}" for x in v) + "]" if isinstance(v, tuple) else f"{v:g}"


# -- control ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Wrench:
    """Constant force (N) and torque (N m) on ``body`` in the world frame, every physics step."""

    KIND: ClassVar[str] = "wrench"
    body: str
    force: tuple[float, float, float] = (0.0, 0.0, 0.0)
    torque: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def describe(self) -> str:
        return f"force {self.force} N, torque {self.torque} N m on body '{self.body}' (xfrc_applied)"


@dataclass(frozen=True)
class ReverseActions:
    """The actuators receive ``-action`` in every dimension."""

    KIND: ClassVar[str] = "reverse_actions"

    def describe(self) -> str:
        return "control = -action"


@dataclass(frozen=True)
class ActionScale:
    """The actuators receive ``scale * action`` (one positive factor, or one per dimension)."""

    KIND: ClassVar[str] = "action_scale"
    scale: float | tuple[float, ...]

    def describe(self) -> str:
        return f"control = {_fmt(self.scale)} * action"


@dataclass(frozen=True)
class ActionOffset:
    """The actuators receive ``action + offset`` (one number, or one per dimension)."""

    KIND: ClassVar[str] = "action_offset"
    offset: float | tuple[float, ...]

    def describe(self) -> str:
        return f"control = action + {_fmt(self.offset)}"


# -- timing -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ActionDelay:
    """The action chosen at agent step t acts at step t + steps (the first ``steps`` act neutral)."""

    KIND: ClassVar[str] = "action_delay"
    steps: int

    def describe(self) -> str:
        return f"actions act {self.steps} agent step(s) late"


@dataclass(frozen=True)
class ObservationDelay:
    """The observation returned at agent step t is the one of step t - steps (the first repeats)."""

    KIND: ClassVar[str] = "observation_delay"
    steps: int

    def describe(self) -> str:
        return f"observations arrive {self.steps} agent step(s) late"


# -- model --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BodyMass:
    """``body``'s mass and rotational inertia x ``scale`` (the same shape, denser)."""

    KIND: ClassVar[str] = "body_mass"
    body: str
    scale: float

    def describe(self) -> str:
        return f"mass and inertia of body '{self.body}' x {self.scale:g}"


@dataclass(frozen=True)
class GeomFriction:
    """``geom``'s sliding, torsional and rolling friction x ``scale`` (a contact uses the larger
    coefficient of its two geoms, so scale both to lower a contact's friction)."""

    KIND: ClassVar[str] = "geom_friction"
    geom: str
    scale: float

    def describe(self) -> str:
        return f"friction of geom '{self.geom}' x {self.scale:g}"


@dataclass(frozen=True)
class JointDamping:
    """``joint``'s viscous damping x ``scale`` (every degree of freedom of the joint)."""

    KIND: ClassVar[str] = "joint_damping"
    joint: str
    scale: float

    def describe(self) -> str:
        return f"damping of joint '{self.joint}' x {self.scale:g}"


@dataclass(frozen=True)
class ActuatorGear:
    """``actuator``'s gear x ``scale``: a motor's force or torque per unit control x ``scale``."""

    KIND: ClassVar[str] = "actuator_gear"
    actuator: str
    scale: float

    def describe(self) -> str:
        return f"gear of actuator '{self.actuator}' x {self.scale:g}"


@dataclass(frozen=True)
class Gravity:
    """The gravity vector (m/s^2, world frame) replaces the model's."""

    KIND: ClassVar[str] = "gravity"
    vector: tuple[float, float, float]

    def describe(self) -> str:
        return f"gravity {self.vector} m/s^2"


Perturbation = (Wrench | ReverseActions | ActionScale | ActionOffset | ActionDelay | ObservationDelay | BodyMass
                | GeomFriction | JointDamping | ActuatorGear | Gravity)
KINDS: dict[str, type] = {cls.KIND: cls for cls in (Wrench, ReverseActions, ActionScale, ActionOffset, ActionDelay,
                                                    ObservationDelay, BodyMass, GeomFriction, JointDamping,
                                                    ActuatorGear, Gravity)}
MODEL_KINDS = (BodyMass, GeomFriction, JointDamping, ActuatorGear, Gravity)
#: field -> checker(value, where)
_FIELDS = {"body": _name, "geom": _name, "joint": _name, "actuator": _name, "scale": _scale,
           "steps": _steps, "force": lambda v, w: _vector(v, 3, w), "torque": lambda v, w: _vector(v, 3, w),
           "vector": lambda v, w: _vector(v, 3, w), "offset": lambda v, w: _per_dim(v, w, positive=False)}


def parse(entry: Any, where: str) -> Perturbation:
    """One ``perturbations`` entry (``{kind: ..., field: value}``) -> its dataclass."""
    if not isinstance(entry, dict) or "kind" not in entry:
        raise EnvFileError(f"{where}: expected a mapping with a 'kind' (one of {', '.join(KINDS)}), got {entry!r}")
    kind = entry["kind"]
    if kind not in KINDS:
        raise EnvFileError(f"{where}.kind: unknown perturbation kind {kind!r} (kinds: {', '.join(KINDS)})")
    cls = KINDS[kind]
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(entry) - set(known) - {"kind"})
    if unknown:
        raise EnvFileError(f"{where}.{unknown[0]}: unknown field for {kind} (its fields: {', '.join(known) or 'none'})")
    values = {}
    for name, f in known.items():
        if name not in entry:
            if f.default is MISSING:
                raise EnvFileError(f"{where}: {kind} needs '{name}' (its fields: {', '.join(known)})")
            continue
        check = _FIELDS[name]
        if cls is ActionScale and name == "scale":
            check = lambda v, w: _per_dim(v, w, positive=True)  # noqa: E731 - one per action dimension
        values[name] = check(entry[name], f"{where}.{name}")
    return cls(**values)


def to_mapping(p: Perturbation) -> dict:
    """The file form of ``p`` (``parse(to_mapping(p)) == p``)."""
    out: dict = {"kind": p.KIND}
    for f in fields(p):
        v = getattr(p, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


# -- applying -----------------------------------------------------------------------------------
_OBJ = {"body": "mjOBJ_BODY", "geom": "mjOBJ_GEOM", "joint": "mjOBJ_JOINT", "actuator": "mjOBJ_ACTUATOR"}


def model_id(model, kind: str, name: str, where: str) -> int:
    """The id of ``name`` in the raw ``mujoco.MjModel``; an unknown name lists the valid ones."""
    import mujoco

    obj = getattr(mujoco.mjtObj, _OBJ[kind])
    i = mujoco.mj_name2id(model, obj, name)
    if i < 0:
        count = {"body": model.nbody, "geom": model.ngeom, "joint": model.njnt, "actuator": model.nu}[kind]
        valid = [n for n in (mujoco.mj_id2name(model, obj, j) for j in range(count)) if n]
        plural = "bodies" if kind == "body" else f"{kind}s"
        raise EnvFileError(f"{where}.{kind}: no {kind} named {name!r} in the model ({plural}: {', '.join(valid)})")
    return i


def apply_model(model, data, perturbations, where: str) -> bool:
    """Set the model perturbations on ``model`` (a raw ``mujoco.MjModel``); True if any was set."""
    import mujoco

    changed = False
    for i, p in enumerate(perturbations):
        at = f"{where}.perturbations[{i}]"
        if isinstance(p, BodyMass):
            b = model_id(model, "body", p.body, at)
            if model.body_mass[b] <= 0:
                raise EnvFileError(f"{at}.body: body {p.body!r} has no mass in the model; scaling it does nothing")
            model.body_mass[b] *= p.scale
            model.body_inertia[b] *= p.scale
        elif isinstance(p, GeomFriction):
            g = model_id(model, "geom", p.geom, at)
            model.geom_friction[g] *= p.scale
        elif isinstance(p, JointDamping):
            j = model_id(model, "joint", p.joint, at)
            n = {mujoco.mjtJoint.mjJNT_FREE: 6, mujoco.mjtJoint.mjJNT_BALL: 3}.get(int(model.jnt_type[j]), 1)
            dofs = slice(model.jnt_dofadr[j], model.jnt_dofadr[j] + n)
            if not model.dof_damping[dofs].any():
                raise EnvFileError(f"{at}.joint: joint {p.joint!r} has no damping in the model; scaling it does nothing")
            model.dof_damping[dofs] *= p.scale
        elif isinstance(p, ActuatorGear):
            a = model_id(model, "actuator", p.actuator, at)
            model.actuator_gear[a] *= p.scale
        elif isinstance(p, Gravity):
            model.opt.gravity[:] = p.vector
        else:
            continue
        changed = True
    if changed:
        mujoco.mj_setConst(model, data)
    return changed


def wrenches(model, perturbations, where: str) -> list[tuple[int, np.ndarray]]:
    """(body id, 6-vector) for every body with a wrench; wrenches on one body add up."""
    total: dict[int, np.ndarray] = {}
    for i, p in enumerate(perturbations):
        if isinstance(p, Wrench):
            b = model_id(model, "body", p.body, f"{where}.perturbations[{i}]")
            w = np.asarray(p.force + p.torque, np.float64)
            total[b] = total[b] + w if b in total else w
    return list(total.items())


def action_transform(perturbations, action_size: int, where: str):
    """The command the actuators get for an action (the control perturbations in file order),
    or None when there are none."""
    steps = []
    for i, p in enumerate(perturbations):
        at = f"{where}.perturbations[{i}]"
        if isinstance(p, ReverseActions):
            steps.append(("neg", None))
        elif isinstance(p, (ActionScale, ActionOffset)):
            name = "scale" if isinstance(p, ActionScale) else "offset"
            v = getattr(p, name)
            if isinstance(v, tuple) and len(v) != action_size:
                raise EnvFileError(f"{at}.{name}: {len(v)} values for an action of size {action_size}")
            steps.append((name, np.asarray(v, np.float64)))
    if not steps:
        return None

    def transform(action):
        a = np.asarray(action)
        for op, v in steps:
            a = -a if op == "neg" else a * v if op == "scale" else a + v
        return a

    return transform


def delay_steps(perturbations, kind: type) -> int:
    return sum(p.steps for p in perturbations if isinstance(p, kind))
