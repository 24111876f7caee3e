"""LeRobot datasets (v3.0 with a two-episode mp4, v2.1 with a file per episode, images inline)
read without the lerobot package: decimation, the one-step action shift, frames by time."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("av")

from redraw.data.episodes import list_episodes, load_episode
from redraw.data.importer import import_logs
from redraw.data.schema import DataError, read_metadata
from redraw.validation import ValidationConfig

from logfixtures import ENV, decode_code, frame_code, lerobot_signals, write_config, write_lerobot

CONTRACT = ValidationConfig(min_episode_length=16, min_transitions=30, expected_env=ENV)
PARAMS = {"env": {"action_repeat": 2}}  # the env's agent-step rate: 0.02 s x 2 = 25 Hz


def lerobot_config(obs_mode="pixels", hz=25, **over):
    obs = ({"image": {"key": "observation.images.top", "crop": [0, 8, 48, 48]},
            "velocity": {"key": "observation.state", "select": ["hinge_vel"]}} if obs_mode == "pixels"
           else {"state": {"key": "observation.state"}})
    cfg = {"version": 1, "source": {"format": "lerobot", "paths": ["ds"]},
           "target": {"env": ENV, "obs_mode": obs_mode, "control_hz": hz},
           "observations": obs, "action": {"key": "action", "select": ["brake"], "scale": [2.0]}}
    cfg.update(over)
    return cfg


@pytest.mark.parametrize("version, fps, inline", [("v3.0", 50, False), ("v2.1", 25, False), ("v3.0", 50, True)],
                         ids=["v3.0-video", "v2.1-video", "v3.0-inline-images"])
def test_lerobot_episodes_with_the_action_shift(tmp_path, version, fps, inline):
    write_lerobot(tmp_path / "ds", version, lengths=(60, 46), fps=fps, inline=inline)
    result, record = import_logs(write_config(tmp_path / "map.yaml", lerobot_config()), tmp_path / "out",
                                 CONTRACT, progress=False, params=PARAMS)
    assert result.success, result.failures
    files = list_episodes(tmp_path / "out")
    assert len(files) == 2
    step = fps // 25
    for ep, (path, n) in enumerate(zip(files, (60, 46))):
        data = load_episode(path)
        _, state, action, _ = lerobot_signals(ep, n, fps)
        rows = np.arange(0, n, step)
        assert len(data["velocity"]) == len(rows)
        np.testing.assert_allclose(data["velocity"][:, 0], state[rows, 2], atol=1e-6)
        # LeRobot row r holds the action sent after observation r: episode row k gets source row k*step - 1
        np.testing.assert_allclose(data["action"][1:, 0], 2 * action[rows[1:] - 1, 1], atol=1e-6)
        assert data["action"][0, 0] == 0
        codes = decode_code(data["image"])
        assert np.abs(codes - frame_code(rows + 100 * ep)).max() <= (0 if inline else 3)
        assert data["image"].shape[1:] == (64, 64, 3)
    assert [u["unit"] for u in record["units"]] == ["episode 0", "episode 1"]
    assert read_metadata(tmp_path / "out").extra["import"]["format"] == "lerobot"


def test_select_episodes_and_proprio(tmp_path):
    write_lerobot(tmp_path / "ds", "v3.0", lengths=(40, 50, 60), fps=25, inline=True)
    cfg = lerobot_config("proprio", source={"format": "lerobot", "paths": "ds", "episodes": [2, 0]})
    result, record = import_logs(write_config(tmp_path / "map.yaml", cfg), tmp_path / "out", CONTRACT,
                                 progress=False, params=PARAMS)
    assert result.success and [u["unit"] for u in record["units"]] == ["episode 0", "episode 2"]
    data = load_episode(list_episodes(tmp_path / "out")[1])
    np.testing.assert_allclose(data["state"], lerobot_signals(2, 60, 25)[1], atol=1e-6)


@pytest.mark.parametrize("change, field, words", [
    ({"action": {"key": "actions"}}, "action.key", "no feature 'actions'"),
    ({"action": {"key": "action", "select": ["gas"]}}, "action.select", "no dimension named 'gas' (names: thrust, brake)"),
    ({"action": {"key": "observation.images.top"}}, "action.key", "not a vector"),
])
def test_bad_keys_name_file_and_key(tmp_path, change, field, words):
    write_lerobot(tmp_path / "ds", "v3.0", fps=50, inline=True)
    with pytest.raises(DataError) as info:
        import_logs(write_config(tmp_path / "map.yaml", lerobot_config(**change)), tmp_path / "out", CONTRACT,
                    progress=False, params=PARAMS)
    assert info.value.field == field and words in info.value.message, info.value
    assert not (tmp_path / "out").exists()


def test_rates_that_do_not_divide_and_bad_versions_are_refused(tmp_path):
    write_lerobot(tmp_path / "ds", "v3.0", fps=50, inline=True)
    with pytest.raises(DataError, match=r"\[target.control_hz\].*50 rows per second"):
        cfg = lerobot_config(hz=20)
        cfg["target"]["allow_rate_mismatch"] = True  # to reach the row-rate check
        import_logs(write_config(tmp_path / "map.yaml", cfg), tmp_path / "out", CONTRACT,
                    progress=False, params=PARAMS)
    info = json.loads((tmp_path / "ds" / "meta" / "info.json").read_text())
    (tmp_path / "ds" / "meta" / "info.json").write_text(json.dumps({**info, "codebase_version": "v1.6"}))
    with pytest.raises(DataError, match=r"info.json \[codebase_version\]: 'v1.6' is not supported"):
        import_logs(write_config(tmp_path / "map.yaml", lerobot_config()), tmp_path / "out", CONTRACT,
                    progress=False, params=PARAMS)
