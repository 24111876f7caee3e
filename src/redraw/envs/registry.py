"""The four source -> target pairs of the paper (METHOD.md, "Environments"), by name.

A target differs from its source by one perturbation applied before every physics step:
a constant world-frame wrench on a body (``xfrc_applied``) or negated actions.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Wrench:
    """Constant force (N) and torque (N m) on ``body`` in the world frame, every physics step."""

    body: str
    force: tuple[float, float, float] = (0.0, 0.0, 0.0)
    torque: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def describe(self) -> str:
        return f"force {self.force} N, torque {self.torque} N m on body '{self.body}' (xfrc_applied)"


@dataclass(frozen=True)
class ReverseActions:
    """The actuators receive ``-action`` in every dimension."""

    def describe(self) -> str:
        return "control = -action"


Perturbation = Wrench | ReverseActions


@dataclass(frozen=True)
class EnvSpec:
    name: str  #: registered name, e.g. ``cup-catch-windy``
    domain: str  #: dm_control suite domain
    task: str  #: dm_control suite task
    perturbation: Perturbation | None = None
    source: str | None = None  #: for a target: the source env it perturbs

    @property
    def is_target(self) -> bool:
        return self.perturbation is not None


_SOURCES = {
    "cup-catch": ("ball_in_cup", "catch"),
    "finger-turn_hard": ("finger", "turn_hard"),
    "pendulum-swingup": ("pendulum", "swingup"),
    "reacher-easy": ("reacher", "easy"),
}
_TARGETS = {
    "cup-catch-windy": ("cup-catch", Wrench("ball", force=(-2.0, 0.0, 0.0))),
    "finger-turn_hard-torque": ("finger-turn_hard", Wrench("spinner", torque=(0.0, 4.0, 0.0))),
    "pendulum-swingup-reversed": ("pendulum-swingup", ReverseActions()),
    "reacher-easy-reversed": ("reacher-easy", ReverseActions()),
}

ENVS: dict[str, EnvSpec] = {name: EnvSpec(name, *dt) for name, dt in _SOURCES.items()}
ENVS.update(
    {
        name: EnvSpec(name, *_SOURCES[src], perturbation=pert, source=src)
        for name, (src, pert) in _TARGETS.items()
    }
)
#: source name -> target name
PAIRS: dict[str, str] = {spec.source: name for name, spec in ENVS.items() if spec.source}


def get_spec(name: str) -> EnvSpec:
    try:
        return ENVS[name]
    except KeyError:
        raise KeyError(f"unknown env {name!r}; registered envs: {', '.join(ENVS)}") from None


def target_of(source: str) -> str:
    get_spec(source)
    if source not in PAIRS:
        raise KeyError(f"{source!r} is not a source env; sources: {', '.join(PAIRS)}")
    return PAIRS[source]


def source_of(target: str) -> str:
    spec = get_spec(target)
    if spec.source is None:
        raise KeyError(f"{target!r} is not a target env; targets: {', '.join(PAIRS.values())}")
    return spec.source
