"""End to end: a robot log (here: target-simulator rollouts written in the robomimic HDF5 layout)
imported with a mapping config, validated and calibrated on by the smoke-preset pipeline."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest

pytest.importorskip("h5py")

from conftest import sh

pytestmark = pytest.mark.slow

ENV = "pendulum-swingup-reversed"


def write_rollouts(path, episodes=4, steps=50, seed=0):
    """Random-action rollouts of the target simulator, logged as a teleop rig would: row t holds
    the observation t and the action sent after it (the last row's action is unused)."""
    import h5py

    from redraw.envs import make_env

    rng = np.random.default_rng(seed)
    kept = []
    with make_env(ENV, obs_mode="proprio", seed=seed, action_repeat=2, episode_steps=steps) as env, \
            h5py.File(path, "w") as f:
        for d in range(episodes):
            obs, states, actions, rewards, done = env.reset(seed=d), [], [], [], False
            while not done:
                action = rng.uniform(-1, 1, env.action_size).astype(np.float32)
                states.append(obs["state"])
                actions.append(action)
                obs, reward, done, _ = env.step(action)
                rewards.append(reward)
            states.append(obs["state"])
            actions.append(np.zeros(env.action_size, np.float32))
            rewards.append(0.0)
            g = f.create_group(f"data/demo_{d}")
            g["obs/state"] = np.stack(states)
            g["actions"] = 3.0 * np.stack(actions)  # logged in the actuator's units: [-3, 3]
            g["rewards"] = np.asarray(rewards)
            kept.append((np.stack(states), np.stack(actions), np.asarray(rewards)))
    return kept


def test_imported_robot_log_is_validated_and_calibrated_on(smoke_repo, tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(smoke_repo.path, repo, symlinks=True)
    rollouts = write_rollouts(repo / "robot.hdf5")
    (repo / "robot.yaml").write_text(json.dumps({
        "version": 1, "source": {"format": "hdf5", "preset": "robomimic", "rate": 25, "paths": "robot.hdf5"},
        "target": {"env": ENV, "obs_mode": "proprio", "control_hz": 25},
        "observations": {"state": {"path": "obs/state"}},
        "action": {"path": "actions", "low": [-3.0], "high": [3.0]},
        "reward": {"path": "rewards"}}))
    py = [sys.executable, "-m", "redraw.cli"]
    sh([*py, "data", "import", "--config", "robot.yaml", "--dest", "data/robot", "--no-progress"], repo)
    from redraw.data.episodes import list_episodes, load_episode

    files = list_episodes(repo / "data" / "robot")
    assert len(files) == 4
    for path, (states, actions, rewards) in zip(files, rollouts):
        ep = load_episode(path)
        np.testing.assert_allclose(ep["state"], states, atol=1e-6)
        np.testing.assert_allclose(ep["action"][1:], actions[:-1], atol=1e-6)  # shifted and scaled back
        np.testing.assert_allclose(ep["reward"][1:], rewards[:-1], atol=1e-6)
    params = (repo / "params.yaml").read_text()
    assert params.count("target_data: data/target") == 1
    (repo / "params.yaml").write_text(params.replace("target_data: data/target", "target_data: data/robot"))
    sh([sys.executable, "-m", "redraw.stages.validate", "--data", "data/robot"], repo)
    proc = sh([sys.executable, "-m", "redraw.stages.calibrate", "redraw", "--no-progress"], repo)
    report = json.loads((repo / "reports" / "calibrate" / "redraw.json").read_text())
    assert report and all(np.isfinite(v) for v in report.values() if isinstance(v, (int, float))), proc.stdout
