"""Imported rows hold what the controller acted on: on an asynchronous, jittered bag whose ground
truth is known, each command of the action topic is one agent step, and its row holds the newest
observation and frame received before the command (docs/import.md, Timing)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rosbags")

from redraw.data.episodes import list_episodes, load_episode
from redraw.data.importer import import_logs
from redraw.data.schema import DataError, read_metadata
from redraw.validation import ValidationConfig

from logfixtures import ENV, decode_code, frame_code, write_bag, write_config, write_controller_bag

CONTRACT = ValidationConfig(min_episode_length=16, min_transitions=50, expected_env=ENV)
PARAMS = {"env": {"action_repeat": 2}}  # pendulum: 0.02 s control timestep x 2 = 25 agent steps per second
T0 = 1_700_000_000 * 10**9


def newest(log, times):
    """Index of the newest sample logged at or before each time."""
    return np.searchsorted(log, times, side="right") - 1


def exact_fraction(got, want, tol):
    return float(np.mean(np.all(np.abs(np.asarray(got, np.float64) - want) <= tol, axis=-1)))


@pytest.mark.parametrize("storage, camera", [("sqlite3", "/camera/image_raw"), ("mcap", "/camera/compressed")])
def test_rows_hold_the_observations_and_frames_the_controller_acted_on(tmp_path, storage, camera):
    truth = write_controller_bag(tmp_path / "bag", storage, t0=T0)
    wake, obs_log, img_log = truth["wake"], truth["obs_log"], truth["img_log"][camera]
    common = {"version": 1, "source": {"format": "rosbag", "paths": ["bag"]},
              "action": {"topic": "/cmd", "field": "data"}, "episodes": {"min_length": 16}}
    proprio = {**common, "target": {"env": ENV, "obs_mode": "proprio", "control_hz": 25},
               "observations": {"state": {"topic": "/pendulum/observation", "field": "data"}}}
    pixels = {**common, "target": {"env": ENV, "obs_mode": "pixels", "control_hz": 25, "image_size": 32},
              "observations": {"image": {"topic": camera},
                               "velocity": {"topic": "/pendulum/observation", "field": "data", "select": [2]}}}
    for name, cfg in (("proprio", proprio), ("pixels", pixels)):
        out = tmp_path / name
        result, _ = import_logs(write_config(tmp_path / f"{name}.yaml", cfg), out, CONTRACT, progress=False,
                                params=PARAMS)
        assert result.success, result.failures
        (path,) = list_episodes(out)
        ep = load_episode(path)
        # one row per command, from the first command by which every observation stream has a sample
        firsts = [obs_log[0]] + ([img_log[0]] if name == "pixels" else [])
        first = int(np.argmax(truth["cmd_log"] >= max(firsts)))
        steps = np.arange(first, len(wake))
        assert len(ep["action"]) == len(steps)
        np.testing.assert_allclose(ep["action"][1:, 0], truth["cmd"][steps[:-1]], atol=1e-6)  # every action
        saw = truth["obs"][newest(obs_log, wake[steps])]  # what the controller read when it woke
        if name == "proprio":
            assert exact_fraction(ep["state"], saw, 1e-6) >= 0.99
        else:
            assert exact_fraction(ep["velocity"], saw[:, 2:], 1e-6) >= 0.99
            frames = newest(img_log, wake[steps])
            codes = decode_code(ep["image"])[:, None]
            assert exact_fraction(codes, frame_code(frames)[:, None], 3) >= 0.99
            unit = read_metadata(out).extra["import"]["units"][0]
            # some frames arrive just after the controller has read: it acts on the one before twice,
            # and the report counts such rows (as the log shows them: received by the command's time)
            repeats = int(np.sum(np.diff(newest(img_log, truth["cmd_log"][steps])) == 0))
            assert repeats > 0 and unit["repeated_samples"]["observations.image"] == repeats


def bag_config(hz, **target):
    return {"version": 1, "source": {"format": "rosbag", "paths": ["bag"]},
            "target": {"env": ENV, "obs_mode": "proprio", "control_hz": hz, **target},
            "observations": {"state": {"topic": "/joint_states", "field": "position", "select": ["hinge", "hinge",
                                                                                                   "elbow"]}},
            "action": {"topic": "/cmd_vel", "field": "linear.x"}}


def refused(tmp_path, cfg, params=PARAMS) -> DataError:
    with pytest.raises(DataError) as info:
        import_logs(write_config(tmp_path / "map.yaml", cfg), tmp_path / "out", CONTRACT, progress=False,
                    params=params)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))
    return info.value


@pytest.mark.parametrize("hz", [30, 100, 7])
def test_control_hz_must_be_the_envs_agent_step_rate_and_the_command_rate(tmp_path, hz):
    write_bag(tmp_path / "bag", t0=T0)  # commands at 25 Hz
    err = refused(tmp_path, bag_config(hz))
    assert err.field == "target.control_hz" and err.file.endswith("map.yaml")
    assert f"is {hz:g} Hz, but env 'pendulum-swingup-reversed'" in err.message
    assert "takes 25 agent steps per second (control timestep 0.02 s x action repeat 2)" in err.message
    assert "target.allow_rate_mismatch: true" in err.message
    # overriding the env's rate does not override the log's: each command is one step
    err = refused(tmp_path, bag_config(hz, allow_rate_mismatch=True))
    assert err.field == "target.control_hz" and err.file == str(tmp_path / "bag")
    assert "the action topic '/cmd_vel' runs at 25 Hz" in err.message


def test_the_rate_is_checked_with_the_params_action_repeat_and_the_source_of_an_unregistered_robot(tmp_path):
    write_bag(tmp_path / "bag", t0=T0)
    err = refused(tmp_path, bag_config(25), params={"env": {"action_repeat": 4}})  # a 12.5 Hz agent
    assert "takes 12.5 agent steps per second" in err.message and "env.action_repeat 4" in err.message
    err = refused(tmp_path, bag_config(25), params=None)  # no params: the action repeat is unknown
    assert err.field == "target.control_hz" and "no params with env.action_repeat" in err.message
    robot = bag_config(30)
    robot["target"]["env"] = "my-robot"  # not in the env-pair file: its source is the simulator to fit
    err = refused(tmp_path, robot, params={"env": {"action_repeat": 2, "source": "pendulum-swingup"}})
    assert "env.source 'pendulum-swingup'" in err.message and "takes 25 agent steps" in err.message
    err = refused(tmp_path, robot, params={"env": {"action_repeat": 2}})
    assert "'my-robot' is not an env of the env-pair file" in err.message
