"""The Gymnasium adapter: a gymnasium.Env as source or target, with the dm_control conventions
(action repeat, episode length, seeding, action bounds) and the same perturbations."""

import numpy as np
import pytest

gym = pytest.importorskip("gymnasium")

from redraw.envs import EnvFileError, make_env  # noqa: E402


class TinyEnv(gym.Env):
    """A unit mass on a line, pushed by the action; pixels: an 8x8 image with its position lit."""

    metadata = {"render_fps": 10}

    def __init__(self, size: int = 8, pixels: bool = False):
        self.size, self.pixels, self.dt = size, pixels, 0.1
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        vec = gym.spaces.Box(-np.inf, np.inf, (2,), np.float64)
        self.observation_space = gym.spaces.Dict(
            {"camera": gym.spaces.Box(0, 255, (size, size, 3), np.uint8), "joints": vec}) if pixels else vec

    def _obs(self):
        vec = np.array([self.x, self.v])
        if not self.pixels:
            return vec
        image = np.zeros((self.size, self.size, 3), np.uint8)
        image[:, int(np.clip((self.x + 1) / 2 * (self.size - 1), 0, self.size - 1))] = 255
        return {"camera": image, "joints": vec}

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.v = float(self.np_random.uniform(-1, 1)), 0.0
        return self._obs(), {}

    def step(self, action):
        self.v += float(action[0]) * self.dt
        self.x += self.v * self.dt
        return self._obs(), -abs(self.x), abs(self.x) > 5, False, {}


FILE = """
sources:
  pend: {gymnasium: InvertedPendulum-v5}
  tiny: {gymnasium: "test_env_gymnasium:TinyEnv"}
  tiny-pixels: {gymnasium: "test_env_gymnasium:TinyEnv", kwargs: {pixels: true, size: 64}}
targets:
  pend-heavy-late:
    source: pend
    perturbations:
      - {kind: body_mass, body: cart, scale: 2.0}
      - {kind: action_delay, steps: 1}
  tiny-weak:
    source: tiny
    perturbations:
      - {kind: action_scale, scale: 0.5}
  tiny-as-pend: {source: tiny, gymnasium: InvertedPendulum-v5}
"""


@pytest.fixture
def pairs(tmp_path):
    path = tmp_path / "envs.yaml"
    path.write_text(FILE)
    return path


def rollout(name, actions, pairs, seed=3, obs_mode="proprio", **kw):
    with make_env(name, obs_mode, seed=seed, pairs=pairs, **kw) as env:
        obs, rewards = [env.reset()], []
        for a in actions:
            o, r, done, _ = env.step(a)
            obs.append(o)
            rewards.append(r)
            if done:
                break
    return obs, rewards


def test_a_gymnasium_mujoco_env_has_the_dm_control_conventions(pairs):
    with make_env("pend", "proprio", seed=0, pairs=pairs, action_repeat=2, episode_steps=5) as env:
        assert env.observation_spec() == {"state": ((4,), "float32")}
        assert env.action_size == 1 and env.action_low.tolist() == [-3.0] and env.action_high.tolist() == [3.0]
        assert env.control_hz == pytest.approx(1 / (0.04 * 2))
        obs = env.reset()
        assert obs["state"].dtype == np.float32
        steps, done = 0, False
        while not done:
            _, _, done, terminal = env.step(np.zeros(1))
            steps += 1
        assert steps == 5 and not terminal
    # the reward is the last sub-step's, as with dm_control; a fall is terminal
    actions = np.full((30, 1), 3.0)
    _, rewards = rollout("pend", actions, pairs, seed=9)
    raw = gym.make("InvertedPendulum-v5")
    raw.reset(seed=9)
    expected, terminal = [], False
    for a in actions:
        raw.step(a.astype(np.float32))
        _, r, terminal, _, _ = raw.step(a.astype(np.float32))
        expected.append(r)
        if terminal:
            break
    assert rewards == expected and terminal and len(rewards) < 30


def test_seeding_is_deterministic(pairs):
    actions = np.random.default_rng(0).uniform(-1, 1, size=(10, 1))
    a, _ = rollout("pend", actions, pairs, seed=11)
    b, _ = rollout("pend", actions, pairs, seed=11)
    c, _ = rollout("pend", actions, pairs, seed=12)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["state"], y["state"])
    assert not np.array_equal(a[0]["state"], c[0]["state"])
    with make_env("pend", "proprio", seed=11, pairs=pairs) as env:  # reset(seed) re-seeds like the first reset
        first = env.reset()["state"]
        env.reset()
        np.testing.assert_array_equal(env.reset(seed=11)["state"], first)


def test_model_and_timing_perturbations_act_on_a_gymnasium_mujoco_env(pairs):
    src, tgt = make_env("pend", "proprio", pairs=pairs), make_env("pend-heavy-late", "proprio", pairs=pairs)
    cart = 1  # world, cart, pole
    assert tgt.model.body_mass[cart] == 2 * src.model.body_mass[cart]
    src.close(), tgt.close()
    # the delay: the target's actions act one step later (the mass is the same in both runs here)
    path = pairs.with_name("late.yaml")
    path.write_text(FILE.replace("      - {kind: body_mass, body: cart, scale: 2.0}\n", ""))
    actions = np.random.default_rng(1).uniform(-0.5, 0.5, size=(6, 1))
    late, _ = rollout("pend-heavy-late", actions, path)
    now, _ = rollout("pend", np.concatenate([np.zeros((1, 1)), actions[:-1]]), path)
    assert len(late) == len(now) == 7
    for x, y in zip(late, now):
        np.testing.assert_array_equal(x["state"], y["state"])


def test_a_class_given_as_module_colon_class_with_an_action_scale(pairs):
    actions = np.random.default_rng(2).uniform(-1, 1, size=(12, 1))
    weak, weak_r = rollout("tiny-weak", actions, pairs)
    plain, plain_r = rollout("tiny", actions * 0.5, pairs)
    for x, y in zip(weak, plain):
        np.testing.assert_array_equal(x["state"], y["state"])
    assert weak_r == plain_r
    with make_env("tiny", "proprio", pairs=pairs) as env:
        assert env.control_hz == pytest.approx(5.0)  # dt 0.1 s x action repeat 2


def test_pixels_from_a_dict_observation(pairs):
    with make_env("tiny-pixels", "pixels", seed=0, pairs=pairs) as env:
        spec = env.observation_spec()
        assert spec == {"image": ((64, 64, 3), "uint8"), "velocity": ((2,), "float32")}
        obs = env.reset()
        for key, (shape, dtype) in spec.items():
            assert obs[key].shape == shape and obs[key].dtype == np.dtype(dtype)
        assert obs["image"].max() == 255
    with pytest.raises(EnvFileError, match=r"sources.tiny-pixels.gymnasium: the image 'camera' is \(64, 64, 3\), "
                                           r"env.image_size asks for \(32, 32, 3\)"):
        make_env("tiny-pixels", "pixels", pairs=pairs, image_size=32)
    with pytest.raises(EnvFileError, match="sources.tiny.gymnasium: pixels needs a Dict observation space"):
        make_env("tiny", "pixels", pairs=pairs)


def test_bad_gymnasium_envs_are_refused_naming_the_key(pairs, tmp_path):
    with pytest.raises(EnvFileError, match=r"targets.tiny-as-pend: the target's observations .* differ from its source"):
        make_env("tiny-as-pend", "proprio", pairs=pairs)
    bad = tmp_path / "bad.yaml"
    bad.write_text("sources:\n  a: {gymnasium: NoSuchEnv-v0}\n  b: {gymnasium: 'test_env_gymnasium:Nope'}\n"
                   "targets:\n  c: {source: a, perturbations: [{kind: body_mass, body: x, scale: 2}]}\n")
    with pytest.raises(EnvFileError, match=f"{bad}: sources.a.gymnasium: no gymnasium env registered as 'NoSuchEnv-v0'"):
        make_env("a", "proprio", pairs=bad)
    with pytest.raises(EnvFileError, match=f"{bad}: sources.b.gymnasium: cannot import 'test_env_gymnasium:Nope'"):
        make_env("b", "proprio", pairs=bad)
    bad.write_text(FILE.replace("action_scale, scale: 0.5", "joint_damping, joint: x, scale: 2"))
    with pytest.raises(EnvFileError, match=r"targets.tiny-weak: joint_damping needs a MuJoCo env"):
        make_env("tiny-weak", "proprio", pairs=bad)
