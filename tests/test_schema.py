"""The episode schema's own errors: metadata fields and unreadable files, named precisely."""

import json

import numpy as np
import pytest

from redraw.data.episodes import load_episode, save_episode
from redraw.data.schema import DataError, read_metadata

GOOD = {
    "schema_version": 1, "env": "pendulum-swingup-reversed", "obs_mode": "proprio", "control_hz": 25.0,
    "action_size": 1, "action_low": [-1.0], "action_high": [1.0],
    "observations": {"state": {"shape": [3], "dtype": "float32"}}, "behaviour": "random",
}


def write(tmp_path, **changes):
    meta = {**GOOD, **changes}
    meta = {k: v for k, v in meta.items() if v is not None}
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    return tmp_path


def test_good_metadata_round_trips(tmp_path):
    meta = read_metadata(write(tmp_path))
    assert meta.env == "pendulum-swingup-reversed"
    assert meta.step_spec()["state"] == ((3,), "float32")
    assert meta.step_spec()["action"] == ((1,), "float32")


@pytest.mark.parametrize(
    "changes, field, message",
    [
        ({"env": None}, "env", "missing required field"),
        ({"control_hz": "fast"}, "control_hz", "expected int or float"),
        ({"obs_mode": "lidar"}, "obs_mode", "not one of"),
        ({"schema_version": 2}, "schema_version", "not supported"),
        ({"action_low": [-1.0, -1.0]}, "action_low", "action_size is 1"),
        ({"observations": {"image": {"shape": [64, 64, 3], "dtype": "uint8"}}}, "observations", "needs observation keys"),
        ({"colour": "red"}, "colour", "unknown metadata field"),
    ],
)
def test_bad_metadata_names_the_field(tmp_path, changes, field, message):
    with pytest.raises(DataError, match=message) as info:
        read_metadata(write(tmp_path, **changes))
    assert info.value.field == field
    assert info.value.file.endswith("metadata.json")


def test_missing_and_malformed_metadata(tmp_path):
    with pytest.raises(DataError, match="no metadata.json"):
        read_metadata(tmp_path)
    (tmp_path / "metadata.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_metadata(tmp_path)


def test_episode_save_is_atomic_and_load_refuses_pickles(tmp_path):
    path = save_episode(tmp_path / "ep.npz", {"reward": np.zeros(3, np.float32)})
    assert [p.name for p in tmp_path.iterdir()] == ["ep.npz"]
    assert load_episode(path)["reward"].shape == (3,)
    np.savez(tmp_path / "evil.npz", reward=np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataError, match="pickled") as info:
        load_episode(tmp_path / "evil.npz")
    assert info.value.field == "reward"
    (tmp_path / "short.npz").write_bytes(path.read_bytes()[:50])
    with pytest.raises(DataError, match="corrupt or truncated"):
        load_episode(tmp_path / "short.npz")
