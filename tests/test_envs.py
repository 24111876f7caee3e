"""The registered envs: each perturbation changes the dynamics the way the paper says."""

import numpy as np
import pytest

from redraw.envs import ENVS, PAIRS, make_env, source_of, target_of


def rollout(name, actions, obs_mode="proprio", seed=3, **kw):
    with make_env(name, obs_mode, seed=seed, **kw) as env:
        obs = [env.reset()]
        rewards = []
        for a in actions:
            o, r, done, _ = env.step(a)
            obs.append(o)
            rewards.append(r)
        return obs, rewards, env


def test_registry_has_the_four_pairs():
    assert PAIRS == {
        "cup-catch": "cup-catch-windy",
        "finger-turn_hard": "finger-turn_hard-torque",
        "pendulum-swingup": "pendulum-swingup-reversed",
        "reacher-easy": "reacher-easy-reversed",
    }
    assert source_of("cup-catch-windy") == "cup-catch"
    assert target_of("reacher-easy") == "reacher-easy-reversed"
    with pytest.raises(KeyError, match="unknown env 'cup-catch-stormy'.*registered envs"):
        make_env("cup-catch-stormy")


@pytest.mark.parametrize("source", ["pendulum-swingup", "reacher-easy"])
def test_reversed_target_with_a_reproduces_source_with_minus_a(source):
    rng = np.random.default_rng(0)
    size = 1 if source.startswith("pendulum") else 2
    actions = rng.uniform(-1, 1, size=(40, size))
    src_obs, src_rew, _ = rollout(source, -actions)
    tgt_obs, tgt_rew, _ = rollout(target_of(source), actions)
    for a, b in zip(src_obs, tgt_obs):
        np.testing.assert_array_equal(a["state"], b["state"])
    assert src_rew == tgt_rew
    # ...and it really is a different system: the same actions give different states
    same_obs, _, _ = rollout(source, actions)
    assert not np.array_equal(same_obs[-1]["state"], tgt_obs[-1]["state"])


def test_reversed_pixels_match_exactly():
    actions = np.random.default_rng(1).uniform(-1, 1, size=(10, 1))
    src, _, _ = rollout("pendulum-swingup", -actions, obs_mode="pixels")
    tgt, _, _ = rollout("pendulum-swingup-reversed", actions, obs_mode="pixels")
    np.testing.assert_array_equal(src[-1]["image"], tgt[-1]["image"])
    np.testing.assert_array_equal(src[-1]["velocity"], tgt[-1]["velocity"])


def _physics_after(name, steps, seed=5):
    env = make_env(name, "proprio", seed=seed)
    env.reset()
    x0 = env.physics.named.data.qpos.copy()
    for _ in range(steps):
        env.step(np.zeros(env.action_size))
    return env, x0


def test_windy_ball_drifts_in_minus_x_with_zero_action():
    src, x0_src = _physics_after("cup-catch", 25)
    tgt, x0_tgt = _physics_after("cup-catch-windy", 25)
    np.testing.assert_array_equal(x0_src, x0_tgt)  # same start
    ball = tgt.physics.model.name2id("ball", "body")
    np.testing.assert_array_equal(tgt.physics.data.xfrc_applied[ball], [-2, 0, 0, 0, 0, 0])
    assert not src.physics.data.xfrc_applied.any()
    dx = tgt.physics.named.data.qpos["ball_x"] - src.physics.named.data.qpos["ball_x"]
    assert dx < -0.01, f"windy ball should be pushed towards -x, got dx={dx}"
    dz = tgt.physics.named.data.qpos["ball_z"] - src.physics.named.data.qpos["ball_z"]
    assert abs(dz) < abs(dx)


def test_torque_spins_the_spinner_about_plus_y():
    src, _ = _physics_after("finger-turn_hard", 5)
    tgt, _ = _physics_after("finger-turn_hard-torque", 5)
    spinner = tgt.physics.model.name2id("spinner", "body")
    np.testing.assert_array_equal(tgt.physics.data.xfrc_applied[spinner], [0, 0, 0, 0, 4, 0])

    def omega_y(env):  # world-frame angular velocity of the spinner about y
        return env.physics.named.data.qvel["hinge"] * env.physics.named.data.xaxis["hinge"][1]

    assert omega_y(tgt) - omega_y(src) > 0.1


@pytest.mark.parametrize("name", list(ENVS))
def test_seeding_is_deterministic(name):
    size = make_env(name, "proprio").action_size
    actions = np.random.default_rng(2).uniform(-1, 1, size=(15, size))
    a, ra, _ = rollout(name, actions, seed=11)
    b, rb, _ = rollout(name, actions, seed=11)
    c, _, _ = rollout(name, actions, seed=12)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["state"], y["state"])
    assert ra == rb
    assert not np.array_equal(a[0]["state"], c[0]["state"])


def test_pixels_observation_and_episode_length():
    with make_env("cup-catch-windy", "pixels", seed=0, episode_steps=7) as env:
        obs = env.reset()
        spec = env.observation_spec()
        assert set(obs) == set(spec) == {"image", "velocity"}
        for key, (shape, dtype) in spec.items():
            assert obs[key].shape == shape and obs[key].dtype == np.dtype(dtype)
        assert obs["image"].shape == (64, 64, 3) and obs["image"].std() > 2
        assert env.control_hz == 25.0  # 0.02 s control step x action repeat 2
        steps, done = 0, False
        while not done:
            obs, reward, done, terminal = env.step(np.zeros(env.action_size))
            steps += 1
            assert 0.0 <= reward <= 1.0 and not terminal
        assert steps == 7


def test_rendering_flags_are_identical_in_source_and_target():
    import mujoco

    for name in ("cup-catch", "cup-catch-windy"):
        with make_env(name, "pixels") as env:
            flags = env._renderer.scene.flags
            assert flags[mujoco.mjtRndFlag.mjRND_SHADOW] == 0
            assert flags[mujoco.mjtRndFlag.mjRND_REFLECTION] == 0


def test_action_repeat_uses_the_last_sub_step_reward():
    """Two control steps per agent step; the reward is the second sub-step's."""
    from dm_control import suite

    actions = np.random.default_rng(4).uniform(-1, 1, size=(6, 1))
    _, rewards, _ = rollout("pendulum-swingup", actions, seed=9)
    raw = suite.load("pendulum", "swingup", task_kwargs={"random": 0, "time_limit": float("inf")})
    raw.task.random.seed(9)
    raw.reset()
    expected = []
    for a in actions:
        raw.step(a)
        expected.append(raw.step(a).reward)
    assert rewards == pytest.approx(expected, abs=0)


@pytest.mark.parametrize("name", sorted(ENVS))
def test_observation_names_name_every_proprio_dimension(name):
    from redraw.envs.dmc import observation_names

    env = make_env(name, obs_mode="proprio")
    names = observation_names(name, "proprio")
    assert names == env.observation_names()
    assert {k: len(v) for k, v in names.items()} == {k: s[0][0] for k, s in env.observation_spec().items()}
    assert len(set(names["state"])) == len(names["state"])


def test_observation_names_of_pendulum_are_dm_controls_entries():
    from redraw.envs.dmc import observation_names
    from redraw.plots import dimension_label

    names = observation_names("pendulum-swingup-reversed", "proprio")
    assert names == {"state": ["orientation[0]", "orientation[1]", "velocity"]}
    assert observation_names("pendulum-swingup", "pixels") == {"velocity": ["velocity"]}
    assert [dimension_label("state", d, 3, names) for d in range(3)] == names["state"]
    assert dimension_label("state", 0, 4, names) == "state[0]"  # names for another shape: not used
    with pytest.raises(ValueError, match="obs_mode"):
        observation_names("pendulum-swingup", "rgb")
