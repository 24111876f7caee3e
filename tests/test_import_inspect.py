"""`redraw data inspect`: streams with rates, gaps and shapes per format, and a draft mapping
config that parses and, once its selection is completed, imports."""

from __future__ import annotations

import json

import pytest
import yaml

pytest.importorskip("rosbags")
pytest.importorskip("h5py")

from redraw.cli import build_parser, main
from redraw.data.importers.config import load_config
from redraw.data.importers.survey import detect_format

from logfixtures import ENV, write_aloha, write_bag, write_controller_bag, write_lerobot


def test_inspect_has_help(capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["data", "inspect", "--help"])
    assert info.value.code == 0 and "--draft" in capsys.readouterr().out


def test_formats_are_detected(tmp_path):
    write_bag(tmp_path / "bag", "mcap")
    write_lerobot(tmp_path / "ds", inline=True)
    write_aloha(tmp_path / "ep.hdf5", n=10)
    assert [detect_format(tmp_path / p) for p in ("bag", "bag/bag.mcap", "ds", "ep.hdf5")] == \
        ["rosbag", "rosbag", "lerobot", "hdf5"]
    with pytest.raises(ValueError, match="pass --format"):
        detect_format(tmp_path / "ds" / "meta")


def test_inspect_a_bag_lists_rates_and_drafts_a_config_that_imports(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_bag(tmp_path / "bag", "sqlite3")
    assert main(["data", "inspect", "bag", "--json"]) == 0
    rows = {r["stream"]: r for r in json.loads(capsys.readouterr().out)["streams"]}
    assert rows["/joint_states"]["names"] == ["hinge", "elbow"] and abs(rows["/joint_states"]["rate_hz"] - 100) < 1
    assert rows["/cmd_vel"]["rate_hz"] == 25 and rows["/camera/image_raw"]["shape"] == [48, 64, "rgb8"]
    assert rows["/joint_states"]["max_gap_s"] < 0.012
    assert main(["data", "inspect", "bag", "--draft", "map.yaml", "--obs-mode", "pixels", "--env", ENV]) == 0
    assert "/joint_states  [sensor_msgs/msg/JointState]" in capsys.readouterr().out
    assert main(["data", "inspect", "bag", "--draft", "map.yaml"]) == 2  # never overwrites silently
    cfg = yaml.safe_load((tmp_path / "map.yaml").read_text())
    cfg["observations"]["velocity"]["select"] = ["hinge"]  # the one thing the draft cannot know
    (tmp_path / "map.yaml").write_text(yaml.safe_dump(cfg))
    load_config(tmp_path / "map.yaml")
    (tmp_path / "p.yaml").write_text(f"env: {{target: {ENV}, obs_mode: pixels, action_repeat: 2}}\nvalidate: {{}}\n")
    assert main(["data", "import", "--config", "map.yaml", "--dest", "out", "--params", "p.yaml", "--env", ENV,
                 "--min-transitions", "50", "--min-episode-length", "16", "--no-progress"]) == 0


@pytest.mark.parametrize("kind", ["lerobot", "aloha"])
def test_drafts_for_tables_parse(tmp_path, capsys, kind):
    src = write_lerobot(tmp_path / "ds", inline=True) if kind == "lerobot" else write_aloha(tmp_path / "ep.hdf5")
    assert main(["data", "inspect", str(src), "--draft", str(tmp_path / "map.yaml")]) == 0
    out = capsys.readouterr().out
    assert ("observation.state  [float32]  shape [3]" if kind == "lerobot" else "observations/qpos  [float64]") in out
    cfg = load_config(tmp_path / "map.yaml")
    assert cfg.source.format == ("lerobot" if kind == "lerobot" else "hdf5")
    assert (cfg.source.preset == "aloha") == (kind == "aloha")


def test_inspect_a_folder_of_bags_and_several_bags(tmp_path, capsys):
    bags = tmp_path / "bags"
    write_bag(bags / "a", "sqlite3")
    write_bag(bags / "b", "mcap")
    assert main(["data", "inspect", str(bags), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["format"] == "rosbag" and data["sources"] == [str(bags / "a"), str(bags / "b")]
    assert sorted(r["source"] for r in data["streams"] if r["stream"] == "/cmd_vel") == data["sources"]
    assert main(["data", "inspect", str(bags / "a"), str(bags / "b" / "b.mcap"), "--draft", str(tmp_path / "m.yaml")]) == 0
    out = capsys.readouterr().out
    assert f"{bags / 'a'}: rosbag" in out and f"{bags / 'b' / 'b.mcap'}: rosbag" in out
    assert load_config(tmp_path / "m.yaml").source.paths == [str(bags / "a"), str(bags / "b" / "b.mcap")]
    (tmp_path / "empty").mkdir()
    assert main(["data", "inspect", str(tmp_path / "empty")]) == 2
    assert "cannot tell the format" in capsys.readouterr().err


def test_the_draft_takes_the_topic_that_fits_the_env_or_lists_the_candidates(tmp_path, capsys, monkeypatch):
    """/joint_states (position + velocity: 2 values) and a 3-value /pendulum/observation: the
    pendulum's state has 3, so the draft takes the latter, and imports as it is."""
    monkeypatch.chdir(tmp_path)
    write_controller_bag(tmp_path / "bag", seconds=4.0)
    (tmp_path / "params.yaml").write_text(f"env: {{target: {ENV}, obs_mode: proprio, action_repeat: 2}}\n"
                                          "validate: {}\n")
    assert main(["data", "inspect", "bag", "--draft", "map.yaml", "--env", ENV]) == 0
    out = capsys.readouterr().out
    assert f"draft: observations.state: /pendulum/observation data gives the 3 values env {ENV!r} has" in out
    cfg = yaml.safe_load((tmp_path / "map.yaml").read_text())
    assert cfg["observations"]["state"] == {"topic": "/pendulum/observation", "field": "data"}
    assert cfg["action"] == {"topic": "/cmd", "field": "data"} and cfg["target"]["control_hz"] == 25
    assert main(["data", "import", "--config", "map.yaml", "--dest", "out", "--env", ENV, "--min-transitions", "50",
                 "--min-episode-length", "16", "--no-progress"]) == 0
    capsys.readouterr()
    # reacher's state has 6 values, which no topic gives: the draft says so and lists what there is
    assert main(["data", "inspect", "bag", "--draft", "reacher.yaml", "--env", "reacher-easy-reversed"]) == 0
    out = capsys.readouterr().out
    listed = ("observations.state: no topic gives the 6 values env 'reacher-easy-reversed' has; candidates: "
              "/joint_states position (1), /joint_states velocity (1), /pendulum/observation data (3)")
    assert f"draft: {listed}" in out and f"# {listed}" in (tmp_path / "reacher.yaml").read_text()
