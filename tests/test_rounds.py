"""Adapting in rounds (redraw rounds, flows/rounds.py, redraw.robot): the stand-in's logs through the
import, the data each round keeps, and on a copy of the smoke pipeline a round killed mid-training and
resumed by the Prefect flow, then the bad input: logs that fail validation, no logs within the
timeout, logs of another robot or pair."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

pytest.importorskip("rosbags")

from conftest import sh  # noqa: E402

from redraw.config import ConfigError  # noqa: E402
from redraw.data.episodes import list_episodes, load_episode  # noqa: E402
from redraw.rounds import kept_parts  # noqa: E402

ENV = "pendulum-swingup-reversed"
NAME = "pendulum-swingup-to-pendulum-swingup-reversed"


def rollouts(env_name=ENV, obs_mode="proprio", action_repeat=2, steps=40, episodes=2, seed=5, image_size=64):
    """Episodes of correlated noise in ``env_name`` (the seeds the stand-in gives its episodes), and the env's rate."""
    from redraw.data.behaviours import BehaviourConfig, make_behaviour
    from redraw.data.collect import run_episode
    from redraw.envs import make_env

    with make_env(env_name, obs_mode=obs_mode, seed=3, action_repeat=action_repeat, episode_steps=steps,
                  image_size=image_size) as env:
        behaviour = make_behaviour(BehaviourConfig(kind="correlated"), env.action_low, env.action_high, env=env)
        return [run_episode(env, behaviour, s) for s in seeds(seed, episodes)], env.control_hz


def seeds(seed, episodes):
    """Episode i's seeds as the stand-in makes them (new objects: a SeedSequence spawns other seeds each time)."""
    return [np.random.SeedSequence([seed, 4545, 1, i]) for i in range(episodes)]


def drop_logs(drop: Path, tamper=None, returns=None, **kw) -> None:
    """What an operator drops for a round: a bag per episode, logged as the stand-in logs, then DONE."""
    from rosbags.typesys import Stores, get_typestore

    from redraw.data.importers.rosbag import write_bag
    from redraw.robot import T0, Timing, episode_messages

    store, rng = get_typestore(Stores.ROS2_HUMBLE), np.random.default_rng(0)
    episodes, hz = rollouts(**kw)
    for i, ep in enumerate(episodes):
        if tamper:
            tamper(ep)
        commands = [*ep["action"][1:], np.zeros_like(ep["action"][0])]  # command k: the action after observation k
        write_bag(drop / f"episode-{i:03d}", episode_messages(ep, commands, hz, rng, T0 + i * 10**11, Timing(), store))
    (drop / "DONE").write_text(json.dumps({"returns": returns}) if returns else "")


def test_the_stand_ins_bags_import_to_the_episodes_it_ran(tmp_path):
    """No shortcut: the stand-in's MCAP bags, read through the import with its mapping config, give
    the simulated episodes bit for bit, though every message was logged with jitter and latency."""
    from redraw.data.behaviours import BehaviourConfig, make_behaviour
    from redraw.data.importer import import_logs
    from redraw.data.importers.rosbag import inspect
    from redraw.envs import make_env
    from redraw.robot import TOPICS, record_bags, standin_mapping
    from redraw.validation import ValidationConfig

    want, hz = rollouts()
    with make_env(ENV, obs_mode="proprio", seed=3, action_repeat=2, episode_steps=40) as env:
        behaviour = make_behaviour(BehaviourConfig(kind="correlated"), env.action_low, env.action_high, env=env)
        returns = record_bags(env, behaviour, seeds(5, 2), tmp_path / "bags")
    assert sorted(p.name for p in (tmp_path / "bags").iterdir()) == ["episode-000", "episode-001"]
    assert next((tmp_path / "bags/episode-000").glob("*.mcap"))
    streams = {row["stream"]: row for row in inspect(str(tmp_path / "bags/episode-000"))}
    assert streams[TOPICS["action"]]["count"] == 41  # one command per observation, the last after the end
    assert 0.1 < streams[TOPICS["action"]]["jitter_ms"] < 5 and 0.1 < streams[TOPICS["state"]]["jitter_ms"] < 5
    mapping = tmp_path / "map.yaml"
    mapping.write_text(yaml.safe_dump(standin_mapping(ENV, "proprio", hz, 64, 16, ["bags"])))
    result, record = import_logs(mapping, tmp_path / "imported", ValidationConfig(16, None, None, 40, expected_env=ENV),
                                 progress=False, params={"env": {"action_repeat": 2}})
    assert result.success, result.failures
    assert all(not unit["cuts"] and not unit["repeated_samples"] for unit in record["units"])
    got = [load_episode(p) for p in list_episodes(tmp_path / "imported")]
    assert len(got) == 2
    for g, w, r in zip(got, want, returns):
        for key in ("state", "action", "reward", "is_first", "is_last"):
            np.testing.assert_array_equal(g[key], w[key], err_msg=key)
        assert float(g["reward"][1:].sum(dtype=np.float64)) == pytest.approx(r)


def test_each_round_keeps_the_data_its_setting_names():
    logs = [f"rounds/round-{i:03d}/data/logs" for i in (1, 2, 3)]
    assert kept_parts(3, "all", "data/target") == [("data/target", None), *[(p, None) for p in logs]]
    assert kept_parts(3, "newest:2", "data/target") == [(p, None) for p in logs[1:]]
    assert kept_parts(3, "first+newest:1", "data/target", 40) == [("data/target", 40), (logs[2], None)]
    assert kept_parts(1, "newest:5", "data/target") == [(logs[0], None)]
    for bad in ("newest", "newest:0", "first:2", "everything"):
        with pytest.raises(ConfigError, match=rf"keep '{bad}' is not all \(the first data set"):
            kept_parts(1, bad, "data/target")


def test_a_robot_command_leaves_its_logs_whole_or_fails_naming_the_command(tmp_path):
    from redraw.robot import CommandRobot, Deployment, NoLogs

    deployment = Deployment("models:/m/3", "m", "3", "champion", 2, 1, 0)
    (tmp_path / "robot").mkdir()
    (tmp_path / "robot/episode-000.mcap").write_bytes(b"bag")
    copy = ("cp ROBOT/episode-000.mcap {out} && echo {model} {episodes} {round} > {out}/asked && "
            "echo '{{\"returns\": [1, 2.5]}}' > {out}/returns.json").replace("ROBOT", str(tmp_path / "robot"))
    logs = CommandRobot(copy, 30).run(deployment, tmp_path / "logs")
    assert logs.returns == [1.0, 2.5] and (tmp_path / "logs/episode-000.mcap").read_bytes() == b"bag"
    assert (tmp_path / "logs/asked").read_text() == "models:/m/3 2 1\n"
    for template, timeout, says in (("exit 3", 30, "failed (exit 3)"), ("true", 30, "left no logs"),
                                    ("sleep 5", 0.5, "no logs within the timeout of 0.5 s")):
        with pytest.raises(NoLogs, match=re.escape(says)):
            CommandRobot(template, timeout).run(deployment, tmp_path / "other")
        assert not (tmp_path / "other").exists() and not list(tmp_path.glob(".other*"))
    with pytest.raises(ValueError, match=r"bad placeholder 'modle'"):
        CommandRobot("deploy {modle}", 30)


# -- on the smoke pipeline --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def registered(smoke_repo, tmp_path_factory):
    """A copy of the smoke pipeline with an MLflow store of its own: its evaluated policy registered
    and promoted (the registry the rounds start from)."""
    path = tmp_path_factory.mktemp("rounds") / "repo"
    shutil.copytree(smoke_repo.path, path, symlinks=True, ignore=shutil.ignore_patterns("mlruns"))
    sh([sys.executable, "-m", "redraw.stages.register"], path)
    sh([sys.executable, "-m", "redraw.cli", "promote"], path)
    return path


@pytest.fixture
def repo(registered, tmp_path):
    path = tmp_path / "repo"
    shutil.copytree(registered, path, symlinks=True)
    return path


def client(repo):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    return MlflowClient()


def champion(repo) -> str:
    return str(client(repo).get_model_version_by_alias(NAME, "champion").version)


def untouched(repo) -> dict:
    """What a failed round must leave as it was: params, dvc.lock, the .dvc files, the first data set."""
    from redraw.data.episodes import dataset_fingerprint

    return {"params": (repo / "params.yaml").read_text(), "lock": (repo / "dvc.lock").read_text(),
            "dvc": {str(p): p.read_text() for p in repo.rglob("*.dvc") if p.is_file()},
            "base": dataset_fingerprint(repo / "data/target"), "champion": champion(repo)}


def rounds_cli(repo, *args):
    return sh([sys.executable, "-m", "redraw.cli", "rounds", "--episodes", "2", *args], repo, check=False)


def round_runs(repo):
    from mlflow.entities import ViewType

    c = client(repo)
    experiments = [e.experiment_id for e in c.search_experiments(view_type=ViewType.ALL)]
    return c.search_runs(experiments, "tags.`redraw.kind` = 'round'")


@pytest.mark.slow
def test_a_round_killed_mid_training_resumes_in_the_flow_then_bad_logs_leave_it_untouched(repo, tmp_path):
    """The stand-in's round 1 is killed while it trains and resumed by the Prefect flow: the robot is
    not asked again, no episode is lost or counted twice, the round is one MLflow run with its data
    version and model versions. Round 2's logs (a real robot's drop) fail validation: round 1's data,
    the params, the DVC files and the champion stay as they were."""
    from redraw.data.episodes import dataset_fingerprint

    base = list_episodes(repo / "data/target")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env.update(VIRTUAL_ENV=sys.prefix, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.Popen([sys.executable, "-m", "redraw.cli", "rounds", "--episodes", "2"], cwd=repo, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    state_file = repo / "rounds/round-001/state.json"
    deadline = time.time() + 900
    try:
        while not (state_file.is_file() and json.loads(state_file.read_text()).get("step") == "track"):
            assert proc.poll() is None, proc.stdout.read()
            assert time.time() < deadline, "the round did not reach its training"
            time.sleep(0.2)
        time.sleep(3)  # into calibrate@redraw
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    state = json.loads(state_file.read_text())
    assert state["step"] == "track" and state["returns"] and len(state["returns"]) == 2
    bags = repo / "rounds/round-001/data/bags"
    logged = {p.name: p.stat().st_mtime_ns for p in bags.iterdir()}

    flow = sh([sys.executable, "-m", "flows.rounds", "--root", str(repo), "--episodes", "2"], repo, check=False,
              env={"PREFECT_HOME": str(tmp_path / "prefect"), "PYTHONPATH": str(repo)})
    out = flow.stdout + flow.stderr
    assert flow.returncode == 0, out[-4000:]
    assert "round 1" in out and "Finished in state Completed" in out
    assert "Task run 'train'" in out and "Task run 'collect'" not in out  # resumed after the steps done
    assert {p.name: p.stat().st_mtime_ns for p in bags.iterdir()} == logged  # the robot was not asked again

    state = json.loads(state_file.read_text())
    assert state["step"] == "promote" and "failure" not in state
    logs = list_episodes(repo / "rounds/round-001/data/logs")
    target = list_episodes(repo / "rounds/round-001/data/target")
    assert len(logs) == 2 and len(target) == len(base) + 2
    for got, want in zip(target, [*base, *logs]):
        assert got.read_bytes() == want.read_bytes()
    dvc_file = yaml.safe_load((repo / "rounds/round-001/data.dvc").read_text())
    assert dvc_file["outs"][0]["md5"] == state["data"]["dvc_md5"]
    assert "target_data: rounds/round-001/data/target" in (repo / "params.yaml").read_text()
    fingerprint = dataset_fingerprint(repo / "rounds/round-001/data/target")
    assert state["data"]["fingerprint"] == fingerprint

    (run,) = round_runs(repo)  # one run for the round, though it ran in two processes
    assert run.info.status == "FINISHED" and run.data.tags["data.dvc_md5"] == state["data"]["dvc_md5"]
    assert run.data.tags["model.deployed_version"] == "1" and run.data.tags["model.registered_version"] == "2"
    evaluated = json.loads((repo / "reports/evaluate/redraw.json").read_text())
    assert run.data.metrics["eval/return_mean"] == pytest.approx(evaluated["return_mean"])
    assert run.data.metrics["robot/return_mean"] == pytest.approx(np.mean(state["returns"]))
    mv = client(repo).get_model_version(NAME, "2")
    assert mv.tags["data_hash"] == fingerprint  # the registered policy was trained on the round's data
    assert champion(repo) == ("2" if state["promotion"]["promoted"] else "1")

    # round 2: a real robot's logs with a reward outside the env's range
    before = untouched(repo)
    round1 = dataset_fingerprint(repo / "rounds/round-001/data/target")
    drop_logs(repo / "inbox/round-002", tamper=lambda ep: ep["reward"].__setitem__(7, 7.0), steps=50)
    bad = rounds_cli(repo, "--rounds", "2", "--robot", "dir:inbox", "--timeout", "5",
                     "--mapping", "rounds/standin-mapping.yaml")
    assert bad.returncode == 1, bad.stderr[-3000:]
    assert "round 2: the logs of round 2 REJECTED" in bad.stderr
    assert "rounds/round-002/data/logs/episode-000000.npz [reward]" in bad.stderr
    assert json.loads((repo / "rounds/round-002/validation.json").read_text())["success"] is False
    assert untouched(repo) == before and dataset_fingerprint(repo / "rounds/round-001/data/target") == round1
    assert not (repo / "rounds/round-002/data/logs").exists() and not (repo / "rounds/round-002/data.dvc").exists()
    assert json.loads((repo / "rounds/round-002/state.json").read_text())["step"] == "collect"


@pytest.mark.slow
def test_no_logs_within_the_timeout_fail_the_round_and_promote_nothing(repo):
    before = untouched(repo)
    (repo / "robot.yaml").write_text("version: 1\n")  # never read: the round fails before the import
    proc = rounds_cli(repo, "--robot", "dir:inbox", "--timeout", "1", "--mapping", "robot.yaml")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "round 1: no logs within the timeout of 1 s" in proc.stderr and "inbox/round-001/DONE" in proc.stderr
    request = json.loads((repo / "inbox/round-001/REQUEST.json").read_text())
    assert request["model_uri"] == f"models:/{NAME}/{before['champion']}" and request["episodes"] == 2
    assert untouched(repo) == before
    (run,) = round_runs(repo)
    assert run.info.status == "FAILED" and "no logs within the timeout" in run.data.tags["redraw.failure"]
    assert json.loads((repo / "rounds/round-001/state.json").read_text())["step"] == "deploy"


@pytest.mark.slow
def test_logs_of_another_robot_or_pair_are_refused_naming_the_key(repo):
    """Bags of another pair (a wider state), at another rate (commands at 50 Hz), with other
    observation keys (pixels), and episode-schema drops with another action size or rate: each is
    refused naming the key, and the data, the params and the champion stay as they were."""
    from redraw.data.schema import DataError, read_metadata, write_metadata
    from redraw.rounds import RoundRejected, Rounds, RoundsConfig
    from synthetic import make_dataset

    before = untouched(repo)
    mapping = str(repo / "rounds/standin-mapping.yaml")
    Rounds(RoundsConfig(episodes=2, robot="sim"), repo).open()  # writes the stand-in's mapping config

    def schema_logs(drop, env, hz):
        make_dataset(drop, env=env, episodes=2, steps=40)
        meta = read_metadata(drop)
        meta.env, meta.control_hz = ENV, hz
        write_metadata(drop, meta)

    cases = [("observations.state", "episode-000", "gives 8 dimensions (8); env 'pendulum-swingup-reversed' has 3",
              dict(env_name="cup-catch-windy")),
             ("target.control_hz", "episode-000", "action topic '/robot/command' runs at 50.", dict(action_repeat=1)),
             ("observations.state.topic", "episode-000", "no topic '/robot/state' in the bag",
              dict(obs_mode="pixels", image_size=32)),
             ("action_size", "round-001/data/logs/metadata.json", "2, but the loop's first data set data/target has 1",
              ("reacher-easy-reversed", 25.0)),
             ("control_hz", "round-001/data/bags/metadata.json", "control_hz is 50 Hz, the env takes 25", (ENV, 50.0))]
    for key, where, says, logs in cases:
        shutil.rmtree(repo / "inbox", ignore_errors=True)
        shutil.rmtree(repo / "rounds/round-001", ignore_errors=True)
        drop = repo / "inbox/round-001"
        if isinstance(logs, dict):
            drop_logs(drop, **logs)
        else:  # an episode-schema data set: no mapping config
            schema_logs(drop, *logs)
            (drop / "DONE").write_text("")
        cfg = RoundsConfig(episodes=2, robot="dir:inbox", timeout=5, mapping=mapping if isinstance(logs, dict) else "")
        with pytest.raises((DataError, RoundRejected)) as err:
            Rounds(cfg, repo).run()
        if isinstance(err.value, RoundRejected):  # the data contract: the failure names the file and key
            (failure,) = err.value.result.failures
            field, file = failure.field, failure.file
        else:
            field, file = err.value.field, err.value.file
        assert field == key and where in file and says in str(err.value), str(err.value)
        assert not (repo / "rounds/round-001/data/logs").exists()
    assert untouched(repo) == before


@pytest.mark.slow
def test_the_logged_gate_compares_the_returns_logged_on_the_robot(repo, monkeypatch):
    """``--gate logged``: the deployed challenger is promoted on its return on the robot (the
    ``robot_return`` the loop records from validated logs), not on its evaluation in the simulator."""
    from redraw.deploy import DeployError, promote, register

    monkeypatch.chdir(repo)
    c = client(repo)
    first = c.get_model_version_by_alias(NAME, "champion")
    second = register(first.source, NAME, {**first.tags, "target_return": "-1000"})  # worse in the simulator
    c.set_model_version_tag(NAME, second, "robot_return", "50")
    with pytest.raises(DeployError, match=rf"v{first.version} has no numeric robot_return tag"):
        promote(NAME, 0.0, "robot_return", second)
    c.set_model_version_tag(NAME, first.version, "robot_return", "60")
    assert promote(NAME, 0.0, "robot_return", second) == (False, f"refused: challenger v{second} robot return 50.00 "
                                                          f"does not beat champion v{first.version} (60.00) by more "
                                                          "than the margin 0")
    c.set_model_version_tag(NAME, first.version, "robot_return", "40")
    promoted, why = promote(NAME, 5.0, "robot_return", second)
    assert promoted and "robot return 50.00" in why and champion(repo) == second


def test_the_benchmark_records_round_0_and_every_finished_round(tmp_path):
    """redraw.experiments.rounds: one record per round, round 0 from the work dir's own evaluation, an
    unfinished round left out, merged by key into the results file."""
    from redraw.experiments import rounds as bench
    from redraw.results_records import merge_keyed

    workdir, dest = tmp_path / "cpu-seed1", tmp_path / "cpu-seed1-rounds-redraw-all-e20"
    ev = {"return_mean": 40.0, "return_ci_low": 30.0, "return_ci_high": 50.0, "episodes": 10, "returns": [1.0]}
    (workdir / "reports/evaluate").mkdir(parents=True)
    (workdir / "reports/evaluate/redraw.json").write_text(json.dumps(ev))
    (workdir / "reports/evaluate/oracle.json").write_text(json.dumps({**ev, "return_mean": 270.0}))
    (dest / "rounds/round-001").mkdir(parents=True)
    (dest / "rounds/round-002").mkdir(parents=True)
    (dest / "rounds/manifest.json").write_text(json.dumps({
        "target": "reacher-easy-reversed", "seed": 1, "preset": "cpu",
        "settings": {"method": "redraw", "episodes": 20, "keep": "all", "base_episodes": 0, "expert": ""}}))
    done = {"round": 1, "step": "promote", "returns": [100.0, 200.0], "evaluation": {**ev, "return_mean": 250.0},
            "data": {"episodes": 80, "transitions": 40000}, "deployed": {"version": "1"}, "registered": {"version": "2"},
            "promotion": {"promoted": True, "champion": "2"}}
    (dest / "rounds/round-001/state.json").write_text(json.dumps(done))
    (dest / "rounds/round-002/state.json").write_text(json.dumps({"round": 2, "step": "merge"}))
    found = bench.records(workdir, dest, "redraw", "policy", "abc")
    assert [(r["round"], r["eval"]["return_mean"]) for r in found] == [(0, 40.0), (1, 250.0)]
    assert found[1]["logged_return_mean"] == 150.0 and found[1]["promoted"] and found[1]["champion_version"] == "2"
    assert {r["expert_return"] for r in found} == {270.0}
    assert "returns" not in found[0]["eval"]  # small records: the summary, not every episode
    path = tmp_path / "rounds.json"
    merge_keyed(path, {"records": (bench.KEY, found)})
    merge_keyed(path, {"records": (bench.KEY, [{**found[1], "eval": {"return_mean": 260.0}}])})
    rows = json.loads(path.read_text())["records"]
    assert [(r["round"], r["eval"]["return_mean"]) for r in rows] == [(0, 40.0), (1, 260.0)]
    assert bench.rounds_dir(workdir, "redraw", "first+newest:1", 20, "expert").name == \
        "cpu-seed1-expertlog-redraw-first-newest1-e20"
