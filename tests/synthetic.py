"""Small, valid synthetic data sets on disk for tests (docs/episode-schema.md).

    meta = make_dataset(tmp_path / "data", obs_mode="pixels", episodes=2, steps=70)

Every episode meets the contract of ``redraw.validation``: float32 actions in [-1, 1], rewards in
[0, 1], ``is_first`` only at row 0, ``is_last`` only at the final row, non-blank textured images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from redraw.data.episodes import Episode, episode_name, save_episode
from redraw.data.schema import DatasetMeta, write_metadata

#: env name prefix -> (action size, proprio state size, pixels velocity size)
SIZES = {
    "pendulum": (1, 3, 1),
    "cup": (2, 8, 4),
    "finger": (2, 12, 3),
    "reacher": (2, 6, 2),
}
CONTROL_HZ = {"pendulum": 25.0}


def make_meta(
    env: str = "pendulum-swingup-reversed",
    obs_mode: str = "proprio",
    image_size: int = 64,
    seed: int | None = 0,
) -> DatasetMeta:
    """The metadata a collector would write for ``env`` / ``obs_mode``."""
    action_size, state_size, velocity_size = SIZES.get(env.split("-")[0], (2, 6, 2))
    if obs_mode == "pixels":
        observations = {
            "image": {"shape": [image_size, image_size, 3], "dtype": "uint8"},
            "velocity": {"shape": [velocity_size], "dtype": "float32"},
        }
    elif obs_mode == "proprio":
        observations = {"state": {"shape": [state_size], "dtype": "float32"}}
    else:
        raise ValueError(f"obs_mode {obs_mode!r}")
    return DatasetMeta(
        env=env,
        obs_mode=obs_mode,
        control_hz=CONTROL_HZ.get(env.split("-")[0], 50.0),
        action_size=action_size,
        action_low=[-1.0] * action_size,
        action_high=[1.0] * action_size,
        observations=observations,
        behaviour="random",
        source="simulator",
        seed=seed,
        notes="synthetic test data",
    )


def _texture(rng: np.random.Generator, rows: int, shape: tuple[int, ...]) -> np.ndarray:
    """Random-ish images: a moving gradient plus noise, clearly non-blank (pixel std >> 2)."""
    h, w, c = shape
    yy, xx = np.mgrid[0:h, 0:w]
    base = (xx * 3 + yy * 2)[None, :, :, None] + np.arange(rows)[:, None, None, None] * 5
    base = base + np.arange(c)[None, None, None, :] * 40
    noise = rng.integers(0, 60, size=(rows, h, w, c))
    return ((base + noise) % 256).astype(np.uint8)


def make_episode(meta: DatasetMeta, steps: int, rng: np.random.Generator) -> Episode:
    """One valid episode of ``steps`` agent steps (``steps + 1`` rows) for ``meta``."""
    rows = steps + 1
    action = rng.uniform(-1.0, 1.0, size=(rows, meta.action_size)).astype(np.float32)
    action[0] = 0.0
    reward = rng.uniform(0.0, 1.0, size=rows).astype(np.float32)
    reward[0] = 0.0
    episode: Episode = {
        "action": action,
        "reward": reward,
        "is_first": np.arange(rows) == 0,
        "is_last": np.arange(rows) == rows - 1,
        "is_terminal": np.zeros(rows, bool),
    }
    for key, desc in meta.observations.items():
        shape = tuple(int(d) for d in desc["shape"])
        if str(desc["dtype"]) == "uint8":
            episode[key] = _texture(rng, rows, shape)
        else:
            episode[key] = rng.normal(0.0, 1.0, size=(rows, *shape)).astype(desc["dtype"])
    return episode


def make_dataset(
    directory: str | Path,
    env: str = "pendulum-swingup-reversed",
    obs_mode: str = "proprio",
    episodes: int = 3,
    steps: int = 80,
    seed: int = 0,
    image_size: int = 64,
    compress: bool = False,
) -> DatasetMeta:
    """Write ``metadata.json`` and ``episodes`` episode files into ``directory``; returns the metadata."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta = make_meta(env, obs_mode, image_size=image_size, seed=seed)
    rng = np.random.default_rng(seed)
    for index in range(episodes):
        save_episode(directory / episode_name(index), make_episode(meta, steps, rng), compress=compress)
    write_metadata(directory, meta)
    return meta
