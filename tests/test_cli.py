"""The `redraw` command line: help everywhere, clear errors, import that never half-copies."""

import subprocess
import sys
from pathlib import Path

import pytest

from redraw.cli import build_parser, main

SUBCOMMANDS = [[], ["envs"], ["collect"], ["validate"], ["preset"], ["pair"], ["regime"], ["stage"], ["data"], ["data", "validate"],
               ["data", "import"], ["data", "stats"], ["data", "merge"], ["rounds"]]


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
    assert "params.yaml: env.source 'pendulum-swingdown' is not an env of " in capsys.readouterr().err


def test_missing_param_key_names_file_and_key(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = tmp_path / "params.yaml"
    params.write_text("seed: 0\nenv: {source: pendulum-swingup, target: pendulum-swingup-reversed}\n")
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


def _merge(dest, *parts_and_flags):
    return main(["data", "merge", *map(str, parts_and_flags), "--dest", str(dest), "--params", "/nonexistent/params.yaml",
                 "--env", "pendulum-swingup-reversed", "--obs-mode", "proprio", "--min-transitions", "100"])


def test_merge_puts_the_first_episodes_of_one_set_then_another_in_one_validated_set(tmp_path, capsys):
    """What an engineer does after deploying an adapted policy: the expert's data and the
    deployed policy's logs in one data set to calibrate again on."""
    from redraw.data.episodes import list_episodes
    from redraw.data.schema import read_metadata
    from synthetic import make_dataset

    make_dataset(tmp_path / "expert", episodes=4, steps=80, seed=1)
    make_dataset(tmp_path / "deployed", episodes=2, steps=80, seed=2)
    assert _merge(tmp_path / "data/merged", f"{tmp_path / 'expert'}:3", tmp_path / "deployed") == 0
    want = [*list_episodes(tmp_path / "expert")[:3], *list_episodes(tmp_path / "deployed")]
    got = list_episodes(tmp_path / "data/merged")
    assert [p.read_bytes() for p in got] == [p.read_bytes() for p in want]
    assert [p.name for p in got] == [f"episode-{i:06d}.npz" for i in range(5)]
    meta = read_metadata(tmp_path / "data/merged")
    assert [(m["episodes"], Path(m["path"]).name) for m in meta.extra["merged_from"]] == [(3, "expert"), (2, "deployed")]
    assert "(3 episodes of" in meta.behaviour and "(2 episodes of" in meta.behaviour
    assert "5 episodes now in" in capsys.readouterr().out
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["merged"]  # no temp dirs left


def test_merge_refuses_parts_that_do_not_match_naming_the_file_and_field(tmp_path, capsys):
    from redraw.data.schema import read_metadata, write_metadata
    from synthetic import make_dataset

    make_dataset(tmp_path / "a", episodes=2, steps=80, seed=1)
    make_dataset(tmp_path / "b", episodes=2, steps=80, seed=2)
    meta = read_metadata(tmp_path / "b")
    meta.control_hz = 2 * meta.control_hz
    write_metadata(tmp_path / "b", meta)
    assert _merge(tmp_path / "dest", tmp_path / "a", tmp_path / "b") == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'b' / 'metadata.json'} [control_hz]" in err and "nothing was written" in err
    assert _merge(tmp_path / "dest", f"{tmp_path / 'a'}:5") == 2  # more episodes than there are
    assert "2 episodes, the first 5 asked for" in capsys.readouterr().err
    assert not (tmp_path / "dest").exists()


def test_a_robot_log_merges_with_simulator_data_of_the_same_agent_step_rate(tmp_path, capsys):
    """An imported log's rows are its control steps (action_repeat 1); simulator data of the same
    agent-step rate were collected with a repeat of 2. Only two simulator parts must share it."""
    from redraw.data.schema import read_metadata, write_metadata
    from synthetic import make_dataset

    for name, source, repeat in (("sim", "simulator", 2), ("robot", "robot", 1), ("sim1", "simulator", 1)):
        make_dataset(tmp_path / name, episodes=2, steps=80, seed=len(name))
        meta = read_metadata(tmp_path / name)
        meta.source, meta.action_repeat = source, repeat
        write_metadata(tmp_path / name, meta)
    assert _merge(tmp_path / "mixed", tmp_path / "sim", tmp_path / "robot") == 0
    assert read_metadata(tmp_path / "mixed").source == "simulator+robot"
    assert _merge(tmp_path / "sims", tmp_path / "sim", tmp_path / "sim1") == 2
    assert f"{tmp_path / 'sim1' / 'metadata.json'} [action_repeat]" in capsys.readouterr().err


def test_a_rejected_merge_writes_nothing_and_an_existing_one_needs_replace(tmp_path, capsys):
    from redraw.data.episodes import list_episodes, load_episode, save_episode
    from synthetic import make_dataset

    make_dataset(tmp_path / "a", episodes=2, steps=80, seed=1)
    make_dataset(tmp_path / "b", episodes=2, steps=80, seed=2)
    assert _merge(tmp_path / "dest", tmp_path / "a") == 0
    before = _files(tmp_path / "dest")
    assert _merge(tmp_path / "dest", tmp_path / "a", tmp_path / "b") == 2
    assert "pass --replace" in capsys.readouterr().err
    victim = list_episodes(tmp_path / "b")[1]
    episode = load_episode(victim)
    episode["action"][10, 0] = 3.0
    save_episode(victim, episode)
    assert main(["data", "merge", str(tmp_path / "a"), str(tmp_path / "b"), "--dest", str(tmp_path / "dest"),
                 "--replace", "--params", "/nonexistent/params.yaml", "--env", "", "--obs-mode", "",
                 "--min-transitions", "100"]) == 1
    assert f"{victim} [action]: action_bounds" in capsys.readouterr().err  # the part's file, not the merge's
    assert _files(tmp_path / "dest") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "dest"]


def test_stages_run_the_code_of_the_repository_they_run_in(tmp_path):
    """DVC hashes a repository's src/ as its stages' deps, so the stages must import that code,
    not the checkout the venv's editable install points at (benchmark and sweep copies)."""
    from conftest import make_repo, sh

    repo = make_repo(tmp_path / "copy")
    out = sh([str(repo / "scripts/py"), "-c", "import redraw; print(redraw.__file__)"], repo).stdout
    assert Path(out.strip()).resolve().is_relative_to((repo / "src").resolve()), out


REPO = Path(__file__).resolve().parents[1]


def _dvc_commands() -> dict[str, str]:
    """dvc.yaml's stages, foreach expanded, name -> cmd (as `dvc stage list` names them)."""
    import yaml

    cmds = {}
    for name, stage in yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"].items():
        if "foreach" not in stage:
            cmds[name] = stage["cmd"]
            continue
        items = stage["foreach"]
        for key in items if isinstance(items, dict) else items:
            cmds[f"{name}@{key}"] = stage["do"]["cmd"].replace("${key}", key).replace("${item}", key)
    return cmds


def test_stage_subcommands_are_dvc_yamls_stages_with_its_arguments():
    from redraw.cli_stages import STAGES

    cmds = _dvc_commands()
    assert set(STAGES) == set(cmds)
    for name, (module, fixed, _) in STAGES.items():
        expected = " ".join(["scripts/py", "-m", f"redraw.stages.{module}", *fixed])
        if name == "validate_target":
            expected += " --data ${target_data}"  # filled in from params.yaml, see below
        assert cmds[name] == expected, name


@pytest.mark.parametrize("name", ["calibrate@redraw", "validate_target", "register", "results"])
def test_every_stage_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args(["stage", name, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert f"usage: redraw stage {name}" in out and "--params" in out


def test_stage_without_a_name_lists_every_stage(capsys):
    from redraw.cli_stages import STAGES

    assert main(["stage"]) == 0
    listed = [line.split()[0] for line in capsys.readouterr().out.splitlines()]
    assert listed == list(STAGES)


def test_preset_help_lists_every_preset_file(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    names = sorted(p.stem for p in (REPO / "presets").glob("*.yaml"))
    assert "quick" in names
    with pytest.raises(SystemExit):
        build_parser().parse_args(["preset", "--help"])
    out = capsys.readouterr().out
    for name in names:
        assert f"\n  {name} " in out, name


def test_stage_runs_the_stage_modules_main(tmp_path, capsys, monkeypatch):
    """`redraw stage collect_source` writes what the DVC stage writes, with the params given."""
    import json

    from redraw.config import apply_preset, set_params

    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    apply_preset("smoke", params, root=REPO)
    set_params({"collect_source.episodes": 1}, params)
    (tmp_path / "envs.yaml").write_text((REPO / "envs.yaml").read_text())  # the env-pair file params.yaml names
    monkeypatch.chdir(tmp_path)
    assert main(["stage", "collect_source", "--params", str(params), "--no-progress"]) == 0
    assert "collect source:" in capsys.readouterr().out
    assert json.loads((tmp_path / "reports/collect_source.json").read_text())["data/episodes"] == 1
    assert json.loads((tmp_path / "data/source/metadata.json").read_text())["env"] == "pendulum-swingup"


def test_stage_validate_target_checks_target_data_from_params(tmp_path, capsys, monkeypatch):
    from redraw.config import set_params

    params = tmp_path / "params.yaml"
    params.write_text((REPO / "params.yaml").read_text())
    set_params({"target_data": "data/nowhere"}, params)
    (tmp_path / "envs.yaml").write_text((REPO / "envs.yaml").read_text())  # the env-pair file params.yaml names
    monkeypatch.chdir(tmp_path)
    assert main(["stage", "validate_target", "--params", str(params)]) == 1
    assert "data/nowhere" in capsys.readouterr().err


def test_envs_floor_shows_what_an_env_pays_without_skill(capsys):
    """reacher-easy starts the target within the still arm's reach in a few episodes (the first at
    seed 2), which then score the whole episode without any skill; the finger's torque target pays
    for doing nothing in every episode. An env not in the file is refused, naming those there are."""
    from redraw.envs.floor import floor_returns

    reacher = floor_returns("reacher-easy", 3)
    assert reacher["zero actions"] == [0.0, 0.0, 500.0]
    assert reacher == floor_returns("reacher-easy", 3)  # the same episodes and random actions again
    assert main(["envs", "--floor", "2", "--env", "finger-turn_hard-torque"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| finger-turn_hard-torque")]
    assert len(rows) == 2 and all("| 2 of 2 | 200 |" in row for row in rows)
    assert main(["envs", "--floor", "1", "--env", "finger-turn_easy"]) == 2
    assert "unknown env 'finger-turn_easy'" in capsys.readouterr().err
    assert main(["envs", "--floor", "-3"]) == 2
    assert "--floor -3: the number of episodes must be at least 1" in capsys.readouterr().err



def _parsers(parser, words=()):
    """Every parser of the command line with the words that reach it."""
    import argparse

    yield words, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, (*words, name))


PARSERS = dict(_parsers(build_parser()))


@pytest.mark.parametrize("words", list(PARSERS), ids=lambda w: " ".join(w) or "redraw")
def test_help_texts_print_as_written_and_name_their_defaults(words):
    """A description is printed as it is (argparse %-formats only an argument's help, so a
    description's ``%%`` prints doubled), and an option's "(default: ...)" names every value its
    default holds (a list default that grew must not read "all three")."""
    parser = PARSERS[words]
    assert "%%" not in parser.format_help(), f"redraw {' '.join(words)} --help prints '%%'"
    for action in parser._actions:
        if isinstance(action.default, (list, tuple)) and "(default:" in (action.help or ""):
            missing = [str(v) for v in action.default if str(v) not in action.help]
            assert not missing, f"redraw {' '.join(words)} {action.option_strings}: help omits {missing}"


def test_the_help_check_reads_list_defaults():
    sweep = [a for a in PARSERS[("sweep-data",)]._actions if a.dest == "methods"][0]
    assert sweep.default == ["draw_finetune", "dreamer_finetune", "redraw"] and "(default:" in sweep.help
