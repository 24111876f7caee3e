"""Mapping config and timing core of `redraw data import --config`: errors name the file and the
key; as-of alignment, max age, stale spans, backwards stamps and the one-step action shift."""

from __future__ import annotations

import numpy as np
import pytest

from redraw.data.importers.config import load_config, parse_config
from redraw.data.importers.convert import ActionMap, build_episodes
from redraw.data.importers.resample import NS, Stream, Unit, asof, check_increasing, grid, spans, split_times
from redraw.data.schema import DataError

from logfixtures import ENV, write_config


def base(**over):
    cfg = {"version": 1,
           "source": {"format": "rosbag", "paths": ["bag"]},
           "target": {"env": ENV, "obs_mode": "proprio", "control_hz": 25},
           "observations": {"state": {"topic": "/joint_states", "field": "position"}},
           "action": {"topic": "/cmd", "field": "data"}}
    for key, value in over.items():
        node = cfg
        *head, last = key.split(".")
        for h in head:
            node = node.setdefault(h, {})
        if value is None:
            node.pop(last, None)
        else:
            node[last] = value
    return cfg


def error(raw, tmp_path=None) -> DataError:
    with pytest.raises(DataError) as info:
        parse_config(raw, "map.yaml")
    assert info.value.file == "map.yaml"
    return info.value


def test_a_good_config_parses_with_defaults():
    cfg = parse_config(base(), "map.yaml")
    assert cfg.alignment.max_age is None and cfg.episodes.min_length == 16 and cfg.episodes.on_short == "error"
    assert cfg.max_age_ns(cfg.observations["state"]) == 60 * NS // 1000  # 1.5 control periods at 25 Hz
    assert not cfg.target.allow_rate_mismatch and not cfg.alignment.allow_repeats
    assert [k for k, _ in cfg.streams()] == ["observations.state", "action"]


@pytest.mark.parametrize("over, field, words", [
    ({"version": 2}, "version", "1"),
    ({"version": None}, "version", "missing"),
    ({"source.format": "zarr"}, "source.format", "rosbag"),
    ({"source.colour": "x"}, "source.colour", "Extra inputs"),
    ({"observations.state.fields": "position"}, "observations.state.fields", "Extra inputs"),
    ({"observations": {"image": {"topic": "/cam"}}}, "observations", "needs exactly the keys ['state']"),
    ({"observations.state.path": "qpos"}, "observations.state.path", "hdf5"),
    ({"action.topic": None}, "action.topic", "missing"),
    ({"action.timing": "after"}, "action.timing", "tables"),
    ({"action.low": [-1.0]}, "action.low", "together"),
    ({"action.low": [1.0], "action.high": [0.0]}, "action.high", "above"),
    ({"target.control_hz": 0}, "target.control_hz", "greater than 0"),
    ({"observations.state.crop": [0, 0, 3]}, "observations.state.crop", "top, left"),
    ({"source.msg_types": {"my/msg/Foo": "nope.msg"}}, "source.msg_types.my/msg/Foo", "no such"),
    ({"source.rate": 50}, "source.rate", "hdf5"),
])
def test_bad_config_names_the_key(over, field, words):
    err = error(base(**over))
    assert err.field == field, err
    assert words in err.message, err


def test_hdf5_without_rate_or_preset_is_refused():
    raw = base(**{"source.format": "hdf5", "observations.state": {"path": "qpos"}, "action": {"path": "act"}})
    assert error(raw).field == "source.rate"
    assert parse_config({**raw, "source": {**raw["source"], "preset": "aloha"}}, "m.yaml").source.rate is None


def test_load_config_reads_yaml_and_names_the_file(tmp_path):
    path = write_config(tmp_path / "map.yaml", base())
    assert load_config(path).config_path == str(path)
    (tmp_path / "bad.yaml").write_text("version: [1\n")
    with pytest.raises(DataError, match="bad.yaml.*not valid YAML"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(DataError, match="missing.yaml.*not found"):
        load_config(tmp_path / "missing.yaml")


# -- timing ------------------------------------------------------------------------------------
def test_backwards_and_duplicate_timestamps_are_refused():
    check_increasing(np.array([1, 2, 3]), "f", "k", "/t")
    with pytest.raises(DataError, match=r"f \[k\]: stream '/t': timestamp goes backwards at sample 2"):
        check_increasing(np.array([1, 5, 4, 6]), "f", "k", "/t")
    with pytest.raises(DataError, match="repeats at sample 1"):
        check_increasing(np.array([1, 1, 2]), "f", "k", "/t")


def test_asof_takes_the_newest_sample_not_older_than_max_age():
    t = np.array([0, 10, 20, 50]) * NS // 1000
    g = np.array([5, 10, 19, 45, 60]) * NS // 1000
    idx, age, ok = asof(t, g, max_age_ns=10 * NS // 1000)
    assert idx.tolist() == [0, 1, 1, 2, 3]
    assert ok.tolist() == [True, True, True, False, True]  # 45 ms: the 20 ms sample is 25 ms old
    _, _, ok = asof(t + NS, g, NS)
    assert not ok.any()  # nothing before the first sample


def test_grid_is_exact_without_drift():
    g = grid(7, 7 + 10 * NS, 30.0)
    assert len(g) == 301 and g[0] == 7 and g[-1] == 7 + 10 * NS
    assert np.abs(np.diff(g) - NS / 30).max() <= 1


def test_spans_cut_at_stale_points_and_need_a_fresh_action():
    first = np.array([1, 1, 1, 0, 1, 1, 1, 1], bool)
    step = np.array([0, 1, 1, 1, 1, 0, 1, 1], bool)
    assert spans(first, step) == [(0, 3), (4, 5), (5, 8)]


def test_split_times_at_gaps():
    t = np.array([0, 1, 2, 10, 11, 30])
    assert split_times(t, 3) == [(0, 2), (10, 11), (30, 30)]


def test_action_map_normalises_signs_and_reports_clipping():
    cfg = parse_config(base(**{"action.sign": [-1.0], "action.scale": [2.0], "action.offset": [0.5],
                               "action.low": [-2.0], "action.high": [2.0]}), "m.yaml")
    amap = ActionMap(cfg, 1)
    raw = np.array([[0.0], [0.5], [1.0], [-2.0]])
    out = amap(raw, "f")  # u = -2 raw + 0.5 -> [0.5, -0.5, -1.5, 4.5] -> a = u / 2
    np.testing.assert_allclose(out[:, 0], [0.25, -0.25, -0.75, 1.0])
    assert amap.clipped.tolist() == [1] and amap.total == 4
    cfg.action.clip = False
    with pytest.raises(DataError, match=r"\[action.clip\].*outside \[-1, 1\]"):
        ActionMap(cfg, 1)(raw, "f")
    with pytest.raises(DataError, match=r"\[action.sign\].*2 dimensions"):
        ActionMap(cfg, 2)


def _unit(t_obs, t_act, rate=None):
    t_obs, t_act = np.asarray(t_obs, np.int64), np.asarray(t_act, np.int64)
    obs = np.stack([t_obs / NS, t_obs / NS * 2, -t_obs / NS], axis=1)
    act = (t_act / NS)[:, None] / 100.0
    return Unit("bag.db3", "bag", {
        "observations.state": Stream("observations.state", "/joint_states", t_obs, obs.__getitem__, size=3),
        "action": Stream("action", "/cmd", t_act, act.__getitem__, size=1)}, table_rate=rate)


def test_each_command_is_a_step_with_the_newest_observation_and_stale_spans_are_cut():
    cfg = parse_config(base(**{"episodes.min_length": 5, "episodes.on_short": "drop", "alignment.max_age": 0.03}), "m")
    ms = NS // 1000
    t_obs = np.arange(0, 2000, 10) * ms + 3 * ms  # 100 Hz, offset 3 ms
    t_obs = t_obs[(t_obs < 800 * ms) | (t_obs > 1000 * ms)]  # a 200 ms hole in the joint states
    t_act = np.arange(0, 2000, 40) * ms  # 25 Hz: one command per control step
    eps, report = build_episodes(_unit(t_obs, t_act), cfg, {"state": 3, "action": 1}, {})
    assert len(eps) == 2 and report["cuts"] and "observations.state (/joint_states)" in report["cuts"][0]["why"]
    first = eps[0]
    c = t_act[1 : 1 + len(first["state"])]  # the rows' commands; the first command has no observation before it
    expected = np.array([t_obs[t_obs <= x].max() for x in c])  # the newest joint state at or before the command
    assert c[-1] == 800 * ms and expected[-1] == 793 * ms  # the last row before the hole: a 7 ms old sample
    np.testing.assert_allclose(first["state"][:, 0], expected / NS, atol=1e-6)
    np.testing.assert_allclose(first["action"][1:, 0], c[:-1] / NS / 100, atol=1e-7)  # the previous step's command
    assert first["action"][0, 0] == 0 and first["is_first"][0] and first["is_last"][-1]
    np.testing.assert_allclose(eps[1]["state"][:, 0], (1033 + 40 * np.arange(len(eps[1]["state"]))) / 1000, atol=1e-6)


def test_a_short_span_is_an_error_naming_file_and_key_unless_dropped():
    cfg = parse_config(base(**{"episodes.min_length": 100}), "m")
    ms = NS // 1000
    with pytest.raises(DataError) as info:
        build_episodes(_unit(np.arange(0, 1000, 10) * ms, np.arange(0, 1000, 40) * ms), cfg, None, {})
    assert info.value.file == "bag.db3" and info.value.field == "episodes.min_length"
    assert "shorter than episodes.min_length 100" in info.value.message


def test_tables_shift_the_action_one_row_and_decimate():
    cfg = parse_config(base(**{"episodes.min_length": 3}), "m")
    rate = 50.0
    rows = np.round(np.arange(40) * NS / rate).astype(np.int64)
    eps, _ = build_episodes(_unit(rows, rows, rate=rate), cfg, None, {})
    (ep,) = eps
    assert len(ep["state"]) == 20  # rows 0, 2, ..., 38
    np.testing.assert_allclose(ep["state"][:, 0], rows[::2] / NS, atol=1e-6)
    # row k of the episode holds the action sent after source row 2k - 1, i.e. before row 2k
    np.testing.assert_allclose(ep["action"][1:, 0], rows[1:-1:2] / NS / 100, atol=1e-7)
    with pytest.raises(DataError, match=r"\[target.control_hz\].*not an integer multiple"):
        build_episodes(_unit(rows, rows, rate=60.0), cfg, None, {})


def test_dimensions_must_match_the_env():
    cfg = parse_config(base(), "m")
    ms = NS // 1000
    with pytest.raises(DataError, match=r"bag.db3 \[observations.state\]: gives 3 dimensions.*has 5"):
        build_episodes(_unit(np.arange(100) * 10 * ms, np.arange(50) * 20 * ms), cfg, {"state": 5, "action": 1}, {})
    cfg = parse_config(base(**{"observations.state.select": ["elbow"]}), "m")
    with pytest.raises(DataError, match=r"\[observations.state.select\].*no dimension names"):
        build_episodes(_unit(np.arange(100) * 10 * ms, np.arange(50) * 20 * ms), cfg, None, {})
    cfg = parse_config(base(**{"observations.state.select": [0, 7]}), "m")
    with pytest.raises(DataError, match="index 7 is out of range"):
        build_episodes(_unit(np.arange(100) * 10 * ms, np.arange(50) * 20 * ms), cfg, None, {})


def test_split_by_gaps_starts_a_fresh_grid_after_each_pause():
    cfg = parse_config(base(**{"episodes.split": "gaps", "episodes.gap": 0.5, "episodes.min_length": 5}), "m")
    ms = NS // 1000
    t_obs = np.concatenate([np.arange(0, 1000, 10), np.arange(2007, 3000, 10)]) * ms  # a 1 s pause
    t_act = np.arange(0, 3000, 40) * ms
    eps, report = build_episodes(_unit(t_obs, t_act), cfg, None, {})
    assert len(eps) == 2 and report["cuts"] == []  # split at the pause, not cut as stale
    np.testing.assert_allclose(eps[1]["state"][:, 0], 2.037 + 0.04 * np.arange(len(eps[1]["state"])), atol=1e-6)
    # commands 0-1040 ms (the 990 ms sample is still fresh for the 1000 and 1040 ms commands) and 2040-2960 ms
    assert len(eps[0]["state"]) == 27 and len(eps[1]["state"]) == 24
    np.testing.assert_allclose(eps[0]["state"][-2:, 0], 0.99)
    assert report["repeated_samples"] == {"observations.state": 1}


def test_a_command_topic_at_another_rate_than_control_hz_is_refused():
    cfg = parse_config(base(), "m")  # control_hz 25
    ms = NS // 1000
    with pytest.raises(DataError) as info:
        build_episodes(_unit(np.arange(0, 2000, 10) * ms, np.arange(0, 2000, 20) * ms), cfg, None, {})
    assert info.value.file == "bag.db3" and info.value.field == "target.control_hz"
    assert "'/cmd' runs at 50 Hz" in info.value.message and "2 x control_hz" in info.value.message


def test_a_dropped_command_ends_the_episode():
    cfg = parse_config(base(**{"episodes.min_length": 5}), "m")
    ms = NS // 1000
    t_act = np.delete(np.arange(0, 2000, 40), 20) * ms  # the 800 ms command is missing: 80 ms between two steps
    eps, report = build_episodes(_unit(np.arange(0, 2000, 10) * ms, t_act), cfg, None, {})
    assert [len(e["state"]) for e in eps] == [20, 29]
    assert "action (/cmd): 80 ms since the previous command" in report["cuts"][0]["why"]
    np.testing.assert_allclose(eps[1]["state"][0, 0], 0.84)  # the next episode starts at the 840 ms command


def test_an_observation_stream_slower_than_control_hz_is_refused_unless_repeats_are_allowed():
    cfg = parse_config(base(**{"episodes.min_length": 5, "alignment.max_age": 0.1}), "m")
    ms = NS // 1000
    unit = _unit(np.arange(0, 2000, 50) * ms, np.arange(0, 2000, 40) * ms)  # 20 Hz joint states, 25 Hz commands
    with pytest.raises(DataError) as info:
        build_episodes(unit, cfg, None, {})
    assert info.value.field == "observations.state" and "'/joint_states' runs at 20 Hz" in info.value.message
    assert "about 20% of the rows would repeat the previous row's sample" in info.value.message
    assert "alignment.allow_repeats" in info.value.message
    cfg.alignment.allow_repeats = True
    (ep,), report = build_episodes(unit, cfg, None, {})
    assert report["repeated_samples"] == {"observations.state": 10} and len(ep["state"]) == 50
