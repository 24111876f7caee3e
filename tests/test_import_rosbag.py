"""ROS 2 bags in both storages (sqlite3, MCAP) written with rosbags: joint states ~100 Hz with
jitter, raw (padded rows) and JPEG images 30 Hz, Twist commands 25 Hz, one row per command."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rosbags")

from redraw.data.episodes import list_episodes, load_episode
from redraw.data.importer import import_logs
from redraw.data.schema import DataError, read_metadata
from redraw.validation import ValidationConfig

from logfixtures import (
    ENV, HEADER_LAG_NS, camera_times, cmd, command_times, decode_code, frame_code, joint_times, write_bag,
    write_config, write_controller_bag,
)

CONTRACT = ValidationConfig(min_episode_length=16, min_transitions=50, expected_env=ENV)
PARAMS = {"env": {"action_repeat": 2}}  # the env's agent-step rate: 0.02 s x 2 = 25 Hz
T0 = 1_700_000_000 * 10**9


def bag_config(bag, **over):
    cfg = {"version": 1, "source": {"format": "rosbag", "paths": [bag]},
           "target": {"env": ENV, "obs_mode": "pixels", "control_hz": 25, "image_size": 32},
           "observations": {"image": {"topic": "/camera/image_raw"},
                            "velocity": {"topic": "/joint_states", "field": "velocity", "select": ["hinge"],
                                         "time": "header"}},
           "action": {"topic": "/cmd_vel", "field": "linear.x", "low": [-0.5], "high": [0.5]},
           "alignment": {"max_age": 0.05}}
    cfg.update(over)
    return cfg


def asof(times, g):
    return np.searchsorted(times, g, side="right") - 1


@pytest.mark.parametrize("storage", ["sqlite3", "mcap"])
@pytest.mark.parametrize("camera", ["/camera/image_raw", "/camera/compressed"])
def test_bag_rows_are_the_commands_with_the_newest_observations(tmp_path, storage, camera):
    write_bag(tmp_path / "bag", storage, t0=T0)
    cfg = bag_config("bag")
    cfg["observations"]["image"]["topic"] = camera
    result, record = import_logs(write_config(tmp_path / "map.yaml", cfg), tmp_path / "out", CONTRACT,
                                 progress=False, params=PARAMS)
    assert result.success, result.failures
    (path,) = list_episodes(tmp_path / "out")
    ep = load_episode(path)
    jt = joint_times() - HEADER_LAG_NS  # velocity is stamped by its header
    cam = camera_times() + (1000 if camera.endswith("compressed") else 0)
    ct = command_times()
    g = ct[ct >= max(jt[0], cam[0])]  # one row per command, once every observation stream has a sample
    assert len(ep["velocity"]) == len(g) >= 75
    from logfixtures import vel
    np.testing.assert_allclose(ep["velocity"][:, 0], vel((jt[asof(jt, g)] + HEADER_LAG_NS) / 1e9, 0), atol=1e-6)
    codes = decode_code(ep["image"])
    assert np.abs(codes - frame_code(asof(cam, g))).max() <= (5 if camera.endswith("compressed") else 0)
    np.testing.assert_allclose(ep["action"][1:, 0], 2 * cmd(g[:-1] / 1e9), atol=1e-6)  # the previous command
    assert ep["image"].shape[1:] == (32, 32, 3)
    unit = read_metadata(tmp_path / "out").extra["import"]["units"][0]
    assert unit["cuts"] == [] and unit["episodes"] == 1


def test_a_stale_camera_cuts_the_episode_and_short_spans_are_dropped_or_refused(tmp_path):
    write_bag(tmp_path / "bag", t0=T0)
    cfg = bag_config("bag", alignment={"max_age": 0.02})  # 30 Hz frames are up to 33 ms old
    with pytest.raises(DataError) as info:
        import_logs(write_config(tmp_path / "map.yaml", cfg), tmp_path / "out", CONTRACT, progress=False, params=PARAMS)
    assert info.value.field == "episodes.min_length" and "bag" in info.value.file
    assert "observations.image (/camera/image_raw)" in info.value.message
    assert not (tmp_path / "out").exists()


def test_header_stamps_that_go_backwards_are_refused(tmp_path):
    write_bag(tmp_path / "bag", t0=T0, backwards=True)
    with pytest.raises(DataError) as info:
        import_logs(write_config(tmp_path / "map.yaml", bag_config("bag")), tmp_path / "out", CONTRACT,
                    progress=False, params=PARAMS)
    assert info.value.field == "observations.velocity" and "goes backwards" in info.value.message
    assert "/joint_states" in info.value.message and not (tmp_path / "out").exists()


@pytest.mark.parametrize("change, field, words", [
    ({"action": {"topic": "/cmd", "field": "linear.x"}}, "action.topic", "no topic '/cmd'"),
    ({"action": {"topic": "/cmd_vel", "field": "linear.w"}}, "action.field", "no field 'linear.w'"),
    ({"action": {"topic": "/cmd_vel"}}, "action.field", "fields: linear, angular"),
    ({"action": {"topic": "/camera/image_raw", "field": "data"}}, "action.topic", "an image"),
])
def test_bad_topics_and_fields_name_the_key(tmp_path, change, field, words):
    write_bag(tmp_path / "bag", t0=T0)
    with pytest.raises(DataError) as info:
        import_logs(write_config(tmp_path / "map.yaml", bag_config("bag", **change)), tmp_path / "out", CONTRACT,
                    progress=False, params=PARAMS)
    assert info.value.field == field and words in info.value.message, info.value


@pytest.mark.parametrize("topic, field, words", [
    ("/joint_states", "name", "field 'name' holds strings ('hinge'), not numbers. The numeric fields of the "
     "message: header.stamp.sec, header.stamp.nanosec, position, velocity"),
    ("/joint_states", "header", "field 'header' holds a std_msgs/msg/Header message, not numbers; its numeric "
     "fields: header.stamp.sec, header.stamp.nanosec."),
    ("/joint_states", ["position", "name"], "field 'name' holds strings"),
    ("/pendulum/observation", "layout", "field 'layout' holds a std_msgs/msg/MultiArrayLayout message, not "
     "numbers; its numeric fields: layout.data_offset. The numeric fields of the message: layout.data_offset, data"),
])
def test_a_field_that_holds_no_numbers_is_one_error_naming_bag_topic_and_field(tmp_path, capsys, topic, field, words):
    from redraw.cli import main

    write_controller_bag(tmp_path / "bag", seconds=1.0, t0=T0)
    cfg = {"version": 1, "source": {"format": "rosbag", "paths": ["bag"]},
           "target": {"env": ENV, "obs_mode": "proprio", "control_hz": 25},
           "observations": {"state": {"topic": topic, "field": field}}, "action": {"topic": "/cmd", "field": "data"}}
    path = write_config(tmp_path / "map.yaml", cfg)
    with pytest.raises(DataError) as info:
        import_logs(path, tmp_path / "out", CONTRACT, progress=False, params=PARAMS)
    err = info.value
    assert err.file == str(tmp_path / "bag") and err.field == "observations.state.field"
    assert f"{topic!r} (" in err.message and words in err.message, err
    (tmp_path / "p.yaml").write_text(f"env: {{target: {ENV}, obs_mode: proprio, action_repeat: 2}}\n"
                                     "validate: {}\n")
    assert main(["data", "import", "--config", str(path), "--dest", str(tmp_path / "out"), "--params",
                 str(tmp_path / "p.yaml"), "--env", ENV, "--no-progress"]) == 2
    out = capsys.readouterr().err
    assert out.startswith(f"import: error: {err}\n") and "Traceback" not in out
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out*"))


def test_a_field_whose_width_changes_is_refused_naming_the_message(tmp_path):
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    Arr, Lay, F64 = (ts.types[k] for k in ("std_msgs/msg/Float64MultiArray", "std_msgs/msg/MultiArrayLayout",
                                            "std_msgs/msg/Float64"))
    with Writer(tmp_path / "bag", version=9) as w:
        co = w.add_connection("/obs", Arr.__msgtype__, typestore=ts)
        cc = w.add_connection("/cmd", F64.__msgtype__, typestore=ts)
        for i in range(50):
            data = np.zeros(3 if i != 7 else 2)  # message 7 lost a value
            w.write(co, T0 + i * 20_000_000, ts.serialize_cdr(Arr(layout=Lay(dim=[], data_offset=0), data=data),
                                                               Arr.__msgtype__))
            if i % 2 == 0:
                w.write(cc, T0 + i * 20_000_000, ts.serialize_cdr(F64(data=0.0), F64.__msgtype__))
    cfg = {"version": 1, "source": {"format": "rosbag", "paths": ["bag"]},
           "target": {"env": ENV, "obs_mode": "proprio", "control_hz": 25},
           "observations": {"state": {"topic": "/obs", "field": "data"}}, "action": {"topic": "/cmd", "field": "data"}}
    with pytest.raises(DataError) as info:
        import_logs(write_config(tmp_path / "map.yaml", cfg), tmp_path / "out", CONTRACT, progress=False,
                    params=PARAMS)
    assert info.value.field == "observations.state.field" and info.value.file == str(tmp_path / "bag")
    assert "'/obs': 'data' has 2 values in message 7, 3 in the first" in info.value.message


def test_undecodable_message_types_are_a_clear_error(tmp_path):
    """A bag with a custom type and no definitions: an error until the .msg is registered."""
    from rosbags.rosbag2 import Writer
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    ts.register(get_types_from_msg("float64[] q\nfloat64[] dq", "my_robot/msg/Joints"))
    Joints = ts.types["my_robot/msg/Joints"]
    Twist, V3 = ts.types["geometry_msgs/msg/Twist"], ts.types["geometry_msgs/msg/Vector3"]
    with Writer(tmp_path / "bag", version=8) as w:
        cj = w.add_connection("/joints", Joints.__msgtype__, typestore=ts)
        cc = w.add_connection("/cmd_vel", Twist.__msgtype__, typestore=ts)
        for i in range(100):
            q = np.array([np.sin(i / 10), np.cos(i / 10), 0.1 * i])
            w.write(cj, T0 + i * 10**7, ts.serialize_cdr(Joints(q=q, dq=q), Joints.__msgtype__))
            if i % 4 == 0:  # 25 Hz
                tw = Twist(linear=V3(x=0.1, y=0.0, z=0.0), angular=V3(x=0.0, y=0.0, z=0.0))
                w.write(cc, T0 + i * 10**7, ts.serialize_cdr(tw, Twist.__msgtype__))
    import sqlite3

    with sqlite3.connect(tmp_path / "bag" / "bag.db3") as db:  # as rosbag2 before Iron wrote: no definitions
        db.execute("DELETE FROM message_definitions")
    cfg = {"version": 1, "source": {"format": "rosbag", "paths": "bag"},
           "target": {"env": ENV, "obs_mode": "proprio", "control_hz": 25},
           "observations": {"state": {"topic": "/joints", "field": "q"}},
           "action": {"topic": "/cmd_vel", "field": "linear.x"}}
    with pytest.raises(DataError) as info:
        import_logs(write_config(tmp_path / "map.yaml", cfg), tmp_path / "out", CONTRACT, progress=False, params=PARAMS)
    assert "my_robot/msg/Joints" in info.value.message and "source.msg_types" in info.value.message
    (tmp_path / "Joints.msg").write_text("float64[] q\nfloat64[] dq\n")
    cfg["source"]["msg_types"] = {"my_robot/msg/Joints": "Joints.msg"}
    cfg["episodes"] = {"min_length": 16}
    result, _ = import_logs(write_config(tmp_path / "map.yaml", cfg), tmp_path / "out",
                            ValidationConfig(min_episode_length=16, min_transitions=20, expected_env=ENV),
                            progress=False, params=PARAMS)
    assert result.success, result.failures
    ep = load_episode(list_episodes(tmp_path / "out")[0])
    assert ep["state"].shape == (25, 3)
    np.testing.assert_allclose(ep["state"][:, 2], 0.1 * np.arange(0, 100, 4), atol=1e-6)


def test_ros1_bag(tmp_path):
    from rosbags.rosbag1 import Writer
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS1_NOETIC)
    JS, H, Time, F = (ts.types[k] for k in ("sensor_msgs/msg/JointState", "std_msgs/msg/Header",
                                             "builtin_interfaces/msg/Time", "std_msgs/msg/Float64"))
    with Writer(tmp_path / "run.bag") as w:
        cj = w.add_connection("/joint_states", JS.__msgtype__, typestore=ts)
        cc = w.add_connection("/cmd", F.__msgtype__, typestore=ts)
        for i in range(250):  # 100 Hz
            m = JS(header=H(seq=i, stamp=Time(sec=5, nanosec=i * 10**7 // 2), frame_id=""), name=["a", "b", "c"],
                   position=np.array([0.01 * i, 2.0, 3.0]), velocity=np.zeros(3), effort=np.zeros(0))
            w.write(cj, T0 + i * 10**7, ts.serialize_ros1(m, JS.__msgtype__))
            if i % 4 == 0:  # commands at 25 Hz
                w.write(cc, T0 + i * 10**7, ts.serialize_ros1(F(data=0.001 * i), F.__msgtype__))
    cfg = {"version": 1, "source": {"format": "rosbag", "paths": "run.bag"},
           "target": {"env": ENV, "obs_mode": "proprio", "control_hz": 25},
           "observations": {"state": {"topic": "/joint_states", "field": "position", "select": ["a", "c", "b"]}},
           "action": {"topic": "/cmd", "field": "data"}}
    result, _ = import_logs(write_config(tmp_path / "map.yaml", cfg), tmp_path / "out", CONTRACT, progress=False,
                            params=PARAMS)
    assert result.success, result.failures
    ep = load_episode(list_episodes(tmp_path / "out")[0])
    np.testing.assert_allclose(ep["state"][:, 0], 0.04 * np.arange(63), atol=1e-6)
    np.testing.assert_allclose(ep["state"][0, 1:], [3.0, 2.0])  # the order that select names
    np.testing.assert_allclose(ep["action"][1:, 0], 0.004 * np.arange(62), atol=1e-6)  # the previous command


def test_a_folder_of_bags_and_several_bags_on_the_command_line(tmp_path, capsys, monkeypatch):
    from redraw.cli import main

    monkeypatch.chdir(tmp_path)
    write_bag(tmp_path / "bags" / "run1", "sqlite3", t0=T0)
    write_bag(tmp_path / "bags" / "run2", "mcap", t0=T0 + 10**10, phase=0.5)
    (tmp_path / "bags" / "notes.txt").write_text("not a bag")
    (tmp_path / "empty").mkdir()
    result, record = import_logs(write_config(tmp_path / "map.yaml", bag_config("bags")), tmp_path / "out", CONTRACT,
                                 progress=False, params=PARAMS)
    assert result.success and [u["unit"] for u in record["units"]] == ["run1", "run2"]
    assert len(list_episodes(tmp_path / "out")) == 2
    with pytest.raises(DataError) as info:
        import_logs(write_config(tmp_path / "map.yaml", bag_config("empty")), tmp_path / "out2", CONTRACT,
                    progress=False, params=PARAMS)
    assert info.value.field == "source.paths[0]" and "neither a bag nor a folder of bags" in info.value.message
    (tmp_path / "p.yaml").write_text(f"env: {{target: {ENV}, obs_mode: pixels, action_repeat: 2}}\nvalidate: {{}}\n")
    argv = ["data", "import", "--config", "map.yaml", "--dest", "cli", "--params", "p.yaml", "--min-transitions", "50",
            "--min-episode-length", "16", "--no-progress"]
    assert main([*argv[:4], "bags/run2", "bags/run1/run1.db3", *argv[4:]]) == 0  # several bags replace source.paths
    out = capsys.readouterr().out
    assert out.index("bags/run2 run2:") < out.index("bags/run1/run1.db3 run1.db3:") and "2 episodes now in cli" in out
    assert main(["data", "import", "a", "b", "--dest", "x"]) == 2
    assert "without --config, give one SRC" in capsys.readouterr().err
