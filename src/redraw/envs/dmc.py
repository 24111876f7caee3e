"""A dm_control task as the agent sees it: action repeat, fixed-length episodes, two obs modes.

Observations are dicts. ``pixels``: ``image`` (H x W x 3 uint8 from camera 0) and ``velocity``
(the task's joint velocities, float32). ``proprio``: ``state``, the task's observation vector
(all its entries flattened in dm_control's order, float32).

Rendering uses one persistent ``mujoco.Renderer`` per env with shadows and reflections off
and, unless ``antialias``, no multisampling (4x MSAA costs 3-4x in software rendering at
64x64); the settings are the same in source and target and recorded in the data's metadata.
"""

from __future__ import annotations

import numpy as np

from redraw.envs.registry import EnvSpec, ReverseActions, Wrench, get_spec

OBS_MODES = ("pixels", "proprio")


class DMCEnv:
    """Seeded, deterministic dm_control env with the paper's conventions.

    ``reset() -> obs``; ``step(action) -> (obs, reward, done, terminal)``. One agent step is
    ``action_repeat`` control steps with the same action; the reward is that of the *last*
    sub-step (METHOD.md). An episode lasts ``episode_steps`` agent steps.
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
    ):
        from dm_control import suite

        if obs_mode not in OBS_MODES:
            raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
        if action_repeat < 1 or episode_steps < 1:
            raise ValueError(f"action_repeat and episode_steps must be >= 1, got {action_repeat}, {episode_steps}")
        self.spec: EnvSpec = get_spec(name)
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
        self._install_perturbation()
        aspec = self._env.action_spec()
        self.action_size = int(aspec.shape[0])
        self.action_low = np.asarray(aspec.minimum, np.float32)
        self.action_high = np.asarray(aspec.maximum, np.float32)
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

    # -- perturbation -------------------------------------------------------------------------
    def _install_perturbation(self) -> None:
        """Wrap the task's ``before_step``, which dm_control calls before the physics sub-steps."""
        pert = self.spec.perturbation
        if pert is None:
            return
        task = self._env.task
        original = task.before_step
        if isinstance(pert, ReverseActions):

            def before_step(action, physics):
                original(-np.asarray(action), physics)

        elif isinstance(pert, Wrench):
            body_id = self.physics.model.name2id(pert.body, "body")
            wrench = np.asarray(pert.force + pert.torque, np.float64)

            def before_step(action, physics):
                original(action, physics)
                # xfrc_applied persists through every mj_step of this control step (MuJoCo
                # never clears it), so the wrench acts before every physics step.
                physics.data.xfrc_applied[body_id] = wrench

        else:  # pragma: no cover - registry only holds the two kinds
            raise TypeError(f"unknown perturbation {pert!r}")
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
        return self._observe(ts.observation)

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool]:
        action = np.asarray(action, np.float64).reshape(self.action_size)
        if not np.all(np.isfinite(action)):
            raise ValueError(f"{self.name}: non-finite action {action}")
        reward, terminal = 0.0, False
        for _ in range(self.action_repeat):
            ts = self._env.step(action)
            reward = float(ts.reward or 0.0)  # reward of the last sub-step
            if ts.last():
                terminal = ts.discount == 0.0
                break
        self._step += 1
        done = terminal or ts.last() or self._step >= self.episode_steps
        return self._observe(ts.observation), reward, done, bool(terminal)

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


def observation_names(name: str, obs_mode: str) -> dict[str, list[str]]:
    """:meth:`DMCEnv.observation_names` of env ``name`` without building a renderer."""
    if obs_mode not in OBS_MODES:
        raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
    return dimension_names(DMCEnv(name, obs_mode="proprio")._env.observation_spec(), obs_mode)


def make_env(name: str, obs_mode: str = "pixels", seed: int = 0, **kwargs) -> DMCEnv:
    return DMCEnv(name, obs_mode=obs_mode, seed=seed, **kwargs)
