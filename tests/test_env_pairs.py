"""The pair params.yaml picks (env.source, env.target, env.pairs): refused before any stage runs
when it cannot run, naming params.yaml's keys and the env-pair file."""

import time
from pathlib import Path

import pytest

from redraw.cli import main
from redraw.cli_stages import STAGES
from redraw.config import set_params

ROOT = Path(__file__).resolve().parents[1]

PAIRS = """\
sources:
  pend: {dm_control: pendulum/swingup}
  cup: {dm_control: ball_in_cup/catch}
targets:
  pend-x:
    source: pend
    perturbations:
      - {kind: reverse_actions}
  cup-x:
    source: cup
    perturbations:
      - {kind: reverse_actions}
  pend-cart:
    source: pend
    dm_control: cartpole/swingup
"""


def scratch(tmp_path, monkeypatch, source="pend", target="pend-x", pairs=PAIRS):
    """A working directory with the repository's params.yaml picking (source, target) from pairs.yaml."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "pairs.yaml").write_text(pairs)
    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    set_params({"env.pairs": "pairs.yaml", "env.source": source, "env.target": target, "env.episode_steps": 10,
                "collect_source.episodes": 1}, tmp_path / "params.yaml")
    return tmp_path


def refused(capsys, argv) -> str:
    """Run ``redraw ARGV``: it must exit 2 with one error line, which is returned."""
    start = time.monotonic()
    assert main(argv) == 2
    assert time.monotonic() - start < 60
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def nothing_written(tmp_path):
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.yaml", "params.yaml"]


@pytest.mark.parametrize("stage", list(STAGES))
def test_every_stage_refuses_a_target_of_another_source_before_it_runs(tmp_path, monkeypatch, capsys, stage):
    """The issue's case: env.source and env.target from different sources (action sizes 1 and 2)."""
    scratch(tmp_path, monkeypatch, source="pend", target="cup-x")
    err = refused(capsys, ["stage", stage, "--params", "params.yaml"])
    assert ("params.yaml: env.target 'cup-x' is a target of 'cup' in pairs.yaml, not of env.source 'pend'; "
            "set env.source: cup, or pick one of the targets of 'pend': pend-x, pend-cart") in err
    nothing_written(tmp_path)


def test_repro_refuses_a_mismatched_pair_before_dvc_runs(tmp_path, monkeypatch, capsys):
    from redraw import scheduler

    scratch(tmp_path, monkeypatch, source="cup", target="pend-x")

    def no_dvc(*args, **kwargs):
        raise AssertionError("dvc ran")

    monkeypatch.setattr(scheduler, "dvc", no_dvc)
    monkeypatch.setattr(scheduler, "repro", no_dvc)
    for jobs in ("1", "2"):
        err = refused(capsys, ["repro", "--jobs", jobs])
        assert err.startswith("redraw repro: error: params.yaml: env.target 'pend-x' is a target of 'pend'")
    nothing_written(tmp_path)


def test_a_target_with_other_spaces_is_refused_naming_both_keys(tmp_path, monkeypatch, capsys):
    """A target with a simulator of its own whose spaces differ from env.source's."""
    scratch(tmp_path, monkeypatch, source="pend", target="pend-cart")
    err = refused(capsys, ["stage", "collect_oracle", "--params", "params.yaml"])
    assert err.startswith("collect oracle: error: params.yaml: env.source 'pend' and env.target 'pend-cart' have "
                          "different observations")
    assert "a target must have its source's spaces (pairs.yaml: targets.pend-cart.dm_control)" in err
    nothing_written(tmp_path)


@pytest.mark.parametrize("stage", ["collect_oracle", "collect_source", "validate_target", "evaluate@oracle"])
def test_a_target_missing_from_the_pair_file_is_refused_at_the_first_stage(tmp_path, monkeypatch, capsys, stage):
    scratch(tmp_path, monkeypatch, target="pend-typo")
    err = refused(capsys, ["stage", stage, "--params", "params.yaml"])
    assert err.endswith("error: params.yaml: env.target 'pend-typo' is not a target in pairs.yaml (env.pairs); "
                        "targets of 'pend': pend-x, pend-cart")
    assert "KeyError" not in err and '"' not in err
    nothing_written(tmp_path)


@pytest.mark.parametrize("source, target, message", [
    ("pendulum", "pend-x", "params.yaml: env.source 'pendulum' is not an env of pairs.yaml (env.pairs); "
                           "sources: pend, cup"),
    ("pend-x", "pend-x", "params.yaml: env.source 'pend-x' is a target in pairs.yaml, not a source (its source: pend)"),
    ("pend", "cup", "params.yaml: env.target 'cup' is a source in pairs.yaml, not a target; targets of 'pend': "),
])
def test_a_pair_of_wrong_names_is_refused_naming_the_key(tmp_path, monkeypatch, capsys, source, target, message):
    scratch(tmp_path, monkeypatch, source=source, target=target)
    assert message in refused(capsys, ["stage", "collect_source", "--params", "params.yaml"])
    nothing_written(tmp_path)


def test_redraw_pair_checks_the_pair_and_writes_it_keeping_the_comments(tmp_path, monkeypatch, capsys):
    from redraw.config import load_params
    from redraw.stages import stage_params

    scratch(tmp_path, monkeypatch)
    params = tmp_path / "params.yaml"
    (tmp_path / "other.yaml").write_text(PAIRS)
    before = params.read_text()
    assert main(["pair", "cup", "cup-x", "--pairs", "other.yaml", "--params", str(params)]) == 0
    out = capsys.readouterr().out
    assert out.strip() == (f"pair cup -> cup-x (other.yaml): 3 key(s) changed in {params}: "
                           "env.pairs, env.source, env.target")
    env = load_params(params)["env"]
    assert (env["pairs"], env["source"], env["target"]) == ("other.yaml", "cup", "cup-x")
    changed = [(a, b) for a, b in zip(before.splitlines(), params.read_text().splitlines()) if a != b]
    assert len(changed) == 3 and len(before.splitlines()) == len(params.read_text().splitlines())
    assert all(a.split("#")[1:] == b.split("#")[1:] for a, b in changed)  # each line keeps its comment
    stage_params(str(params))  # what every stage checks first
    assert main(["pair", "pend", "--params", str(params)]) == 2  # two targets: name one
    assert "pair: error: 'pend' has 2 targets in other.yaml (pend-x, pend-cart); give TARGET" in capsys.readouterr().err
    assert main(["pair", "pend", "pend-x", "--params", str(params)]) == 0  # env.pairs kept: other.yaml
    assert load_params(params)["env"]["target"] == "pend-x" and load_params(params)["env"]["pairs"] == "other.yaml"


@pytest.mark.parametrize("argv, message", [
    (["pend", "cup-x"], "pair: error: params.yaml: env.target 'cup-x' is a target of 'cup' in pairs.yaml, not of "
                        "env.source 'pend'"),
    (["pend", "pend-cart"], "pair: error: params.yaml: env.source 'pend' and env.target 'pend-cart' have different "
                            "observations"),
    (["pend", "pend-typo"], "pair: error: params.yaml: env.target 'pend-typo' is not a target in pairs.yaml"),
    (["pend", "pend-x", "--pairs", "nope.yaml"], "pair: error: nope.yaml: env-pair file not found"),
])
def test_redraw_pair_refuses_a_pair_that_cannot_run_and_writes_nothing(tmp_path, monkeypatch, capsys, argv, message):
    scratch(tmp_path, monkeypatch, source="cup", target="cup-x")
    before = (tmp_path / "params.yaml").read_text()
    err = refused(capsys, ["pair", *argv, "--params", "params.yaml"])
    assert err.startswith(message)
    assert (tmp_path / "params.yaml").read_text() == before
    nothing_written(tmp_path)


LEARNT = """\
sources:
  pend: {dm_control: pendulum/swingup, learned: 150}
  pendulum-swingup: {dm_control: pendulum/swingup}
  cup: {dm_control: ball_in_cup/catch}
targets:
  pend-x: {source: pend, perturbations: [{kind: reverse_actions}]}
"""


def test_the_pair_file_sets_the_learnt_threshold_and_records_fall_back_to_the_papers(tmp_path):
    import json

    from redraw.envs import load_pairs
    from redraw.results_records import learned_threshold, training_records

    path = tmp_path / "pairs.yaml"
    path.write_text(LEARNT)
    assert learned_threshold("pend", path) == 150.0  # the file's
    assert learned_threshold("pendulum-swingup", path) == 300.0  # records.LEARNED, the paper's four
    assert learned_threshold("cup-catch", load_pairs(path)) == 350.0
    assert learned_threshold("cup", path) is None  # neither: no verdict
    (tmp_path / "reports").mkdir()
    (tmp_path / "reports/pretrain_curve.json").write_text(json.dumps([{"step": 10, "eval_return": 200.0}]))
    (record,) = training_records(tmp_path, "pend-x", "pend", 0, "smoke", "abc1234", path)
    assert record["threshold"] == 150.0 and record["learned"] is True
    (record,) = training_records(tmp_path, "pend-x", "pendulum-swingup", 0, "smoke", "abc1234", path)
    assert record["threshold"] == 300.0 and record["learned"] is False


def test_a_learnt_threshold_is_a_number_and_not_part_of_a_runs_identity(tmp_path):
    from redraw.envs import EnvFileError, load_pairs

    path = tmp_path / "pairs.yaml"
    path.write_text(LEARNT.replace("learned: 150", "learned: high"))
    with pytest.raises(EnvFileError) as err:
        load_pairs(path)
    assert str(err.value).startswith(f"{path}: sources.pend.learned: expected a number")
    path.write_text(LEARNT)
    other = tmp_path / "other.yaml"
    other.write_text(LEARNT.replace("learned: 150", "learned: 400"))
    a, b = load_pairs(path), load_pairs(other)
    assert a.definition("pend-x") == b.definition("pend-x")  # a pretraining resumes after the edit
    assert load_pairs(a.to_mapping()).envs["pend"].learned == 150.0  # recorded with a model, read back


def test_redraw_envs_floor_shows_the_pair_files_threshold(tmp_path, capsys):
    path = tmp_path / "pairs.yaml"
    path.write_text(LEARNT)
    assert main(["envs", "--pairs", str(path), "--env", "pend", "--floor", "1"]) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| pend |")]
    assert len(rows) == 2 and all(row.endswith("| 150 |") for row in rows)


class RangedEnv:
    """A Gymnasium env that declares its reward_range (``test_env_pairs:RangedEnv`` in a pair file)."""

    def __new__(cls, lo: float, hi: float):
        import gymnasium as gym
        import numpy as np

        class Env(gym.Env):
            metadata = {"render_fps": 25}
            observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
            action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
            reward_range = (lo, hi)

        return Env()


REWARDS = """\
sources:
  pend: {dm_control: pendulum/swingup}
  gym-pend: {gymnasium: Pendulum-v1}
  gym-ranged: {gymnasium: Pendulum-v1, reward_range: [-17, 0]}
  declared: {gymnasium: "test_env_pairs:RangedEnv", kwargs: {lo: -2.0, hi: .inf}}
targets:
  pend-x: {source: pend, perturbations: [{kind: reverse_actions}]}
  gym-pend-weak: {source: gym-pend, perturbations: [{kind: action_scale, scale: 0.5}]}
  gym-ranged-weak: {source: gym-ranged, perturbations: [{kind: action_scale, scale: 0.5}]}
  gym-ranged-own: {source: gym-ranged, reward_range: [-20, 1]}
  declared-x: {source: declared}
"""


def test_reward_bounds_come_from_the_pair_file_or_the_env(tmp_path):
    import math

    from redraw.envs.dmc import reward_bounds

    pytest.importorskip("gymnasium")

    path = tmp_path / "pairs.yaml"
    path.write_text(REWARDS)
    assert reward_bounds("pend-x", path) == (0.0, 1.0, f"dm_control's rewards ({path}: sources.pend.dm_control)")
    assert reward_bounds("gym-ranged-weak", path) == (-17.0, 0.0, f"{path}: sources.gym-ranged.reward_range")
    assert reward_bounds("gym-ranged-own", path) == (-20.0, 1.0, f"{path}: targets.gym-ranged-own.reward_range")
    lo, hi, where = reward_bounds("declared-x", path)  # the env's own reward_range, its finite sides
    assert (lo, hi) == (-2.0, math.inf) and where.startswith("the Gymnasium env's reward_range")
    lo, hi, where = reward_bounds("gym-pend-weak", path)  # Gymnasium 1.x envs declare none: no bound
    assert (lo, hi) == (-math.inf, math.inf) and where.startswith("no range")


@pytest.mark.parametrize("text, message", [
    ("[0, 1, 2]", "expected [lo, hi], two numbers with lo < hi"),
    ("[1, 0]", "expected [lo, hi], two numbers with lo < hi"),
    ("[a, 1]", "expected [lo, hi]"),
])
def test_a_bad_reward_range_is_refused_naming_the_key(tmp_path, text, message):
    from redraw.envs import EnvFileError, load_pairs

    path = tmp_path / "pairs.yaml"
    path.write_text(REWARDS.replace("reward_range: [-17, 0]", f"reward_range: {text}"))
    with pytest.raises(EnvFileError) as err:
        load_pairs(path)
    assert str(err.value).startswith(f"{path}: sources.gym-ranged.reward_range: {message}")


def negative_rewards(directory: Path, low: float) -> None:
    """Rewards in [low, 0], as Gymnasium's Pendulum pays (row 0's placeholder stays 0)."""
    import numpy as np

    from redraw.data.episodes import load_episode, save_episode

    for path in sorted(directory.glob("*.npz")):
        episode = load_episode(path)
        episode["reward"][1:] = np.linspace(low, 0.0, len(episode["reward"]) - 1, dtype=np.float32)
        save_episode(path, episode, compress=False)


@pytest.mark.parametrize("low, code", [(-16.0, 0), (-18.0, 1)])
def test_validate_target_takes_the_reward_bounds_from_the_pair_file(tmp_path, monkeypatch, capsys, low, code):
    """A Gymnasium pendulum's rewards lie in [-16.3, 0]: within its reward_range, not dm_control's [0, 1]."""
    from synthetic import make_dataset

    scratch(tmp_path, monkeypatch, source="gym-ranged", target="gym-ranged-weak", pairs=REWARDS)
    make_dataset(tmp_path / "data/target", env="gym-ranged-weak", episodes=2, steps=80)
    negative_rewards(tmp_path / "data/target", low)
    # the synthetic data are logged at 50 Hz, not this env's rate: this test is about the rewards
    set_params({"validate.min_transitions": 100, "validate.allow_rate_mismatch": True}, tmp_path / "params.yaml")
    assert main(["stage", "validate_target", "--params", "params.yaml"]) == code
    err = capsys.readouterr().err
    if code:
        assert (f"reward {low:g} is outside [-17.0, 0.0] (validate.reward_min, validate.reward_max: reward_min and "
                "reward_max null in params.yaml, so the env's range: pairs.yaml: sources.gym-ranged.reward_range)") in err


def test_explicit_reward_bounds_in_params_win_and_are_named(tmp_path, monkeypatch, capsys):
    scratch(tmp_path, monkeypatch, target="pend-x", pairs=REWARDS)
    from synthetic import make_dataset

    make_dataset(tmp_path / "data/target", env="pend-x", episodes=2, steps=80)
    negative_rewards(tmp_path / "data/target", -3.0)
    set_params({"validate.min_transitions": 100, "validate.reward_min": -2.0}, tmp_path / "params.yaml")
    assert main(["stage", "validate_target", "--params", "params.yaml"]) == 1
    err = capsys.readouterr().err
    assert ("reward -3 is outside [-2.0, 1.0] (validate.reward_min, validate.reward_max: reward_max null in "
            "params.yaml, so the env's range: dm_control's rewards (pairs.yaml: sources.pend.dm_control))") in err
    set_params({"validate.reward_max": 0.5}, tmp_path / "params.yaml")
    assert main(["stage", "validate_target", "--params", "params.yaml"]) == 1
    assert "is outside [-2.0, 0.5] (validate.reward_min, validate.reward_max: set in params.yaml)" in capsys.readouterr().err
    set_params({"validate.reward_max": "high"}, tmp_path / "params.yaml")
    assert main(["stage", "validate_target", "--params", "params.yaml"]) == 2
    assert ("validate: error: params.yaml: validate.reward_max: expected a number, or null for the env's reward range, "
            "got 'high'") in capsys.readouterr().err


def test_data_validate_refuses_null_reward_bounds_it_cannot_resolve_in_one_line(tmp_path, monkeypatch, capsys):
    from synthetic import make_dataset

    scratch(tmp_path, monkeypatch, target="pend-x", pairs=REWARDS)
    make_dataset(tmp_path / "data", env="pend-x", episodes=2, steps=80)
    set_params({"env.target": "my-robot"}, tmp_path / "params.yaml")
    err = refused(capsys, ["data", "validate", "data", "--params", "params.yaml"])
    assert err == ("validate: error: params.yaml: validate.reward_min / validate.reward_max are null (the env's reward "
                   "range), but env.target 'my-robot' is not an env of pairs.yaml; set them")
