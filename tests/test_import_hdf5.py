"""HDF5 logs (ALOHA and robomimic layouts) through a mapping config: resampled values against the
generating signals, the one-step action shift, normalisation, and nothing written on bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("h5py")

from redraw.cli import main
from redraw.data.episodes import list_episodes, load_episode
from redraw.data.importer import import_logs
from redraw.data.schema import DataError, read_metadata
from redraw.validation import ValidationConfig

from logfixtures import ENV, cmd, decode_code, frame_code, pos, vel, write_aloha, write_config, write_robomimic

CONTRACT = ValidationConfig(min_episode_length=16, min_transitions=50, expected_env=ENV)
PARAMS = {"env": {"action_repeat": 2}}  # the env's agent-step rate: 0.02 s x 2 = 25 Hz


def aloha_config(**over):
    cfg = {"version": 1, "source": {"format": "hdf5", "preset": "aloha", "paths": ["logs"]},
           "target": {"env": ENV, "obs_mode": "proprio", "control_hz": 25},
           "observations": {"state": {"parts": [
               {"path": "observations/qpos", "select": ["left_waist", "left_shoulder"]},
               {"path": "observations/qvel", "select": [0]}]}},
           "action": {"select": ["left_waist"], "sign": [-1.0], "low": [-0.5], "high": [0.5]}}
    cfg.update(over)
    return cfg


@pytest.fixture
def aloha(tmp_path):
    (tmp_path / "logs").mkdir()
    write_aloha(tmp_path / "logs" / "episode_0.hdf5", n=120)
    write_aloha(tmp_path / "logs" / "episode_1.hdf5", n=100)
    return tmp_path


def test_aloha_resamples_at_25hz_with_the_action_shift_and_normalisation(aloha):
    path = write_config(aloha / "map.yaml", aloha_config())
    result, record = import_logs(path, aloha / "out", CONTRACT, progress=False, params=PARAMS)
    assert result.success, result.failures
    files = list_episodes(aloha / "out")
    assert len(files) == 2
    ep = load_episode(files[0])
    t = np.arange(60) * 0.04  # 50 Hz rows 0, 2, ..., 118
    np.testing.assert_allclose(ep["state"], np.stack([pos(t, 0), pos(t, 1), vel(t, 0)], axis=1), atol=1e-6)
    # row k: the action ALOHA logged after row 2k - 1 (t - 0.02 s), sign-flipped, [-0.5, 0.5] -> [-1, 1]
    np.testing.assert_allclose(ep["action"][1:, 0], -2 * cmd(t[1:] - 0.02), atol=1e-6)
    assert ep["action"][0, 0] == 0 and not ep["reward"].any()
    assert len(load_episode(files[1])["state"]) == 50
    meta = read_metadata(aloha / "out")
    assert meta.source == "robot" and meta.control_hz == 25 and meta.action_low == [-1.0]
    rec = meta.extra["import"]
    assert rec["config"]["action"]["sign"] == [-1.0] and rec["config_sha256"]
    assert [u["unit"] for u in rec["units"]] == ["episode_0", "episode_1"]
    assert rec["action_clipped_fraction"] == [0.0]


def test_aloha_compressed_images_in_pixels_mode(tmp_path):
    (tmp_path / "logs").mkdir()
    write_aloha(tmp_path / "logs" / "ep.hdf5", n=120, compress=True)
    cfg = aloha_config(target={"env": ENV, "obs_mode": "pixels", "control_hz": 25, "image_size": 32},
                       observations={"image": {"crop": [0, 8, 48, 48]}, "velocity": {"select": ["left_waist"]}})
    result, _ = import_logs(write_config(tmp_path / "map.yaml", cfg), tmp_path / "out", CONTRACT, progress=False,
                            params=PARAMS)
    assert result.success, result.failures
    ep = load_episode(list_episodes(tmp_path / "out")[0])
    assert ep["image"].shape == (60, 32, 32, 3) and ep["image"].dtype == np.uint8
    assert np.abs(decode_code(ep["image"]) - frame_code(np.arange(0, 120, 2))).max() <= 5  # JPEG error < half the 14 between picked frames


def test_robomimic_demos_in_numeric_order_with_rewards(tmp_path):
    write_robomimic(tmp_path / "demo.hdf5")
    cfg = {"version": 1, "source": {"format": "hdf5", "preset": "robomimic", "paths": "demo.hdf5"},
           "target": {"env": ENV, "obs_mode": "pixels", "control_hz": 10, "allow_rate_mismatch": True},
           "observations": {"image": {}, "velocity": {"select": [0]}},
           "action": {"select": [0]}, "reward": {"path": "rewards"}}
    result, record = import_logs(write_config(tmp_path / "map.yaml", cfg), tmp_path / "out", CONTRACT,
                                 progress=False, params=PARAMS)
    assert result.success, result.failures
    assert [u["unit"] for u in record["units"]] == ["demo_0", "demo_2", "demo_10"]
    ep = load_episode(list_episodes(tmp_path / "out")[1])  # demo_2: 70 rows at 20 Hz -> 35 at 10 Hz
    t = 2 + np.arange(35) * 0.1
    assert ep["image"].shape == (35, 64, 64, 3)
    np.testing.assert_array_equal(decode_code(ep["image"]), frame_code(2000 + np.arange(0, 70, 2)))
    np.testing.assert_allclose(ep["velocity"][:, 0], vel(t, 0), atol=1e-6)
    np.testing.assert_allclose(ep["action"][1:, 0], cmd(t[1:] - 0.05), atol=1e-6)
    rewards = (np.arange(70) % 5 == 0).astype(np.float32)
    np.testing.assert_array_equal(ep["reward"][1:], rewards[1:-1:2])  # the reward after the shifted action


@pytest.mark.parametrize("change, field, words", [
    ({"action": {"path": "nope", "select": [0]}}, "action.path", "no dataset 'nope'"),
    ({"action": {"select": ["left_knee"]}}, "action.select", "no dimension named 'left_knee'"),
    ({"action": {"select": [0, 1]}}, "action.select", "gives 2 action dimensions"),
    ({"target": {"env": ENV, "obs_mode": "proprio", "control_hz": 30, "allow_rate_mismatch": True}},
     "target.control_hz", "integer multiple"),
])
def test_bad_mapping_writes_nothing_and_names_file_and_key(aloha, change, field, words):
    path = write_config(aloha / "map.yaml", aloha_config(**change))
    with pytest.raises(DataError) as info:
        import_logs(path, aloha / "out", CONTRACT, progress=False, params=PARAMS)
    assert info.value.field == field and words in info.value.message, info.value
    assert "episode_0.hdf5" in info.value.file
    assert not (aloha / "out").exists() and not list(aloha.glob(".out*"))


def test_validation_failure_writes_nothing(aloha):
    path = write_config(aloha / "map.yaml", aloha_config())
    strict = ValidationConfig(min_episode_length=16, min_transitions=100000, expected_env=ENV)
    from redraw.data.importer import ImportRejected

    with pytest.raises(ImportRejected) as info:
        import_logs(path, aloha / "out", strict, progress=False, params=PARAMS)
    assert any(f.check == "min_transitions" for f in info.value.result.failures)
    assert not (aloha / "out").exists() and not list(aloha.glob(".out*"))


def test_cli_import_with_config(aloha, capsys, monkeypatch):
    monkeypatch.chdir(aloha)
    write_config(aloha / "map.yaml", aloha_config())
    argv = ["data", "import", "--config", "map.yaml", "--dest", "out", "--env", ENV, "--obs-mode", "proprio",
            "--min-transitions", "50", "--min-episode-length", "16", "--no-progress", "--params", "p.yaml"]
    (aloha / "p.yaml").write_text("env: {target: %s, obs_mode: proprio, action_repeat: 2}\nvalidate: {}\n" % ENV)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "episode_0: 1 episode(s), 60 of 60 control steps used" in out and "2 episodes now in out" in out
    assert main(argv) == 2 and "destination holds data" in capsys.readouterr().err
    write_config(aloha / "bad.yaml", aloha_config(action={"path": "nope"}))
    assert main([*argv[:3], "bad.yaml", "--dest", "out2", *argv[6:]]) == 2
    err = capsys.readouterr().err
    assert "[action.path]: no dataset 'nope'" in err and "nothing was written to out2" in err
    assert not (aloha / "out2").exists()
    json.loads((aloha / "out" / "metadata.json").read_text())


def test_a_reward_must_be_one_number(aloha):
    path = write_config(aloha / "map.yaml", aloha_config(reward={"path": "observations/qpos"}))
    with pytest.raises(DataError, match=r"\[reward.select\].*14 values per sample"):
        import_logs(path, aloha / "out", CONTRACT, progress=False, params=PARAMS)


def test_a_rejected_import_names_the_destination_and_leaves_no_folder_behind(aloha, capsys, monkeypatch):
    from redraw.data.importer import ImportRejected

    dest = aloha / "data" / "robot" / "run1"  # none of it exists yet
    write_aloha(aloha / "logs" / "episode_2.hdf5", n=100)  # the same as episode_1: a duplicate episode
    with pytest.raises(ImportRejected) as info:
        import_logs(write_config(aloha / "map.yaml", aloha_config()), dest, CONTRACT, progress=False, params=PARAMS)
    failures = info.value.result.failures
    assert any(f.check == "duplicate_episodes" for f in failures) and info.value.result.directory == str(dest)
    assert all(f.file.startswith(str(dest)) and ".partial" not in str(f) for f in failures), failures
    assert not (aloha / "data").exists()
    with pytest.raises(DataError):  # refused before anything is read
        import_logs(write_config(aloha / "map.yaml", aloha_config(target={"env": ENV, "obs_mode": "proprio",
                                                                          "control_hz": 50})),
                    dest, CONTRACT, progress=False, params=PARAMS)
    assert not (aloha / "data").exists()
    (aloha / "p.yaml").write_text(f"env: {{target: {ENV}, obs_mode: proprio, action_repeat: 2}}\nvalidate: {{}}\n")
    monkeypatch.chdir(aloha)
    write_config(aloha / "map.yaml", aloha_config())
    assert main(["data", "import", "--config", "map.yaml", "--dest", "data/robot/run1", "--params", "p.yaml",
                 "--min-transitions", "50", "--min-episode-length", "16", "--no-progress"]) == 1
    err = capsys.readouterr().err
    assert "validate: data/robot/run1: REJECTED" in err and "data/robot/run1/episode-000001.npz" in err
    assert ".partial" not in err and not (aloha / "data").exists()
