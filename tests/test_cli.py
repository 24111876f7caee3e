"""The `redraw` command line: help everywhere, clear errors, import that never half-copies."""

import subprocess
import sys
from pathlib import Path

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


def _files(path):
    return {p.name: p.read_bytes() for p in sorted(path.iterdir())}


def _import(src, dest, *extra):
    return main(["data", "import", str(src), "--dest", str(dest), "--params", "/nonexistent/params.yaml",
                 "--env", "pendulum-swingup-reversed", "--obs-mode", "proprio", "--min-transitions", "100", *extra])


def test_import_copies_valid_episodes(tmp_path, capsys):
    from synthetic import make_dataset

    make_dataset(tmp_path / "robot", episodes=3, steps=80)
    assert _import(tmp_path / "robot", tmp_path / "data" / "real") == 0
    assert _files(tmp_path / "data" / "real") == _files(tmp_path / "robot")
    assert "3 episodes now in" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["real"]  # no temp dirs left


def test_rejected_import_copies_nothing_and_keeps_existing_data(tmp_path, capsys):

    from redraw.data.episodes import list_episodes, load_episode, save_episode
    from synthetic import make_dataset

    make_dataset(tmp_path / "old", episodes=2, steps=80, seed=1)
    assert _import(tmp_path / "old", tmp_path / "dest") == 0
    before = _files(tmp_path / "dest")
    make_dataset(tmp_path / "robot", episodes=3, steps=80)
    victim = list_episodes(tmp_path / "robot")[2]
    episode = load_episode(victim)
    episode["action"][10, 0] = 3.0
    save_episode(victim, episode)
    capsys.readouterr()
    assert _import(tmp_path / "robot", tmp_path / "dest", "--replace") == 1
    err = capsys.readouterr().err
    assert f"{victim} [action]: action_bounds" in err and "nothing was copied" in err
    assert _files(tmp_path / "dest") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest", "old", "robot"]


def test_import_refuses_to_overwrite_without_replace(tmp_path, capsys):
    from synthetic import make_dataset

    make_dataset(tmp_path / "a", episodes=2, steps=80, seed=1)
    make_dataset(tmp_path / "b", episodes=2, steps=80, seed=2)
    assert _import(tmp_path / "a", tmp_path / "dest") == 0
    assert _import(tmp_path / "b", tmp_path / "dest") == 2
    assert "pass --replace" in capsys.readouterr().err
    assert _files(tmp_path / "dest") == _files(tmp_path / "a")
    assert _import(tmp_path / "b", tmp_path / "dest", "--replace") == 0
    assert _files(tmp_path / "dest") == _files(tmp_path / "b")


def test_stages_run_the_code_of_the_repository_they_run_in(tmp_path):
    """DVC hashes a repository's src/ as its stages' deps, so the stages must import that code,
    not the checkout the venv's editable install points at (benchmark and sweep copies)."""
    from conftest import make_repo, sh

    repo = make_repo(tmp_path / "copy")
    out = sh([str(repo / "scripts/py"), "-c", "import redraw; print(redraw.__file__)"], repo).stdout
    assert Path(out.strip()).resolve().is_relative_to((repo / "src").resolve()), out
