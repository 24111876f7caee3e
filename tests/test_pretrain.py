"""Online pretraining: a smoke run on a real dm_control env, SIGKILL-safe resume, checkpoint identity."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from redraw.agent.agent import load_agent
from redraw.checkpoint import CheckpointMismatch, load_checkpoint, save_checkpoint
from redraw.config import _yaml, apply_preset, load_params
from redraw.data.episodes import iter_episodes

ROOT = Path(__file__).resolve().parents[1]


def make_workdir(path: Path, steps: int = 300, final_eval_episodes: int = 0) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "presets", path / "presets")
    shutil.copy(ROOT / "params.yaml", path / "params.yaml")
    shutil.copy(ROOT / "envs.yaml", path / "envs.yaml")
    apply_preset("smoke", path / "params.yaml", root=path)
    params = load_params(path / "params.yaml", round_trip=True)
    params["pretrain"]["steps"] = steps
    params["pretrain"]["final_eval_episodes"] = final_eval_episodes
    with open(path / "params.yaml", "w") as fh:
        _yaml().dump(params, fh)
    for which in ("source", "oracle"):  # each training's start: data/source, and data/oracle for the oracle
        subprocess.run([sys.executable, "-m", "redraw.stages.collect", which, "--no-progress"], cwd=path, check=True,
                       capture_output=True)
    return path


def pretrain(path: Path, **kw):
    return subprocess.Popen([sys.executable, "-m", "redraw.stages.pretrain", "--no-progress"], cwd=path,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


@pytest.mark.slow
def test_sigkilled_run_resumes_with_same_updates_and_replay(tmp_path):
    ref_dir = make_workdir(tmp_path / "ref", final_eval_episodes=2)
    ref = pretrain(ref_dir)
    out, _ = ref.communicate(timeout=600)
    assert ref.returncode == 0, out
    reference = json.loads((ref_dir / "reports/pretrain.json").read_text())
    assert reference["train/updates"] == 150 and reference["train/steps"] == 300
    # evaluations every 50 steps on 1 episode each, the last (the learnt verdict's) on 2
    curve = json.loads((ref_dir / "reports/pretrain_curve.json").read_text())
    assert [c["step"] for c in curve] == list(range(50, 301, 50))
    assert [c["episodes"] for c in curve] == [1] * 5 + [2]
    assert (ref_dir / "models/pretrain/agent.pt").is_file()
    # the world model's observation scale is the source data's, and ships with the weights
    states = np.concatenate([ep["state"] for _, ep in iter_episodes(ref_dir / "data/source")])
    wm = load_agent(ref_dir / "models/pretrain/agent.pt").wm
    assert np.allclose(wm.vec_mean.numpy(), states.mean(0), atol=1e-4)
    assert np.allclose(wm.vec_std.numpy(), np.maximum(states.std(0, ddof=1), 1e-2), rtol=1e-3)

    run_dir = make_workdir(tmp_path / "killed", final_eval_episodes=2)
    proc = pretrain(run_dir)
    deadline = time.time() + 300
    ckpts = []
    while time.time() < deadline and not ckpts:
        ckpts = list(run_dir.glob("checkpoints/*/checkpoint.pt"))
        time.sleep(0.02)
    assert ckpts, "no checkpoint appeared"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = load_checkpoint(ckpts[0])
    assert 0 < saved["agent"]["updates"] < 150, "kill came too late to test a resume"
    assert not (run_dir / "reports/pretrain.json").exists()
    # the checkpoint carries the killed process's training time; the resumed run's total adds it
    assert saved["seconds"] > 0
    blob = torch.load(ckpts[0], weights_only=True)
    blob["state"]["seconds"] = 1000.0
    torch.save(blob, ckpts[0])

    again = pretrain(run_dir)
    out, _ = again.communicate(timeout=600)
    assert again.returncode == 0, out
    assert f"at step {saved['step']}, update {saved['agent']['updates']}" in out
    resumed = json.loads((run_dir / "reports/pretrain.json").read_text())
    assert resumed.pop("train/seconds") > 1000.0
    reference.pop("train/seconds")
    assert resumed == reference  # same updates, same replay, same numbers


@pytest.mark.slow
def test_two_processes_of_one_training_share_its_checkpoints_one_trains_the_other_waits(tmp_path):
    """With REDRAW_CHECKPOINTS (what the sweep sets per machine), two pipeline directories with the
    same data and settings train their ``pretrain`` once: the second waits for the first's lock,
    then loads the finished run and writes the same outputs."""
    first = make_workdir(tmp_path / "a")
    second = tmp_path / "b"
    shutil.copytree(first, second)
    shared = tmp_path / "machine-checkpoints"
    env = {**os.environ, "REDRAW_CHECKPOINTS": str(shared)}
    procs = [pretrain(first, env=env)]
    deadline = time.time() + 300
    while time.time() < deadline and not list(shared.glob("pretrain-*/lock")):
        time.sleep(0.02)
    procs.append(pretrain(second, env=env))
    outs = [proc.communicate(timeout=600)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0], outs
    assert "another process is training this run" in outs[1] and "resuming" in outs[1]
    assert "another process is training this run" not in outs[0]
    assert len(list(shared.glob("pretrain-*/checkpoint.pt"))) == 1
    assert not (first / "checkpoints").exists() and not (second / "checkpoints").exists()
    reports = [json.loads((d / "reports/pretrain.json").read_text()) for d in (first, second)]
    for report in reports:
        report.pop("train/seconds")
    assert reports[0] == reports[1] and reports[0]["train/updates"] == 150
    weights = [torch.load(d / "models/pretrain/agent.pt", weights_only=True)["state"]["agent"] for d in (first, second)]
    assert weights[0]["updates"] == weights[1]["updates"] == 150
    assert weights[0]["model"].keys() == weights[1]["model"].keys()
    assert all(torch.equal(v, weights[1]["model"][k]) for k, v in weights[0]["model"].items())


def test_checkpoint_for_another_setup_is_refused_naming_the_field(tmp_path):
    identity = {"env": "pendulum-swingup", "obs_mode": "proprio", "model": {"latent_vars": 32}}
    save_checkpoint(tmp_path / "c.pt", {"w": torch.ones(2)}, identity)
    assert load_checkpoint(tmp_path / "c.pt", expect=identity)["w"].sum() == 2
    with pytest.raises(CheckpointMismatch, match="obs_mode='proprio'.*obs_mode='pixels'"):
        load_checkpoint(tmp_path / "c.pt", expect={**identity, "obs_mode": "pixels"})
    with pytest.raises(CheckpointMismatch, match="model.latent_vars=32.*model.latent_vars=256"):
        load_checkpoint(tmp_path / "c.pt", expect={**identity, "model": {"latent_vars": 256}})
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # atomic: no temp file left


def test_a_training_lock_makes_another_process_wait_and_is_released_when_its_holder_closes_or_dies(tmp_path):
    from redraw.checkpoint import hold_lock

    lock = hold_lock(tmp_path / "run", "pretrain")
    assert hold_lock(tmp_path / "run", "pretrain") is lock  # re-entrant within a process
    other = [sys.executable, "-c", "import sys; from redraw.checkpoint import hold_lock; "
             "hold_lock(sys.argv[1], 'oracle'); print('got it', flush=True)", str(tmp_path / "run")]
    waiting = subprocess.Popen(other, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = waiting.stdout.readline()
    assert "oracle: another process is training this run in" in line and str(tmp_path / "run") in line
    time.sleep(0.5)
    assert waiting.poll() is None  # still waiting
    lock.close()
    out, _ = waiting.communicate(timeout=60)
    assert waiting.returncode == 0 and out.strip() == "got it"
    # a holder that is killed leaves nothing held
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from redraw.checkpoint import hold_lock; "
                               "hold_lock(sys.argv[1], 'x'); print('held', flush=True); time.sleep(600)",
                               str(tmp_path / "run")], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    again = subprocess.run(other, capture_output=True, text=True, timeout=60)
    assert again.stdout.strip() == "got it"


@pytest.mark.slow
def test_tracking_server_down_loses_no_local_results(tmp_path):
    run_dir = make_workdir(tmp_path / "run", steps=40)
    env = dict(os.environ, MLFLOW_TRACKING_URI="http://127.0.0.1:9", MLFLOW_HTTP_REQUEST_MAX_RETRIES="0",
               MLFLOW_HTTP_REQUEST_TIMEOUT="2")
    proc = pretrain(run_dir, env=env)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out
    assert "MLflow tracking unavailable" in out and "local results are still written" in out
    assert json.loads((run_dir / "reports/pretrain.json").read_text())["train/steps"] == 40
    assert (run_dir / "models/pretrain/agent.pt").is_file()


@pytest.mark.slow
def test_nan_loss_stops_training_naming_the_update_and_keeping_the_checkpoint(tmp_path):
    from redraw.data.episodes import list_episodes, load_episode, save_episode

    run_dir = make_workdir(tmp_path / "run", steps=300)
    paths = list_episodes(run_dir / "data/source")
    episode = load_episode(paths[1])
    good = episode["state"].copy()
    episode["state"][3, 1] = np.nan  # non-finite observations are refused before training, by name
    save_episode(paths[1], episode)
    proc = pretrain(run_dir)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 2 and f"{paths[1].relative_to(run_dir)}: observation 'state' holds non-finite" in out
    episode["state"] = good
    save_episode(paths[1], episode)

    for path in paths:
        episode = load_episode(path)
        episode["reward"][:] = np.nan  # every replay chunk now poisons the loss
        save_episode(path, episode)
    proc = pretrain(run_dir)
    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 2
    assert "pretrain: error: non-finite loss/" in out and "at update 1;" in out
    assert "no checkpoint had been written yet" in out
    assert not (run_dir / "models/pretrain/agent.pt").exists()
    assert not (run_dir / "reports/pretrain.json").exists()


def test_oracle_refuses_a_bad_target_behaviour_before_training(tmp_path):
    """collect_target runs after the oracle and collects with it: a bad collect_target.behaviour
    must stop the oracle's stage at once, naming the file and field, not after hours of training."""
    path = tmp_path / "w"
    path.mkdir()
    shutil.copytree(ROOT / "presets", path / "presets")
    shutil.copy(ROOT / "params.yaml", path / "params.yaml")
    shutil.copy(ROOT / "envs.yaml", path / "envs.yaml")
    apply_preset("smoke", path / "params.yaml", root=path)
    params = load_params(path / "params.yaml", round_trip=True)
    params["collect_target"]["behaviour"].update(kind="policy", checkpoint="models/oracle/agent.pt", noise_fraction=1.5)
    with open(path / "params.yaml", "w") as fh:
        _yaml().dump(params, fh)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, "-m", "redraw.stages.pretrain", "--oracle", "--no-progress"], cwd=path,
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0
    assert "params.yaml: collect_target.behaviour: behaviour.noise_fraction must be in [0, 1], got 1.5" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (path / "models").exists() and not (path / "checkpoints").exists()


def test_the_oracle_starts_from_collect_sources_episodes_in_the_target_sim(tmp_path):
    """The oracle is trained as the source policy is: its replay starts from collect_source's
    behaviour and size collected in env.target (data/oracle), and it refuses to start without them."""
    from redraw.data.episodes import dataset_stats
    from redraw.data.schema import read_metadata

    path = tmp_path / "w"
    path.mkdir()
    shutil.copytree(ROOT / "presets", path / "presets")
    shutil.copy(ROOT / "params.yaml", path / "params.yaml")
    shutil.copy(ROOT / "envs.yaml", path / "envs.yaml")
    apply_preset("smoke", path / "params.yaml", root=path)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = subprocess.run([sys.executable, "-m", "redraw.stages.pretrain", "--oracle", "--no-progress"], cwd=path,
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0 and "data/oracle/metadata.json" in proc.stderr and "Traceback" not in proc.stderr
    assert "dvc repro collect_oracle" in proc.stderr
    assert not (path / "models").exists()
    for which in ("source", "oracle"):
        subprocess.run([sys.executable, "-m", "redraw.stages.collect", which, "--no-progress"], cwd=path, check=True,
                       capture_output=True, env=env)
    params = load_params(path / "params.yaml")
    source, oracle = read_metadata(path / "data/source"), read_metadata(path / "data/oracle")
    assert (source.env, oracle.env) == (params["env"]["source"], params["env"]["target"])
    assert oracle.behaviour == source.behaviour and oracle.obs_mode == source.obs_mode
    assert dataset_stats(path / "data/oracle")["episodes"] == params["collect_source"]["episodes"]
    assert json.loads((path / "reports/collect_oracle.json").read_text())["data/episodes"] == params["collect_source"]["episodes"]


@pytest.mark.slow
def test_sigterm_ends_the_mlflow_run_killed_and_keeps_the_checkpoint(tmp_path):
    """A stage stopped with SIGTERM (kill, a cancelled flow run) must not leave its MLflow run
    RUNNING for ever: it ends KILLED, exits 143, and the checkpoint it had written resumes."""
    from mlflow import MlflowClient

    run_dir = make_workdir(tmp_path / "run", steps=300)
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    proc = pretrain(run_dir, env=env)
    deadline = time.time() + 300
    while time.time() < deadline and not list(run_dir.glob("checkpoints/*/checkpoint.pt")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    assert "Traceback" not in out
    client = MlflowClient(tracking_uri=f"sqlite:///{run_dir / 'mlruns/mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("redraw").experiment_id])
    status = {r.data.tags.get("mlflow.runName"): r.info.status for r in runs}
    assert status["pretrain"] == "KILLED", status
    assert "RUNNING" not in status.values(), status
    assert load_checkpoint(next(run_dir.glob("checkpoints/*/checkpoint.pt")))["agent"]["updates"] > 0


def test_pretrain_imag_clip_reaches_the_agent_and_defaults_off():
    from redraw.agent.configs import configs_from_params

    params = load_params(ROOT / "params.yaml")
    assert not configs_from_params(params)[0].imag_clip
    params["pretrain"]["imag_clip"] = True
    agent_cfg, pre = configs_from_params(params)
    assert agent_cfg.imag_clip and pre.imag_clip


@pytest.mark.slow
def test_a_finished_run_given_more_steps_goes_on_and_ends_as_one_run_would(tmp_path):
    """The length and the evaluation cadence are not part of a run's identity: a finished run
    given more steps resumes from its checkpoint, and ends with the weights of a run that was
    given that many steps from the start."""
    def finish(path: Path, steps: int) -> str:
        params = load_params(path / "params.yaml", round_trip=True)
        params["pretrain"]["steps"] = steps
        with open(path / "params.yaml", "w") as fh:
            _yaml().dump(params, fh)
        proc = pretrain(path)
        out, _ = proc.communicate(timeout=600)
        assert proc.returncode == 0, out
        return out

    extended = make_workdir(tmp_path / "extended", steps=100)
    finish(extended, 100)
    out = finish(extended, 200)
    assert "resuming" in out and "at step 100" in out
    direct = make_workdir(tmp_path / "direct", steps=200)
    finish(direct, 200)
    a = load_checkpoint(extended / "models/pretrain/agent.pt")["agent"]["model"]
    b = load_checkpoint(direct / "models/pretrain/agent.pt")["agent"]["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((extended / "reports/pretrain.json").read_text())["train/updates"] == 100
