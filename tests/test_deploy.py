"""The deployable policy and the registry, on the smoke pipeline's outputs: register, gated
promotion, rollback, the robot stand-in in a fresh process, the exported program, serving, bad input."""

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from conftest import sh

pytestmark = pytest.mark.slow
NAME = "pendulum-swingup-to-pendulum-swingup-reversed"


@pytest.fixture(scope="module")
def repo(smoke_repo):
    return smoke_repo.path


def registry(repo):
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}")
    return MlflowClient()


def cli(repo, *args, check=False):
    return sh([sys.executable, "-m", "redraw.cli", *args], repo, check=check)


def test_register_stage_made_a_tagged_challenger(repo):
    result = json.loads((repo / "reports/register.json").read_text())
    assert result["name"] == NAME and result["registry_uri"] == f"models:/{NAME}@challenger"
    mv = registry(repo).get_model_version_by_alias(NAME, "challenger")
    evaluated = json.loads((repo / "reports/evaluate/redraw.json").read_text())
    assert mv.tags["method"] == "redraw"
    assert float(mv.tags["target_return"]) == pytest.approx(evaluated["return_mean"], abs=1e-4)
    from redraw.data.episodes import dataset_fingerprint

    assert mv.tags["data_hash"] == dataset_fingerprint(repo / "data/target")  # the data it was trained on


def _new_challenger(repo, target_return):
    """Register the same model again under another target return (a stand-in for a new run)."""
    from redraw.deploy import register

    client = registry(repo)
    base = client.get_model_version_by_alias(NAME, "challenger")
    import os

    old = os.getcwd()
    os.chdir(repo)
    try:
        return register(base.source, NAME, {**base.tags, "target_return": str(target_return)})
    finally:
        os.chdir(old)


def test_promotion_is_gated_recorded_and_can_be_rolled_back(repo):
    client = registry(repo)
    first = cli(repo, "promote")
    assert first.returncode == 0, first.stderr
    def champion_now():
        return str(client.get_model_version_by_alias(NAME, "champion").version)

    champion = champion_now()
    base = float(client.get_model_version(NAME, champion).tags["target_return"])

    worse = _new_challenger(repo, base - 5.0)
    refused = cli(repo, "promote")
    assert refused.returncode == 1 and "refused" in refused.stderr and f"v{worse}" in refused.stderr
    assert champion_now() == champion

    equal_with_margin = _new_challenger(repo, base + 0.5)
    assert cli(repo, "promote", "--margin", "1.0").returncode == 1  # must beat it by more than the margin
    assert champion_now() == champion

    better = _new_challenger(repo, base + 10.0)
    promoted = cli(repo, "promote")
    assert promoted.returncode == 0 and f"v{better}" in promoted.stdout
    assert champion_now() == better
    assert "promoted" in client.get_model_version(NAME, better).tags["promotion"]
    assert equal_with_margin != better

    back = cli(repo, "rollback")
    assert back.returncode == 0, back.stderr
    assert champion_now() == champion
    # leave the registry as the pipeline made it: the evaluated model is champion again
    assert cli(repo, "rollback").returncode == 2  # nothing earlier to roll back to


def test_deploy_by_alias_in_a_fresh_process_reproduces_the_evaluation(repo):
    client = registry(repo)
    client.set_registered_model_alias(NAME, "champion", json.loads((repo / "reports/register.json").read_text())["version"])
    evaluated = json.loads((repo / "reports/evaluate/redraw.json").read_text())
    proc = cli(repo, "deploy", "--model", f"models:/{NAME}@champion", "--episodes", str(evaluated["episodes"]),
               "--json", "--no-progress", check=True)
    deployed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert deployed["env"] == "pendulum-swingup-reversed"
    assert deployed["returns"] == evaluated["returns"]
    assert deployed["action_sums"] == pytest.approx(evaluated["action_sums"], rel=1e-6)


def test_a_model_for_another_observation_space_is_refused_naming_the_field(repo):
    proc = cli(repo, "deploy", "--model", f"models:/{NAME}@challenger", "--env", "cup-catch-windy", "--episodes", "1",
               "--no-progress")
    assert proc.returncode == 2
    assert "observation 'state': the env gives shape (8,), the model expects (3,)" in proc.stderr


def test_exported_program_acts_like_the_pyfunc(repo):
    import mlflow
    import torch

    registry(repo)
    uri = f"models:/{NAME}@challenger"
    torch.set_num_threads(2)
    model = mlflow.pyfunc.load_model(uri)
    assert torch.get_num_threads() == 1  # the policy's process acts at batch 1 with one thread
    local = mlflow.artifacts.download_artifacts(uri)
    program = torch.export.load(str(next(Path(local).rglob("policy.pt2")))).module()
    inputs = {spec.name: spec for spec in model.metadata.get_input_schema().inputs}
    rng = np.random.default_rng(0)
    obs_keys = [k for k in inputs if k not in ("latent", "prev_action", "is_first", "uniform", "noise")]
    latent = np.zeros((1, inputs["latent"].shape[1]), np.float32)
    prev = np.zeros((1, inputs["prev_action"].shape[1]), np.float32)
    for t in range(5):
        feed = {k: rng.normal(size=(1, *inputs[k].shape[1:])).astype(np.float32) for k in obs_keys}
        feed.update(latent=latent, prev_action=prev, is_first=np.array([float(t == 0)], np.float32),
                    uniform=rng.uniform(size=(1, inputs["uniform"].shape[1])).astype(np.float32),
                    noise=rng.normal(size=(1, inputs["noise"].shape[1])).astype(np.float32))
        out = model.predict(feed)
        with torch.no_grad():
            action, next_latent = program(*(torch.as_tensor(feed[k]) for k in [*obs_keys, "latent", "prev_action",
                                                                          "is_first", "uniform", "noise"]))
        np.testing.assert_allclose(action.numpy(), out["action"], atol=1e-5)
        np.testing.assert_allclose(next_latent.numpy(), out["latent"], atol=1e-5)
        latent, prev = out["latent"], out["action"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_models_serve_answers_an_observation_with_an_action(repo):
    import os

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{repo / 'mlruns' / 'mlflow.db'}"
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"  # mlflow execs `uvicorn` from the venv
    server = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@challenger",
                               "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)], cwd=repo, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except OSError:
                assert server.poll() is None, "mlflow models serve exited"
                assert time.time() < deadline, "server did not come up"
                time.sleep(1)
        example = json.loads(next((repo / "mlruns").rglob("serving_input_example.json")).read_text())
        req = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=json.dumps(example).encode(),
                                     headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(req, timeout=30).read())
        action = np.asarray(answer["predictions"]["action"])
        assert action.shape == (1, 1) and np.all(np.abs(action) <= 1)
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_registry_down_fails_register_clearly_and_keeps_local_results(repo):
    before = {p: p.read_bytes() for p in (repo / "reports/evaluate").glob("*.json")}
    proc = sh([sys.executable, "-m", "redraw.stages.register"], repo, check=False,
              env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
                   "MLFLOW_HTTP_REQUEST_TIMEOUT": "3"})
    assert proc.returncode == 2
    assert "MLflow at http://127.0.0.1:9 failed" in proc.stderr
    assert {p: p.read_bytes() for p in (repo / "reports/evaluate").glob("*.json")} == before
