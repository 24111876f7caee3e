"""The target-data contract (redraw.validation): good data passes, every kind of bad data is
rejected with a Failure naming the file and field, the data is never modified."""

from __future__ import annotations

import hashlib
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

from redraw.data.episodes import episode_name, load_episode, save_episode
from redraw.data.schema import read_metadata, write_metadata
from redraw.validation import Failure, ValidationConfig, validate_dataset

from synthetic import make_dataset

ENV = "pendulum-swingup-reversed"
EP0, EP1 = episode_name(0), episode_name(1)


def config(obs_mode: str = "proprio", **changes) -> ValidationConfig:
    base = dict(min_episode_length=64, min_transitions=100, expected_env=ENV, expected_obs_mode=obs_mode)
    return ValidationConfig(**{**base, **changes})


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """One valid data set per obs mode, built once; tests work on copies."""
    root = tmp_path_factory.mktemp("bases")
    make_dataset(root / "proprio", obs_mode="proprio", episodes=3, steps=80)
    make_dataset(root / "pixels", obs_mode="pixels", episodes=2, steps=66, seed=1)
    make_dataset(root / "compressed", obs_mode="proprio", episodes=2, steps=80, seed=2, compress=True)
    return root


def copy_of(bases, name: str, dest: Path) -> Path:
    shutil.copytree(bases / name, dest)
    return dest


def snapshot(directory: Path) -> dict[str, tuple[str, int]]:
    return {
        p.name: (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
        for p in sorted(directory.iterdir())
    }


def edit(directory: Path, name: str, change) -> None:
    path = directory / name
    episode = load_episode(path)
    change(episode)
    save_episode(path, episode, compress=False)


def set_item(key, index, value):
    def change(ep):
        ep[key][index] = value

    return change


# -- good data ----------------------------------------------------------------------------------
@pytest.mark.parametrize("obs_mode", ["proprio", "pixels"])
def test_valid_dataset_passes(bases, tmp_path, obs_mode):
    data = copy_of(bases, obs_mode, tmp_path / "data")
    before = snapshot(data)
    result = validate_dataset(data, config(obs_mode))
    assert result.success, "\n".join(map(str, result.failures))
    assert result.failures == []
    assert result.stats["episodes"] == (3 if obs_mode == "proprio" else 2)
    assert result.stats["transitions"] == (240 if obs_mode == "proprio" else 132)
    assert 0 < result.stats["return_min"] <= result.stats["return_mean"] <= result.stats["return_max"]
    assert result.stats["checks_failed"] == 0 and result.stats["checks_evaluated"] >= 15
    assert all(result.checks.values())
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["success"] is True and payload["failures"] == [] and payload["stats"]["episodes"] >= 2
    assert snapshot(data) == before
    assert sorted(p.name for p in data.iterdir()) == sorted(before)  # no GX files in the data


# -- bad data: (base, how to break it, config changes, check, file, field, words in the message) --
def truncate(d):
    path = d / EP1
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def corrupt_member(d):
    """Flip bytes inside the compressed ``reward`` member of a compressed episode."""
    path = d / EP1
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo("reward.npy")
    raw = bytearray(path.read_bytes())
    name_len, extra_len = int.from_bytes(raw[info.header_offset + 26 : info.header_offset + 28], "little"), int.from_bytes(
        raw[info.header_offset + 28 : info.header_offset + 30], "little"
    )
    start = info.header_offset + 30 + name_len + extra_len
    for i in range(start + info.compress_size // 3, start + info.compress_size // 3 + 16):
        raw[i] ^= 0xFF
    path.write_bytes(bytes(raw))


def pickled(d):
    episode = load_episode(d / EP1)
    episode["reward"] = np.array([{"reward": 1.0}] * len(episode["reward"]), dtype=object)
    np.savez(d / EP1, **episode)


def delete_key(key):
    def change(ep):
        del ep[key]

    return change


def retype(key, dtype):
    def change(ep):
        ep[key] = ep[key].astype(dtype)

    return change


def shrink_image(ep):
    ep["image"] = np.ascontiguousarray(ep["image"][:, ::2, ::2])


def drop_last_row(key):
    def change(ep):
        ep[key] = ep[key][:-1]

    return change


def blank(ep):
    ep["image"][:] = 0


def add_key(ep):
    ep["log_prob"] = np.zeros(len(ep["reward"]), np.float32)


def duplicate(d):
    shutil.copy(d / EP0, d / episode_name(7))


def short_episodes(d):
    for path in d.glob("*.npz"):
        episode = load_episode(path)
        save_episode(path, {k: v[:41] for k, v in episode.items()}, compress=False)
        edit(d, path.name, set_item("is_last", 40, True))


def bad_meta_dtype(d):
    meta = read_metadata(d)
    meta.observations["velocity"]["dtype"] = "float64"
    write_metadata(d, meta)
    for path in d.glob("*.npz"):
        edit(d, path.name, retype("velocity", np.float64))


def ep(name, change):
    return lambda d: edit(d, name, change)


BAD = {
    "truncated": ("proprio", truncate, {}, "readable", EP1, None, "truncated"),
    "corrupt_member": ("compressed", corrupt_member, {}, "readable", EP1, "reward", "corrupt"),
    "pickled": ("proprio", pickled, {}, "readable", EP1, "reward", "pickled"),
    "nan_action": ("proprio", ep(EP1, set_item("action", (5, 0), np.nan)), {}, "finite_values", EP1, "action", "NaN"),
    "nan_reward": ("proprio", ep(EP0, set_item("reward", 9, np.nan)), {}, "finite_values", EP0, "reward", "1 non-finite"),
    "nan_state": ("proprio", ep(EP1, set_item("state", (3, 1), np.nan)), {}, "finite_values", EP1, "state", "NaN"),
    "inf_velocity": ("pixels", ep(EP1, set_item("velocity", (2, 0), np.inf)), {}, "finite_values", EP1, "velocity", "inf"),
    "action_float64": ("proprio", ep(EP0, retype("action", np.float64)), {}, "dtype", EP0, "action", "float64, expected float32"),
    "image_float32": ("pixels", ep(EP0, retype("image", np.float32)), {}, "dtype", EP0, "image", "float32, expected uint8"),
    "image_32x32": ("pixels", ep(EP1, shrink_image), {}, "shape", EP1, "image", "(32, 32, 3), expected (64, 64, 3)"),
    "missing_key": ("proprio", ep(EP1, delete_key("is_terminal")), {}, "required_keys", EP1, "is_terminal", "missing"),
    "extra_key": ("proprio", ep(EP1, add_key), {}, "unexpected_keys", EP1, "log_prob", "not in the episode schema"),
    "lengths": ("proprio", ep(EP0, drop_last_row("state")), {}, "consistent_lengths", EP0, "state", "80 rows but reward has 81"),
    "action_high": ("proprio", ep(EP1, set_item("action", (7, 0), 1.5)), {}, "action_bounds", EP1, "action", "1.5 is above"),
    "action_low": ("proprio", ep(EP1, set_item("action", (7, 0), -3.0)), {}, "action_bounds", EP1, "action", "-3 is below"),
    "reward_range": ("proprio", ep(EP0, set_item("reward", 4, 2.5)), {}, "reward_range", EP0, "reward", "2.5 is outside [0.0, 1.0]"),
    "short": ("proprio", short_episodes, {}, "episode_length", EP0, "reward", "40 agent steps, fewer than min_episode_length 64"),
    "duplicate": ("proprio", duplicate, {}, "duplicate_episodes", episode_name(7), None, f"identical content to {EP0}"),
    "wrong_env": ("proprio", None, {"expected_env": "cup-catch-windy"}, "expected_env", "metadata.json", "env", "'cup-catch-windy'"),
    "wrong_obs_mode": ("proprio", None, {"expected_obs_mode": "pixels"}, "expected_obs_mode", "metadata.json", "obs_mode", "expected 'pixels'"),
    "blank_images": ("pixels", ep(EP1, blank), {}, "blank_images", EP1, "image", "67 of 67 frames are blank"),
    "few_transitions": ("proprio", None, {"min_transitions": 10_000}, "min_transitions", ".", None, "240 transitions"),
    "first_in_middle": ("proprio", ep(EP1, set_item("is_first", 30, True)), {}, "first_flags", EP1, "is_first", "rows [0, 30]"),
    "first_missing": ("proprio", ep(EP0, set_item("is_first", 0, False)), {}, "first_flags", EP0, "is_first", "rows []"),
    "last_in_middle": ("proprio", ep(EP0, set_item("is_last", 10, True)), {}, "last_flags", EP0, "is_last", "rows [10, 80]"),
    "terminal_early": ("proprio", ep(EP0, set_item("is_terminal", 10, True)), {}, "terminal_flags", EP0, "is_terminal", "[10]"),
    "meta_obs_dtype": ("pixels", bad_meta_dtype, {}, "metadata_observations", "metadata.json", "observations.velocity", "float64"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_data_is_rejected_naming_file_and_field(bases, tmp_path, case):
    base, breaker, changes, check, file, field, words = BAD[case]
    data = copy_of(bases, base, tmp_path / "data")
    if breaker is not None:
        breaker(data)
    obs_mode = "pixels" if base == "pixels" else "proprio"
    before = snapshot(data)
    result = validate_dataset(data, config(obs_mode, **changes))
    assert not result.success
    assert snapshot(data) == before
    where = str(data) if file == "." else str(data / file)
    matches = [f for f in result.failures if f.check == check and f.file == where and f.field == field]
    assert matches, f"no {check} failure for {where} [{field}] in:\n" + "\n".join(map(str, result.failures))
    assert words in matches[0].message, str(matches[0])
    assert str(matches[0]).startswith(where) and check in str(matches[0])
    assert result.checks[check] is False and result.stats["checks_failed"] >= 1
    json.dumps(result.to_dict())


def test_empty_directories(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = validate_dataset(empty, config())
    assert not result.success
    assert {(f.check, f.file, f.field) for f in result.failures} == {
        ("metadata", str(empty / "metadata.json"), None),
        ("no_episodes", str(empty), None),
    }
    assert list(empty.iterdir()) == []

    meta_only = tmp_path / "meta_only"
    make_dataset(meta_only, episodes=0)
    result = validate_dataset(meta_only, config())
    assert [(f.check, f.file, f.field) for f in result.failures if f.check != "min_transitions"] == [
        ("no_episodes", str(meta_only), None)
    ]
    assert "no readable episode files" in str(result.failures[0])

    missing = validate_dataset(tmp_path / "nowhere", config())
    assert [f.check for f in missing.failures] == ["directory"]


def test_thresholds_come_from_the_config(bases, tmp_path):
    data = copy_of(bases, "proprio", tmp_path / "data")
    edit(data, EP0, set_item("reward", 4, -0.5))
    assert not validate_dataset(data, config()).success
    loose = validate_dataset(data, config(reward_min=-1.0, min_episode_length=80, min_transitions=240))
    assert loose.success, "\n".join(map(str, loose.failures))
    strict = validate_dataset(data, config(reward_min=-1.0, min_episode_length=81))
    assert {f.check for f in strict.failures} == {"episode_length"} and len(strict.failures) == 3


def test_data_docs_are_built_outside_the_data(bases, tmp_path):
    data = copy_of(bases, "pixels", tmp_path / "data")
    edit(data, EP1, set_item("velocity", (2, 0), np.nan))
    before = snapshot(data)
    docs = tmp_path / "reports" / "data_docs"
    result = validate_dataset(data, config("pixels"), docs_dir=docs)
    assert not result.success
    index = docs / "index.html"
    assert index.is_file() and "redraw" in index.read_text()
    assert any((docs / "validations").rglob("*.html"))
    assert snapshot(data) == before and sorted(p.name for p in data.iterdir()) == sorted(before)
    with pytest.raises(ValueError, match="inside the data directory"):
        validate_dataset(data, config("pixels"), docs_dir=data / "docs")
    assert snapshot(data) == before


def test_failure_text():
    failure = Failure("finite_values", "d/episode-000001.npz", "action", "2 non-finite values")
    assert str(failure) == "d/episode-000001.npz [action]: finite_values: 2 non-finite values"
    assert str(Failure("no_episodes", "d", None, "none")) == "d: no_episodes: none"


@pytest.mark.parametrize("hz", [25.0, 30.0, 100.0, 7.0])
def test_data_at_another_rate_than_the_envs_agent_steps_are_refused(bases, tmp_path, hz):
    """The pipeline's contract takes env.target's agent-step rate (pendulum: 0.02 s x action
    repeat 2 = 25 Hz): data logged at another rate fail, naming metadata.json's control_hz and
    the override, unless validate.allow_rate_mismatch."""
    import dataclasses

    from redraw.config import load_params
    from redraw.stages.validate import validation_config

    root = Path(__file__).resolve().parents[1]
    params = load_params(root / "params.yaml")
    params = {**params, "env": {**params["env"], "source": "pendulum-swingup", "target": ENV,
                                "pairs": str(root / "envs.yaml"), "action_repeat": 2}}
    d = copy_of(bases, "proprio", tmp_path / "d")
    write_metadata(d, dataclasses.replace(read_metadata(d), control_hz=hz))
    cfg = validation_config(params, "params.yaml")
    assert cfg.expected_control_hz == pytest.approx(25.0)
    cfg.min_transitions, cfg.min_episode_length = 100, 64
    result = validate_dataset(d, cfg)
    failures = [f for f in result.failures if f.check == "expected_control_hz"]
    assert bool(failures) == (hz != 25.0)
    if failures:
        assert failures[0].field == "control_hz" and f"{hz:g} Hz" in failures[0].message
    params["validate"] = {**params["validate"], "allow_rate_mismatch": True}
    assert validation_config(params, "params.yaml").expected_control_hz is None
