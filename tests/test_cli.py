"""The `redraw` command line: help everywhere, clear errors, import that never half-copies."""

import subprocess
import sys

import pytest

from redraw.cli import build_parser, main

SUBCOMMANDS = [[], ["envs"], ["collect"], ["validate"], ["preset"], ["data"], ["data", "validate"],
               ["data", "import"], ["data", "stats"]]


@pytest.mark.parametrize("words", SUBCOMMANDS, ids=lambda w: " ".join(w) or "redraw")
def test_every_subcommand_has_help(words, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([*words, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: redraw" in out and len(out) > 100


def test_console_script_runs():
    proc = subprocess.run([sys.executable, "-m", "redraw.cli", "envs"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "pendulum-swingup-reversed" in proc.stdout and "control = -action" in proc.stdout


def test_unknown_env_in_params_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text(
        "seed: 0\nenv: {source: pendulum-swingdown, target: x, obs_mode: proprio, action_repeat: 2,\n"
        "  episode_steps: 10, image_size: 64, antialias: false}\ncollect: {workers: 1}\n"
        "collect_source: {episodes: 1, behaviour: {kind: random}}\n"
    )
    assert main(["collect", "source", "--params", str(params), "--no-progress"]) == 2
    assert "unknown env 'pendulum-swingdown'" in capsys.readouterr().err


def test_missing_param_key_names_file_and_key(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text("seed: 0\nenv: {source: pendulum-swingup}\n")
    assert main(["collect", "source", "--params", str(params)]) == 2
    err = capsys.readouterr().err
    assert str(params) in err and "collect_source" in err
