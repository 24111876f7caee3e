"""A ``gymnasium.Env`` as the agent sees it, with the same conventions as ``DMCEnv``.

``gymnasium: ID`` in the env-pair file is built with ``gymnasium.make(ID, **kwargs)`` (its own
step limit lifted to the episode length here; the checker wrapper off), ``module:Class`` by
importing the class and calling ``Class(**kwargs)``. Then, as for dm_control: one agent step is
``action_repeat`` env steps with the same action and the reward of the last one; an episode
ends after ``episode_steps`` agent steps, on ``terminated`` (terminal) or ``truncated``; the
construction seed seeds the first ``reset``, ``reset(seed)`` any later one; actions must lie
in a finite ``Box``.

Observations: ``proprio`` needs a ``Box`` observation space (``state``, flattened, float32);
``pixels`` needs a ``Dict`` space holding one ``uint8`` image ``Box`` (H x W x 3, H = W =
``image_size``) and one other ``Box`` (``velocity``). Model perturbations need a MuJoCo env
(``env.unwrapped.model`` and ``.data``, as Gymnasium's MuJoCo envs have).
"""

from __future__ import annotations

import importlib

import numpy as np

from redraw.envs import perturbations as P
from redraw.envs.delays import Delays
from redraw.envs.obs_modes import check_obs_mode
from redraw.envs.registry import EnvSpec, load_pairs


def _construct(spec: EnvSpec, max_steps: int):
    try:
        import gymnasium as gym
    except ImportError:
        raise P.EnvFileError(f"{spec.sim_where}: needs the gymnasium package: pip install 'redraw[gymnasium]'") from None
    if ":" in spec.id:
        module, _, cls = spec.id.partition(":")
        try:
            factory = getattr(importlib.import_module(module), cls)
        except (ImportError, AttributeError) as exc:
            raise P.EnvFileError(f"{spec.sim_where}: cannot import {spec.id!r}: {exc}") from None
        return factory(**spec.kwargs)
    try:
        gym.spec(spec.id)
    except gym.error.Error:
        known = ", ".join(sorted(gym.registry)[:40])
        raise P.EnvFileError(f"{spec.sim_where}: no gymnasium env registered as {spec.id!r} "
                             f"(registered, first 40: {known})") from None
    return gym.make(spec.id, max_episode_steps=max_steps, disable_env_checker=True, **spec.kwargs)


class GymEnv:
    """Seeded Gymnasium env: ``reset() -> obs``; ``step(action) -> (obs, reward, done, terminal)``."""

    def __init__(self, name: str, obs_mode: str = "pixels", seed: int = 0, action_repeat: int = 2,
                 episode_steps: int = 500, image_size: int = 64, antialias: bool = False, pairs=None, **_render):
        import gymnasium as gym

        check_obs_mode(obs_mode)
        if action_repeat < 1 or episode_steps < 1:
            raise ValueError(f"action_repeat and episode_steps must be >= 1, got {action_repeat}, {episode_steps}")
        self.spec = load_pairs(pairs).get(name)
        self.name, self.obs_mode, self.image_size = name, obs_mode, image_size
        self.action_repeat, self.episode_steps = action_repeat, episode_steps
        self._env = _construct(self.spec, episode_steps * action_repeat)
        where = self.spec.sim_where
        space = self._env.action_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1 or not (
                np.all(np.isfinite(space.low)) and np.all(np.isfinite(space.high))):
            raise P.EnvFileError(f"{where}: the action space must be a 1-D Box with finite bounds, got {space}")
        self.action_size = int(space.shape[0])
        self.action_low = np.asarray(space.low, np.float32)
        self.action_high = np.asarray(space.high, np.float32)
        self._keys = self._observation_keys(gym, where)
        unwrapped = self._env.unwrapped
        dt = getattr(unwrapped, "dt", None) or (1.0 / unwrapped.metadata["render_fps"]
                                                if unwrapped.metadata.get("render_fps") else None)
        if not dt:
            raise P.EnvFileError(f"{where}: the env has neither .dt nor metadata['render_fps']; its control rate is unknown")
        self.control_hz = 1.0 / (float(dt) * action_repeat)
        self.render_settings = {"image_size": image_size, "antialias": antialias, "camera": "env observation"}
        self._seed, self._step = seed, 0
        self._install_perturbations(unwrapped)

    def _observation_keys(self, gym, where: str) -> dict[str, str | None]:
        """Our observation key -> the env's Dict key (None: the whole Box)."""
        space = self._env.observation_space
        if self.obs_mode == "proprio":
            if not isinstance(space, gym.spaces.Box):
                raise P.EnvFileError(f"{where}: proprio needs a Box observation space, got {space}")
            return {"state": None}
        if not isinstance(space, gym.spaces.Dict):
            raise P.EnvFileError(f"{where}: pixels needs a Dict observation space (an image Box and a Box), got {space}")
        images = [k for k, s in space.spaces.items() if s.dtype == np.uint8 and len(s.shape) == 3]
        others = [k for k, s in space.spaces.items() if k not in images and isinstance(s, gym.spaces.Box)]
        if len(images) != 1 or len(others) != 1 or len(space.spaces) != 2:
            raise P.EnvFileError(f"{where}: pixels needs exactly one uint8 HxWx3 image Box and one other Box, got {space}")
        shape = space.spaces[images[0]].shape
        if tuple(shape) != (self.image_size, self.image_size, 3):
            raise P.EnvFileError(f"{where}: the image {images[0]!r} is {shape}, env.image_size asks for "
                                 f"({self.image_size}, {self.image_size}, 3)")
        return {"image": images[0], "velocity": others[0]}

    def _install_perturbations(self, unwrapped) -> None:
        perts, where = self.spec.perturbations, self.spec.where
        neutral = np.clip(np.zeros(self.action_size), self.action_low, self.action_high).astype(np.float64)
        self._delays = Delays(P.delay_steps(perts, P.ActionDelay), P.delay_steps(perts, P.ObservationDelay), neutral)
        self._transform = P.action_transform(perts, self.action_size, where)
        self._wrenches: list = []
        needs_model = [p for p in perts if isinstance(p, (*P.MODEL_KINDS, P.Wrench))]
        self.model = getattr(unwrapped, "model", None)
        self.data = getattr(unwrapped, "data", None)
        if needs_model and (self.model is None or self.data is None):
            raise P.EnvFileError(f"{where}: {needs_model[0].KIND} needs a MuJoCo env (env.unwrapped.model and .data)")
        if needs_model:
            P.apply_model(self.model, self.data, perts, where)
            self._wrenches = P.wrenches(self.model, perts, where)

    def observation_spec(self) -> dict[str, tuple[tuple[int, ...], str]]:
        space = self._env.observation_space
        if self.obs_mode == "proprio":
            return {"state": ((int(np.prod(space.shape)),), "float32")}
        vel = space.spaces[self._keys["velocity"]].shape
        return {"image": ((self.image_size, self.image_size, 3), "uint8"), "velocity": ((int(np.prod(vel)),), "float32")}

    def _observe(self, obs) -> dict[str, np.ndarray]:
        if self.obs_mode == "proprio":
            return {"state": np.asarray(obs, np.float32).ravel().copy()}
        return {"image": np.asarray(obs[self._keys["image"]], np.uint8).copy(),
                "velocity": np.asarray(obs[self._keys["velocity"]], np.float32).ravel().copy()}

    def _apply_wrenches(self) -> None:
        for body_id, wrench in self._wrenches:  # reset clears xfrc_applied; it persists through the steps
            self.data.xfrc_applied[body_id] = wrench

    def reset(self, seed: int | None = None) -> dict[str, np.ndarray]:
        if seed is None and self._seed is not None:
            seed, self._seed = self._seed, None  # the construction seed seeds the first episode
        obs, _ = self._env.reset(seed=seed)
        self._apply_wrenches()
        self._step = 0
        return self._delays.reset(self._observe(obs))

    def step(self, action: np.ndarray) -> tuple[dict[str, np.ndarray], float, bool, bool]:
        action = np.asarray(action, np.float64).reshape(self.action_size)
        if not np.all(np.isfinite(action)):
            raise ValueError(f"{self.name}: non-finite action {action}")
        action = self._delays.action(action)
        command = action if self._transform is None else self._transform(action)
        command = command.astype(self._env.action_space.dtype)
        reward, terminal, truncated = 0.0, False, False
        for _ in range(self.action_repeat):
            self._apply_wrenches()
            obs, r, terminal, truncated, _ = self._env.step(command)
            reward = float(r)  # reward of the last sub-step
            if terminal or truncated:
                break
        self._step += 1
        done = bool(terminal or truncated or self._step >= self.episode_steps)
        return self._delays.observation(self._observe(obs)), reward, done, bool(terminal)

    def render(self) -> np.ndarray:
        raise RuntimeError("a gymnasium env's image is part of its observation (obs_mode 'pixels')")

    def close(self) -> None:
        if getattr(self, "_env", None) is not None:
            self._env.close()
            self._env = None

    def __enter__(self) -> "GymEnv":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
