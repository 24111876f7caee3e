"""A dm_control task as the agent sees it: action repeat, fixed-length episodes, two obs modes.

Observations are dicts. ``pixels``: ``image`` (H x W x 3 uint8 from camera 0) and ``velocity``
(the task's joint velocities, float32). ``proprio``: ``state``, the task's observation vector
(all its entries flattened in dm_control's order, float32).

Rendering uses one persistent ``mujoco.Renderer`` per env with shadows and reflections off
and, unless ``antialias``, no multisampling (4x MSAA costs 3-4x in software rendering at
64x64); the settings are the same in source and target and recorded in the data's metadata.
"""

from __future__ import annotations

import math

import numpy as np

from redraw.envs import perturbations as P
from redraw.envs.delays import Delays
from redraw.envs.obs_modes import check_obs_mode
from redraw.envs.registry import EnvSpec, load_pairs


def check_task(spec: EnvSpec) -> None:
    """Refuse a dm_control ``domain/task`` the suite does not have, listing the valid ones."""
    from dm_control import suite

    if (spec.domain, spec.task) in suite.ALL_TASKS:
        return
    domains = sorted({d for d, _ in suite.ALL_TASKS})
    if spec.domain not in domains:
        raise P.EnvFileError(f"{spec.sim_where}: unknown dm_control domain {spec.domain!r} (domains: {', '.join(domains)})")
    tasks = sorted(t for d, t in suite.ALL_TASKS if d == spec.domain)
    raise P.EnvFileError(f"{spec.sim_where}: unknown task {spec.task!r} of domain {spec.domain!r} (tasks: {', '.join(tasks)})")


class DMCEnv:
    """Seeded, deterministic dm_control env with the paper's conventions.

    ``reset() -> obs``; ``step(action) -> (obs, reward, done, terminal)``. One agent step is
    ``action_repeat`` control steps with the same action; the reward is that of the *last*
    sub-step (docs/method.md#environments). An episode lasts ``episode_steps`` agent steps. ``name`` is an env of
    the env-pair file ``pairs`` (default: the repository's envs.yaml); a target's perturbations
    are applied as ``redraw.envs.perturbations`` describes.
    """

    def __init__(
        self,
        name: str,
        obs_mode: str = "pixels",
        seed: int = 0,
        action_repeat: int = 2,
        episode_steps: int = 500,
        image_size: int = 64,
        camera: int = 0,
        shadows: bool = False,
        reflections: bool = False,
        antialias: bool = False,
        pairs=None,
    ):
        from dm_control import suite

        check_obs_mode(obs_mode)
        if action_repeat < 1 or episode_steps < 1:
            raise ValueError(f"action_repeat and episode_steps must be >= 1, got {action_repeat}, {episode_steps}")
        self.spec: EnvSpec = load_pairs(pairs).get(name)
        if self.spec.simulator != "dm_control":
            raise ValueError(f"{self.spec.where}: {name!r} is a {self.spec.simulator} env; build it with make_env")
        check_task(self.spec)
        self.name = name
        self.obs_mode = obs_mode
        self.action_repeat = action_repeat
        self.episode_steps = episode_steps
        self.image_size = image_size
        self.camera = camera
        self.render_settings = {"shadows": shadows, "reflections": reflections, "antialias": antialias,
                                "camera": camera, "image_size": image_size}
        self._env = suite.load(
            self.spec.domain,
            self.spec.task,
            task_kwargs={"random": seed, "time_limit": float("inf")},
        )
        self.physics = self._env.physics
        aspec = self._env.action_spec()
        self.action_size = int(aspec.shape[0])
        self.action_low = np.asarray(aspec.minimum, np.float32)
        self.action_high = np.asarray(aspec.maximum, np.float32)
        self._install_perturbations()
        self.control_hz = 1.0 / (self._env.control_timestep() * action_repeat)
        self._renderer = None
        if obs_mode == "pixels":
            import mujoco

            if not antialias:
                self.physics.model.vis.quality.offsamples = 0
            self._renderer = mujoco.Renderer(self.physics.model.ptr, image_size, image_size)
            self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = int(shadows)
            self._renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = int(reflections)
        self._step = 0

    # -- perturbations ------------------------------------------------------------------------
    def _install_perturbations(self) -> None:
        """Model perturbations on the loaded model; control ones in the task's ``before_step``
        (which dm_control calls before the physics sub-steps of every control step); timing ones
        in ``step``."""
        perts, where = self.spec.perturbations, self.spec.where
        neutral = np.clip(np.zeros(self.action_size), self.action_low, self.action_high).astype(np.float64)
        self._delays = Delays(P.delay_steps(perts, P.ActionDelay), P.delay_steps(perts, P.ObservationDelay), neutral)
        if not perts:
            return
        P.apply_model(self.physics.model.ptr, self.physics.data.ptr, perts, where)
        transform = P.action_transform(perts, self.action_size, where)
        wrenches = P.wrenches(self.physics.model.ptr, perts, where)
        if transform is None and not wrenches:
            return
        task = self._env.task
        original = task.before_step

        def before_step(action, physics):
            original(action if transform is None else transform(action), physics)
            # xfrc_applied persists through every mj_step of this control step (MuJoCo
            # never clears it), so the wrench acts before every physics step.
            for body_id, wrench in wrenches:
                physics.data.xfrc_applied[body_id] = wrench

        task.before_step = before_step

    # -- spaces -------------------------------------------------------------------------------
    def observation_spec(self) -> dict[str, tuple[tuple[int, ...], str]]:
        """Observation key -> (shape, dtype name)."""
        dm_spec = self._env.observation_spec()
        if self.obs_mode == "pixels":
            vel = dm_spec["velocity"].shape
            return {
                "image": ((self.image_size, self.image_size, 3), "uint8"),
                "velocity": ((int(np.prod(vel)),), "float32"),
            }
        size = int(sum(int(np.prod(s.shape)) for s in dm_spec.values()))
        return {"state": ((size,), "float32")}

    def observation_names(self) -> dict[str, list[str]]:
        """Vector observation key -> one name per dimension, from dm_control's entries (e.g.
        pendulum's ``state``: ``orientation[0]``, ``orientation[1]``, ``velocity``); images have none."""
        return dimension_names(self._env.observation_spec(), self.obs_mode)

    # -- stepping -----------------------------------------------------------------------------
    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        """Start an episode. ``seed`` re-seeds the task's initial-state sampler."""
        if seed is not None:
            self._env.task.random.seed(seed)
        self._step = 0
        ts = self._env.reset()
        return self._delays.reset(self._observe(ts.observation))

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool]:
        action = np.asarray(action, np.float64).reshape(self.action_size)
        if not np.all(np.isfinite(action)):
            raise ValueError(f"{self.name}: non-finite action {action}")
        reward, terminal = 0.0, False
        action = self._delays.action(action)
        for _ in range(self.action_repeat):
            ts = self._env.step(action)
            reward = float(ts.reward or 0.0)  # reward of the last sub-step
            if ts.last():
                terminal = ts.discount == 0.0
                break
        self._step += 1
        done = terminal or ts.last() or self._step >= self.episode_steps
        return self._delays.observation(self._observe(ts.observation)), reward, done, bool(terminal)

    def _observe(self, dm_obs) -> dict[str, np.ndarray]:
        if self.obs_mode == "proprio":
            state = np.concatenate([np.asarray(v, np.float32).ravel() for v in dm_obs.values()])
            return {"state": state}
        return {"image": self.render(), "velocity": np.asarray(dm_obs["velocity"], np.float32).ravel()}

    def render(self) -> np.ndarray:
        if self._renderer is None:
            raise RuntimeError("render() needs obs_mode='pixels'")
        self._renderer.update_scene(self.physics.data.ptr, camera=self.camera)
        return self._renderer.render().copy()

    def close(self) -> None:
        if self._renderer is not None:
            self._renderer.close()
            self._renderer = None

    def __enter__(self) -> "DMCEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # the GL context must go before the interpreter tears EGL down
        try:
            self.close()
        except Exception:
            pass


def dimension_names(dm_spec, obs_mode: str) -> dict[str, list[str]]:
    """Per-dimension names of the vector observations built from a dm_control observation spec:
    an entry of size 1 keeps its name, a longer one is indexed (``orientation[0]``)."""
    def names(entries) -> list[str]:
        out = []
        for key, spec in entries:
            size = int(np.prod(spec.shape))
            out += [key] if size == 1 else [f"{key}[{i}]" for i in range(size)]
        return out

    if obs_mode == "pixels":
        return {"velocity": names([("velocity", dm_spec["velocity"])])}
    return {"state": names(dm_spec.items())}


def observation_names(name: str, obs_mode: str, pairs=None) -> dict[str, list[str]] | None:
    """:meth:`DMCEnv.observation_names` of env ``name`` of the env-pair file ``pairs`` without
    building a renderer; None where there are none to give (a Gymnasium env, or a name that is no
    env of the file, such as a real robot's): figures then label dimensions by index."""
    check_obs_mode(obs_mode)
    try:
        if load_pairs(pairs).get(name).simulator != "dm_control":
            return None
    except Exception:  # noqa: BLE001 - not an env of the file: no names, labels by index
        return None
    with DMCEnv(name, obs_mode="proprio", pairs=pairs) as env:
        return dimension_names(env._env.observation_spec(), obs_mode)


def build_env(name: str, obs_mode: str = "pixels", seed: int = 0, pairs=None, **kwargs):
    """Env ``name`` in its simulator, without ``make_env``'s check of a target's own spaces."""
    from redraw.envs.gymnasium_env import GymEnv

    cls = DMCEnv if load_pairs(pairs).get(name).simulator == "dm_control" else GymEnv
    return cls(name, obs_mode=obs_mode, seed=seed, pairs=pairs, **kwargs)


def make_env(name: str, obs_mode: str = "pixels", seed: int = 0, pairs=None, **kwargs):
    """Build env ``name`` of the env-pair file ``pairs`` (a path, a file's content, or None for the
    repository's envs.yaml), whichever simulator it runs in."""
    spec = load_pairs(pairs).get(name)
    env = build_env(name, obs_mode, seed, pairs, **kwargs)
    if spec.has_own_simulator:
        try:
            check_same_spaces(env, spec, pairs, obs_mode, kwargs)
        except Exception:
            env.close()
            raise
    return env


#: dm_control's suite rewards lie in [0, 1] (``dm_control.utils.rewards``)
DM_CONTROL_REWARDS = (0.0, 1.0)


def reward_bounds(name: str, pairs=None) -> tuple[float, float, str]:
    """``(lo, hi, where)``: the range env ``name``'s rewards lie in (an infinite side: no bound)
    and where it comes from. The env-pair file's ``reward_range`` on the env or, for a target,
    on its source; else dm_control's [0, 1] for a dm_control env; else a Gymnasium env's
    ``reward_range`` attribute, its finite sides; else no bound."""
    registry = load_pairs(pairs)
    spec = registry.get(name)
    for entry in (spec, registry.envs.get(spec.source)):
        if entry is not None and entry.reward_range is not None:
            return (*entry.reward_range, f"{entry.where}.reward_range")
    if spec.simulator == "dm_control":
        return (*DM_CONTROL_REWARDS, f"dm_control's rewards ({spec.sim_where})")
    from redraw.envs.gymnasium_env import _construct

    env = _construct(spec, 1)
    try:
        declared = getattr(env.unwrapped, "reward_range", None)
    finally:
        env.close()
    try:
        lo, hi = (float(v) for v in declared)
    except (TypeError, ValueError):
        return -math.inf, math.inf, f"no range: the Gymnasium env declares none ({spec.sim_where})"
    lo, hi = (lo if math.isfinite(lo) else -math.inf), (hi if math.isfinite(hi) else math.inf)
    return lo, hi, f"the Gymnasium env's reward_range ({spec.sim_where})"


def env_spaces(env) -> dict[str, object]:
    """What a source and its target must share: the observations and the action space."""
    return {"observations": env.observation_spec(), "action size": env.action_size,
            "action low bounds": env.action_low.tolist(), "action high bounds": env.action_high.tolist()}


def check_same_spaces(env, spec: EnvSpec, pairs, obs_mode: str, kwargs: dict) -> None:
    """Refuse a target whose observation or action space is not its source's."""
    with build_env(spec.source, obs_mode, pairs=pairs, **kwargs) as src:
        mine, theirs = env_spaces(env), env_spaces(src)
    for what, a in mine.items():
        if a != theirs[what]:
            raise P.EnvFileError(f"{spec.where}: the target's {what} {a} differ from its source "
                                 f"{spec.source!r}'s {theirs[what]}; a target must have its source's spaces")
