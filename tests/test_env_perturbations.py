"""Each perturbation of the env-pair file changes the dynamics the way docs/envs.md says."""

import numpy as np
import pytest

from redraw.envs import load_pairs, make_env


def pairs_file(tmp_path, sources: dict, targets: dict):
    """An env-pair file: ``targets`` maps name -> (source, [perturbation mappings])."""
    import yaml

    data = {"sources": {n: {"dm_control": dt} for n, dt in sources.items()},
            "targets": {n: {"source": s, "perturbations": p} for n, (s, p) in targets.items()}}
    path = tmp_path / "envs.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def rollout(name, actions, pairs, seed=3, obs_mode="proprio"):
    with make_env(name, obs_mode, seed=seed, pairs=pairs) as env:
        obs, rewards = [env.reset()], []
        for a in actions:
            o, r, _, _ = env.step(a)
            obs.append(o)
            rewards.append(r)
    return obs, rewards


def qacc_at(env, qpos, qvel, ctrl):
    """The generalised acceleration in state (qpos, qvel) under control ``ctrl``."""
    p = env.physics
    with p.reset_context():
        p.data.qpos[:], p.data.qvel[:] = qpos, qvel
    p.data.ctrl[:] = ctrl
    p.forward()
    return p.data.qacc.copy()


def test_mass_x2_halves_the_acceleration_under_the_same_force(tmp_path):
    path = pairs_file(tmp_path, {"pm": "point_mass/easy"},
                      {"pm-heavy": ("pm", [{"kind": "body_mass", "body": "pointmass", "scale": 2.0}])})
    src, tgt = make_env("pm", "proprio", pairs=path), make_env("pm-heavy", "proprio", pairs=path)
    b = src.physics.model.name2id("pointmass", "body")
    assert tgt.physics.model.body_mass[b] == 2 * src.physics.model.body_mass[b]
    np.testing.assert_array_equal(tgt.physics.model.body_inertia[b], 2 * src.physics.model.body_inertia[b])
    state = (np.zeros(2), np.zeros(2), [0.8, -0.5])
    a_src, a_tgt = qacc_at(src, *state), qacc_at(tgt, *state)
    assert np.abs(a_src).min() > 0.1
    np.testing.assert_allclose(a_tgt, a_src / 2, rtol=1e-9)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_action_delay_k_makes_the_action_act_exactly_k_steps_later(tmp_path, k):
    path = pairs_file(tmp_path, {"pend": "pendulum/swingup"},
                      {"pend-late": ("pend", [{"kind": "action_delay", "steps": k}])})
    actions = np.random.default_rng(0).uniform(-1, 1, size=(30, 1))
    tgt, tgt_r = rollout("pend-late", actions, path)
    src, src_r = rollout("pend", np.concatenate([np.zeros((k, 1)), actions[:-k]]), path)
    for a, b in zip(src, tgt):
        np.testing.assert_array_equal(a["state"], b["state"])
    assert src_r == tgt_r
    undelayed, _ = rollout("pend", actions, path)
    assert not np.array_equal(undelayed[-1]["state"], tgt[-1]["state"])


def test_observation_delay_returns_the_observation_of_k_steps_before(tmp_path):
    k = 3
    path = pairs_file(tmp_path, {"pend": "pendulum/swingup"},
                      {"pend-stale": ("pend", [{"kind": "observation_delay", "steps": k}])})
    actions = np.random.default_rng(1).uniform(-1, 1, size=(20, 1))
    src, src_r = rollout("pend", actions, path)
    tgt, tgt_r = rollout("pend-stale", actions, path)
    for t, obs in enumerate(tgt):
        np.testing.assert_array_equal(obs["state"], src[max(t - k, 0)]["state"])
    assert src_r == tgt_r  # rewards are the system's, on time


def test_action_scale_then_offset_per_dimension_is_exact(tmp_path):
    scale, offset = [0.5, 2.0], [0.1, -0.2]
    path = pairs_file(tmp_path, {"reach": "reacher/easy"},
                      {"reach-odd": ("reach", [{"kind": "action_scale", "scale": scale},
                                               {"kind": "action_offset", "offset": offset}])})
    actions = np.random.default_rng(2).uniform(-1, 1, size=(25, 2))
    tgt, _ = rollout("reach-odd", actions, path)
    src, _ = rollout("reach", actions * np.asarray(scale) + np.asarray(offset), path)
    for a, b in zip(src, tgt):
        np.testing.assert_array_equal(a["state"], b["state"])
    plain, _ = rollout("reach", actions, path)
    assert not np.array_equal(plain[-1]["state"], tgt[-1]["state"])


def test_joint_damping_scales_the_damping_force(tmp_path):
    path = pairs_file(tmp_path, {"pend": "pendulum/swingup"},
                      {"pend-damped": ("pend", [{"kind": "joint_damping", "joint": "hinge", "scale": 4.0}])})
    src, tgt = make_env("pend", "proprio", pairs=path), make_env("pend-damped", "proprio", pairs=path)
    state = ([0.7], [3.0], [0.0])
    a_src, a_tgt = qacc_at(src, *state), qacc_at(tgt, *state)
    np.testing.assert_allclose(tgt.physics.data.qfrc_damper, 4 * src.physics.data.qfrc_damper, rtol=1e-12)
    import mujoco

    extra = np.zeros(1)  # M^-1 (the extra damping torque -3 d qvel): the whole change of acceleration
    mujoco.mj_solveM(src.physics.model.ptr, src.physics.data.ptr, extra,
                     np.array([-3 * src.physics.model.dof_damping[0] * 3.0]))
    np.testing.assert_allclose(a_tgt - a_src, extra, rtol=1e-9)
    # ...and an unactuated swing loses its energy faster
    for env in (src, tgt):
        for _ in range(100):
            env.physics.step()
    assert abs(tgt.physics.data.qvel[0]) < abs(src.physics.data.qvel[0])


def test_actuator_gear_scales_the_actuator_torque(tmp_path):
    path = pairs_file(tmp_path, {"pend": "pendulum/swingup"},
                      {"pend-strong": ("pend", [{"kind": "actuator_gear", "actuator": "torque", "scale": 3.0}])})
    src, tgt = make_env("pend", "proprio", pairs=path), make_env("pend-strong", "proprio", pairs=path)
    for ctrl in ([0.4], [-0.9]):
        state = ([0.0], [0.0], ctrl)
        qacc_at(src, *state)
        qacc_at(tgt, *state)
        assert abs(src.physics.data.qfrc_actuator[0]) > 0.1
        np.testing.assert_allclose(tgt.physics.data.qfrc_actuator, 3 * src.physics.data.qfrc_actuator, rtol=1e-12)


def test_gravity_sets_the_gravitational_acceleration(tmp_path):
    path = pairs_file(tmp_path, {"pend": "pendulum/swingup"},
                      {"pend-moon": ("pend", [{"kind": "gravity", "vector": [0.0, 0.0, -9.81 / 6]}])})
    src, tgt = make_env("pend", "proprio", pairs=path), make_env("pend-moon", "proprio", pairs=path)
    np.testing.assert_array_equal(tgt.physics.model.opt.gravity, [0, 0, -9.81 / 6])
    state = ([1.0], [0.0], [0.0])  # at rest, tilted, unactuated: gravity is the only torque
    a_src, a_tgt = qacc_at(src, *state), qacc_at(tgt, *state)
    assert abs(a_src[0]) > 1.0
    np.testing.assert_allclose(a_tgt, a_src / 6, rtol=1e-9)


def test_friction_decides_whether_a_pushed_box_slides(tmp_path):
    """A push of 35% of m g on a box (friction 0.7 against the floor) is held by friction;
    with both surfaces' friction x 0.25 (0.175 < 0.35) the same push slides it."""
    base = {"stack": "stacker/stack_2"}
    mass = make_env("stack", "proprio", pairs=pairs_file(tmp_path, base, {})).physics.named.model.body_mass["box0"]
    push = {"kind": "wrench", "body": "box0", "force": [0.35 * 9.81 * float(mass), 0.0, 0.0]}
    slip = [{"kind": "geom_friction", "geom": g, "scale": 0.25} for g in ("box0", "floor")]
    path = pairs_file(tmp_path, base, {"pushed": ("stack", [push]), "pushed-slippery": ("stack", [push, *slip])})

    def slide(name):
        env = make_env(name, "proprio", seed=0, pairs=path)
        env.reset()
        p = env.physics
        with p.reset_context():  # the box resting on the floor (z: its half size), away from the arm and the other box
            p.named.data.qpos[["box0_x", "box0_z", "box0_y", "box1_x"]] = [0.3, 0.022, 0.0, -0.3]
        x0 = float(p.named.data.xpos["box0"][0])
        for _ in range(20):
            env.step(np.zeros(env.action_size))
        return float(p.named.data.xpos["box0"][0]) - x0

    held, slid = slide("pushed"), slide("pushed-slippery")
    assert abs(held) < 2e-3, f"friction should hold the box, it moved {held:.4f} m"
    assert slid > 0.05, f"the slippery box should slide, it moved {slid:.4f} m"


def test_wrenches_on_one_body_add_up_and_perturbations_compose(tmp_path):
    path = pairs_file(tmp_path, {"cup": "ball_in_cup/catch"}, {
        "two": ("cup", [{"kind": "wrench", "body": "ball", "force": [-1.0, 0.0, 0.0]},
                        {"kind": "wrench", "body": "ball", "force": [-1.0, 0.0, 0.5], "torque": [0, 1, 0]}]),
        "one": ("cup", [{"kind": "wrench", "body": "ball", "force": [-2.0, 0.0, 0.5], "torque": [0, 1, 0]}])})
    actions = np.random.default_rng(3).uniform(-1, 1, size=(10, 2))
    a, _ = rollout("two", actions, path)
    b, _ = rollout("one", actions, path)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["state"], y["state"])


def test_the_default_file_round_trips_through_its_recorded_form():
    """What the registered model records (``to_mapping``) rebuilds the same envs."""
    reg = load_pairs()
    again = load_pairs(reg.to_mapping())
    assert {n: (s.simulator, s.id, s.perturbations, s.source) for n, s in reg.envs.items()} == \
        {n: (s.simulator, s.id, s.perturbations, s.source) for n, s in again.envs.items()}
    actions = np.random.default_rng(4).uniform(-1, 1, size=(8, 1))
    x, _ = rollout("pendulum-swingup-reversed", actions, None)
    y, _ = rollout("pendulum-swingup-reversed", actions, reg.to_mapping())
    np.testing.assert_array_equal(x[-1]["state"], y[-1]["state"])
