"""A pair defined only in the env-pair file goes through the smoke `dvc repro` to a registered
policy that `redraw deploy` runs: a heavier cart-pole whose actuator acts two steps late."""

import json
import sys

import pytest

from conftest import make_repo, sh

pytestmark = pytest.mark.slow
PAIR = """
  # a user's own pair, added to the file and nowhere else
  cartpole-swingup: {dm_control: cartpole/swingup}
targets:
  cartpole-swingup-heavy-lagged:
    source: cartpole-swingup
    perturbations:
      - {kind: body_mass, body: cart, scale: 2.0}
      - {kind: action_delay, steps: 2}
"""
NAME = "cartpole-swingup-to-cartpole-swingup-heavy-lagged"


def test_a_pair_from_the_env_file_reaches_a_registered_deployable_policy(tmp_path):
    from redraw.config import set_params

    repo = make_repo(tmp_path / "repo")
    envs = (repo / "envs.yaml").read_text()
    assert "\ntargets:\n" in envs
    (repo / "envs.yaml").write_text(envs.replace("\ntargets:\n", PAIR, 1))
    py = [sys.executable, "-m", "redraw.cli"]
    listing = sh([*py, "envs", "--check"], repo).stdout
    assert "-> cartpole-swingup-heavy-lagged" in listing and "actions act 2 agent step(s) late" in listing
    sh([*py, "preset", "smoke"], repo)
    set_params({"env.source": "cartpole-swingup", "env.target": "cartpole-swingup-heavy-lagged"}, repo / "params.yaml")
    sh([*py, "repro", "--jobs", "2"], repo, timeout=3000)  # what `make repro` runs

    registered = json.loads((repo / "reports/register.json").read_text())
    assert registered["name"] == NAME and registered["registry_uri"] == f"models:/{NAME}@challenger"
    meta = json.loads((repo / "data/target/metadata.json").read_text())
    assert meta["env"] == "cartpole-swingup-heavy-lagged"

    # the model carries the pair's definition: it deploys after the pair has left the file
    (repo / "envs.yaml").write_text(envs)
    evaluated = json.loads((repo / "reports/evaluate/redraw.json").read_text())
    proc = sh([*py, "deploy", "--model", registered["registry_uri"], "--episodes", str(evaluated["episodes"]),
               "--json", "--no-progress"], repo)
    deployed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert deployed["env"] == "cartpole-swingup-heavy-lagged"
    assert deployed["returns"] == evaluated["returns"]

    # editing the pair's perturbations reruns what depends on the env, from collection on
    (repo / "envs.yaml").write_text(envs.replace("\ntargets:\n", PAIR.replace("steps: 2", "steps: 3"), 1))
    status = sh([sys.executable, "-m", "dvc", "status"], repo).stdout
    assert "collect_target:" in status and "modified:           envs.yaml" in status
