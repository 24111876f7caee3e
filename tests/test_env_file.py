"""The env-pair file: bad input is refused before anything runs, naming the file, the env and
the key (and, for model names, the valid ones); `redraw envs` lists what a file defines."""

import re

import pytest

from redraw.cli import main
from redraw.envs import EnvFileError, load_pairs, make_env

GOOD = """
sources:
  pend: {dm_control: pendulum/swingup}
targets:
  pend-x:
    source: pend
    perturbations:
%s
"""


def write(tmp_path, text):
    path = tmp_path / "pairs.yaml"
    path.write_text(text)
    return path


def target_with(tmp_path, *entries):
    return write(tmp_path, GOOD % "\n".join(f"      - {e}" for e in entries))


@pytest.mark.parametrize("entry, key, message", [
    ("{kind: stretch}", "perturbations[0].kind", "unknown perturbation kind 'stretch' (kinds: wrench,"),
    ("{kind: body_mass, body: pole, scale: 2, units: kg}", "perturbations[0].units", "unknown field for body_mass"),
    ("{kind: body_mass, body: pole, scale: 0}", "perturbations[0].scale", "must be a positive number, got 0"),
    ("{kind: joint_damping, joint: hinge, scale: -1.5}", "perturbations[0].scale", "must be a positive number"),
    ("{kind: action_scale, scale: [1.0, -1.0]}", "perturbations[0].scale", "must be positive"),
    ("{kind: action_delay, steps: -1}", "perturbations[0].steps", "non-negative whole number"),
    ("{kind: observation_delay, steps: 1.5}", "perturbations[0].steps", "non-negative whole number"),
    ("{kind: body_mass, scale: 2}", "perturbations[0]", "body_mass needs 'body'"),
    ("{kind: gravity, vector: [0, -9.81]}", "perturbations[0].vector", "a list of 3 numbers"),
    ("{body: pole}", "perturbations[0]", "with a 'kind'"),
])
def test_a_bad_perturbation_is_refused_when_the_file_is_read(tmp_path, entry, key, message):
    path = target_with(tmp_path, entry)
    with pytest.raises(EnvFileError) as err:
        load_pairs(path)
    assert str(err.value).startswith(f"{path}: targets.pend-x.{key}")
    assert message in str(err.value)


@pytest.mark.parametrize("entry, key, valid", [
    ("{kind: body_mass, body: pol, scale: 2}", "body", "bodies: world, pole"),
    ("{kind: geom_friction, geom: flor, scale: 2}", "geom", "geoms: floor, base, pole, mass"),
    ("{kind: joint_damping, joint: hinj, scale: 2}", "joint", "joints: hinge"),
    ("{kind: actuator_gear, actuator: motor, scale: 2}", "actuator", "actuators: torque"),
    ("{kind: wrench, body: ball, force: [1, 0, 0]}", "body", "bodies: world, pole"),
])
def test_an_unknown_model_name_is_refused_listing_the_valid_ones(tmp_path, entry, key, valid):
    path = target_with(tmp_path, entry)
    load_pairs(path)  # the form is fine; the name is checked against the model
    with pytest.raises(EnvFileError) as err:
        make_env("pend-x", "proprio", pairs=path)
    assert str(err.value).startswith(f"{path}: targets.pend-x.perturbations[0].{key}: no {key} named")
    assert valid in str(err.value)


def test_a_scale_that_does_nothing_is_refused(tmp_path):
    path = target_with(tmp_path, "{kind: body_mass, body: world, scale: 2}")
    with pytest.raises(EnvFileError, match=r"targets.pend-x.perturbations\[0\].body: body 'world' has no mass"):
        make_env("pend-x", "proprio", pairs=path)


def test_a_per_dimension_list_must_match_the_action_size(tmp_path):
    path = target_with(tmp_path, "{kind: action_offset, offset: [0.1, 0.2]}")
    with pytest.raises(EnvFileError, match=r"perturbations\[0\].offset: 2 values for an action of size 1"):
        make_env("pend-x", "proprio", pairs=path)


@pytest.mark.parametrize("text, message", [
    ("sources:\n  p: {dm_control: pendulum/swingdown}\n", "sources.p.dm_control: unknown task 'swingdown' of domain "
     "'pendulum' (tasks: swingup)"),
    ("sources:\n  p: {dm_control: pendulim/swingup}\n", "sources.p.dm_control: unknown dm_control domain 'pendulim' "
     "(domains: acrobot, ball_in_cup,"),
])
def test_an_unknown_domain_or_task_is_refused_listing_the_valid_ones(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(EnvFileError) as err:
        make_env("p", "proprio", pairs=path)
    assert str(err.value).startswith(f"{path}: {message}")


@pytest.mark.parametrize("text, message", [
    ("sources: {}\n", "'sources' is empty"),
    ("sources:\n  p: {dm_control: pendulum}\n", "sources.p.dm_control: expected 'DOMAIN/TASK'"),
    ("sources:\n  p: {mujoco: pendulum/swingup}\n", "sources.p.mujoco: unknown key"),
    ("sources:\n  p: {dm_control: pendulum/swingup}\npairs: {}\n", "unknown top-level key 'pairs'"),
    ("sources:\n  p: {dm_control: pendulum/swingup}\ntargets:\n  t: {source: q}\n",
     "targets.t.source: 'q' is not a source in this file (sources: p)"),
    ("sources:\n  p: {dm_control: pendulum/swingup}\ntargets:\n  p: {source: p}\n", "targets.p: 'p' is also a source"),
    ("sources:\n  p: {dm_control: pendulum/swingup}\ntargets:\n  t: {source: p, perturbations: {kind: gravity}}\n",
     "targets.t.perturbations: expected a list"),
    ("sources:\n  p: {dm_control: pendulum/swingup, gymnasium: Pendulum-v1}\n", "sources.p: give one simulator"),
    ("sources:\n  p: {dm_control: pendulum/swingup\n", "not valid YAML"),
])
def test_a_malformed_file_is_refused_naming_the_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(EnvFileError) as err:
        load_pairs(path)
    assert str(err.value).startswith(f"{path}: ") and message in str(err.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(EnvFileError, match=re.escape(f"{tmp_path / 'nope.yaml'}: env-pair file not found")):
        load_pairs(tmp_path / "nope.yaml")


def test_a_target_whose_spaces_differ_from_its_source_is_refused(tmp_path):
    path = write(tmp_path, "sources:\n  pend: {dm_control: pendulum/swingup}\n"
                           "targets:\n  other: {source: pend, dm_control: cartpole/swingup}\n")
    with pytest.raises(EnvFileError) as err:
        make_env("other", "proprio", pairs=path)
    assert str(err.value).startswith(f"{path}: targets.other: the target's observations")
    assert "differ from its source 'pend'" in str(err.value)


def test_redraw_envs_lists_every_pair_with_its_perturbations(tmp_path, capsys):
    path = target_with(tmp_path, "{kind: body_mass, body: pole, scale: 2.0}", "{kind: action_delay, steps: 2}",
                       "{kind: gravity, vector: [0, 0, -5]}")
    assert main(["envs", "--pairs", str(path), "--check"]) == 0
    out = capsys.readouterr().out
    assert f"env pairs from {path}" in out
    assert re.search(r"^pend +dm_control pendulum/swingup$", out, re.M)
    line = "mass and inertia of body 'pole' x 2; actions act 2 agent step(s) late; gravity (0.0, 0.0, -5.0) m/s^2"
    assert re.search(r"^  -> pend-x +" + re.escape(line) + "$", out, re.M)
    assert "checked: all 2 envs build" in out


def test_redraw_envs_env_narrows_the_listing_and_the_check(tmp_path, capsys):
    """``--env`` names the envs to show and build: a named target shows under its source, a
    named source with all its targets; one not in the file is refused before anything runs."""
    path = target_with(tmp_path, "{kind: body_mass, body: pole, scale: 2.0}")
    with open(path, "a") as fh:
        fh.write("  pend-y: {source: pend, perturbations: [{kind: gravity, vector: [0, 0, -5]}]}\n")
    assert main(["envs", "--pairs", str(path), "--env", "pend-y", "--check"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^pend +dm_control pendulum/swingup$", out, re.M)
    assert re.search(r"^  -> pend-y ", out, re.M) and "pend-x" not in out
    assert "checked: pend-y build" in out
    assert main(["envs", "--pairs", str(path), "--env", "pend"]) == 0
    out = capsys.readouterr().out
    assert "-> pend-x" in out and "-> pend-y" in out
    assert main(["envs", "--pairs", str(path), "--env", "pend-z", "--check"]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("envs: error: unknown env 'pend-z'") and "pend-x" not in captured.out


def test_redraw_envs_check_refuses_a_bad_name(tmp_path, capsys):
    path = target_with(tmp_path, "{kind: body_mass, body: pol, scale: 2}")
    assert main(["envs", "--pairs", str(path)]) == 0  # listing reads the form only
    assert main(["envs", "--pairs", str(path), "--check"]) == 2
    assert "no body named 'pol'" in capsys.readouterr().err


def test_collect_refuses_a_bad_target_before_collecting_anything(tmp_path, monkeypatch, capsys):
    """A bad name in env.target stops even collect_source, and nothing is written."""
    monkeypatch.chdir(tmp_path)
    target_with(tmp_path, "{kind: joint_damping, joint: hinj, scale: 2}")
    (tmp_path / "params.yaml").write_text(
        "seed: 0\nenv: {pairs: pairs.yaml, source: pend, target: pend-x, obs_mode: proprio, action_repeat: 2,\n"
        "  episode_steps: 10, image_size: 64, antialias: false}\ncollect: {workers: 1}\n"
        "collect_source: {episodes: 1, behaviour: {kind: random}}\n")
    assert main(["collect", "source", "--params", "params.yaml", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "pairs.yaml: targets.pend-x.perturbations[0].joint: no joint named 'hinj'" in err
    assert not (tmp_path / "data").exists()


def test_a_duplicate_key_is_one_line_naming_the_file_and_the_key(tmp_path):
    path = write(tmp_path, "sources:\n  pend: {dm_control: pendulum/swingup}\n"
                           "targets:\n  pend-x: {source: pend}\n  pend-x: {source: pend}\n")
    with pytest.raises(EnvFileError) as err:
        load_pairs(path)
    message = str(err.value)
    assert message == f"{path}: line 5: duplicate key 'pend-x' (a key may appear once in a mapping)"


def test_a_yaml_syntax_error_is_one_line_with_its_place(tmp_path):
    path = write(tmp_path, "sources:\n  p: {dm_control: pendulum/swingup\n")
    with pytest.raises(EnvFileError) as err:
        load_pairs(path)
    message = str(err.value)
    assert message.startswith(f"{path}: not valid YAML: line ") and "\n" not in message


def test_a_target_without_source_names_the_missing_key(tmp_path):
    path = write(tmp_path, "sources:\n  p: {dm_control: pendulum/swingup}\n"
                           "targets:\n  t: {perturbations: [{kind: reverse_actions}]}\n")
    with pytest.raises(EnvFileError) as err:
        load_pairs(path)
    assert str(err.value) == f"{path}: targets.t: missing key 'source' (the source env it perturbs; sources: p)"
