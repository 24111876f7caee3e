"""Shipped pretrained models (pretrained/): the manifest against its files, every shipped model
loading into this code, a shipped expert reproducing its recorded return, and a build -> install
round trip on the smoke preset with the bad inputs a user can give."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from redraw.config import load_params
from redraw.pretrained import (MANIFEST, MAX_BYTES, SHIPPED, PretrainedError, build, checked_file, find, install,
                               load_manifest, sha256, verify)

ROOT = Path(__file__).resolve().parents[1]


SHIPPED_RECORDS = load_manifest(ROOT)


@pytest.mark.skipif(not SHIPPED_RECORDS, reason="pretrained/manifest.json lists no model yet")
def test_every_shipped_record_matches_its_file_and_loads():
    records = SHIPPED_RECORDS
    lines = verify(ROOT)  # sha256 of every file, and each loads strictly into the current agent code
    assert len(lines) == len(records)
    files = {r["file"] for r in records}
    assert sum((ROOT / SHIPPED / f).stat().st_size for f in files) <= MAX_BYTES
    for r in records:
        e = r["eval"]
        assert e["episodes"] == len(e["returns"]) and e["return_ci95"][0] <= e["return_mean"] <= e["return_ci95"][1]
        assert r["learned"] == (e["return_mean"] >= r["threshold"])


@pytest.mark.skipif(not [r for r in SHIPPED_RECORDS if r["role"] == "expert" and r["learned"]],
                    reason="no learnt expert is shipped yet")
def test_a_shipped_expert_reaches_its_recorded_return(tmp_path):
    """The pipeline's own rollout code, on the first verdict episodes of a learnt expert."""
    from redraw.data.collect import policy_returns
    from redraw.pretrained import VERDICT_STREAM, install_expert

    experts = [r for r in SHIPPED_RECORDS if r["role"] == "expert" and r["learned"]]
    for r in experts[:1]:
        params = r["params"]
        agent = install_expert(find(r["from"], ROOT), tmp_path / "a.pt", ROOT)
        env_kwargs = {k: params["env"][k] for k in ("obs_mode", "action_repeat", "episode_steps", "image_size",
                                                   "antialias")}
        env_kwargs["pairs"] = str(ROOT / "envs.yaml")
        returns, _ = policy_returns(str(agent), r["pair"], env_kwargs, 3, r["seed"], progress=False, envs=3,
                                    stream=VERDICT_STREAM)
        recorded = r["eval"]["returns"]
        # the same episodes, the same policy: on the CPU kind that recorded them, the same returns
        if np.allclose(returns, recorded[:3], rtol=0.05, atol=5.0):
            continue
        # Another CPU's rounding can flip a sampled latent and take an episode elsewhere: then all
        # the verdict episodes, a sample of the same policy's returns, must agree with the recorded
        # sample in mean (a two-sample difference within 3.3 standard errors: 99.9%).
        n = len(recorded)
        returns, _ = policy_returns(str(agent), r["pair"], env_kwargs, n, r["seed"], progress=False, envs=10,
                                    stream=VERDICT_STREAM)
        diff = np.mean(returns) - np.mean(recorded)
        se = np.sqrt(np.var(returns, ddof=1) / n + np.var(recorded, ddof=1) / n)
        assert abs(diff) <= 3.3 * se, (f"{r['name']}: {np.mean(returns):.1f} over its {n} verdict episodes here, "
                                       f"recorded {np.mean(recorded):.1f}", returns, recorded)


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A smoke-size Plan2Explore source model of the pendulum's reversed pair, built and shipped by
    the project's command into a scratch root (its expert: the negated source)."""
    base = tmp_path_factory.mktemp("pretrained")
    root = base / "root"
    (root / SHIPPED).mkdir(parents=True)
    overrides = {"pretrain.exploration": "plan2explore", "collect_source.episodes": 2}
    with pytest.raises(PretrainedError, match="did not learn its task.*not shipped"):
        build("pendulum-swingup-reversed", "source", 0, preset="smoke", workdir=base / "work", root=root,
              episodes=4, overrides=overrides)
    assert load_manifest(root) == []  # nothing shipped, the run recorded
    runs = json.loads((root / "benchmarks/results/pretrained_runs.json").read_text())["runs"]
    assert [(r["pair"], r["learned"], r["steps"]) for r in runs] == [("pendulum-swingup-reversed", False, 100)]
    # the smoke model never learns: shipped anyway, on purpose, to test the shipping itself
    records = build("pendulum-swingup-reversed", "source", 0, preset="smoke", workdir=base / "work", root=root,
                    episodes=4, overrides=overrides, ship_unlearnt=True)
    return root, base / "work", records


def test_build_ships_weights_only_with_a_full_record(shipped):
    root, work, records = shipped
    source, expert = records
    assert (source["role"], expert["role"], expert["kind"]) == ("source", "expert", "negated_source")
    path = checked_file(source, root)
    assert sha256(path) == source["sha256"] == expert["sha256"]
    import torch

    blob = torch.load(path, weights_only=True)
    state = blob["state"]["agent"]
    assert "wm_opt" not in state and "actor_opt" not in state  # no optimizer state
    assert {v.dtype for v in state["model"].values() if v.is_floating_point()} == {
        torch.float16 if source["dtype"] == "float16" else torch.float32}
    for field in ("pair", "role", "seed", "preset", "params", "commit", "steps", "wall_seconds", "machine", "sha256"):
        assert source[field] not in (None, ""), field
    assert source["exploration"] == "plan2explore" and source["preset"] == "smoke"
    # the expert is the source policy with negated actions: in the target it acts exactly as the
    # source does in the source simulator, episode for episode
    assert expert["eval"]["returns"] == source["eval"]["returns"]
    from redraw.agent.agent import AgentPolicy, load_agent
    from redraw.data.collect import run_episode
    from redraw.envs import make_env
    from redraw.pretrained import install_expert

    params = load_params(work / "params.yaml")
    kw = dict(obs_mode="proprio", episode_steps=params["env"]["episode_steps"], pairs=str(work / "envs.yaml"))
    episodes = {}
    for name, env_name, agent_path in (("source", "pendulum-swingup", path),
                                       ("expert", "pendulum-swingup-reversed",
                                        install_expert(source, work / "expert.pt", root))):
        env = make_env(env_name, seed=1, **kw)
        episodes[name] = run_episode(env, AgentPolicy(load_agent(agent_path), sample=True),
                                     np.random.SeedSequence([0, 1]))
    assert np.array_equal(episodes["expert"]["state"], episodes["source"]["state"])
    assert np.array_equal(episodes["expert"]["action"], -episodes["source"]["action"])
    assert np.abs(episodes["source"]["action"]).sum() > 0
    # a second build of the same entry is refused, nothing overwritten
    before = path.read_bytes()
    with pytest.raises(PretrainedError, match="already shipped"):
        build("pendulum-swingup-reversed", "source", 0, preset="smoke", workdir=work, root=root)
    assert path.read_bytes() == before


def _params(work: Path, **pretrained) -> dict:
    params = load_params(work / "params.yaml")
    params["pretrained"] = {"source": "", "rssm": "", "expert": "", **pretrained}
    return params


def test_install_checks_the_file_and_the_sizes(shipped, tmp_path):
    root, work, (source, expert) = shipped
    params = _params(work)
    out = install(source["name"], "source", params, tmp_path / "agent.pt", root=root)
    from redraw.agent.agent import load_agent

    agent = load_agent(tmp_path / "agent.pt")
    assert agent.action_sign == 1.0
    install(expert["name"], "expert", params, tmp_path / "expert.pt", root=root)
    assert load_agent(tmp_path / "expert.pt").action_sign == -1.0
    assert out["name"] == source["name"]
    # sizes that differ from the run's params: refused naming the key
    wider = json.loads(json.dumps(params))
    wider["model"]["deter"] = 2 * params["model"]["deter"]
    with pytest.raises(PretrainedError, match=r"pretrained.source: .*model.deter: shipped"):
        install(source["name"], "source", wider, tmp_path / "x.pt", root=root)
    with pytest.raises(PretrainedError, match="env.obs_mode|obs_mode: shipped"):
        pix = json.loads(json.dumps(params))
        pix["env"]["obs_mode"] = "pixels"
        install(source["name"], "source", pix, tmp_path / "x.pt", root=root)
    with pytest.raises(PretrainedError, match="is not in"):
        install("pendulum-swingup-reversed/source-7", "source", params, tmp_path / "x.pt", root=root)
    with pytest.raises(PretrainedError, match="is a source model, not a expert|not a expert"):
        install(source["name"], "expert", params, tmp_path / "x.pt", root=root)
    assert not (tmp_path / "x.pt").exists()
    # an altered file and a missing one: refused naming the manifest's field
    copy = tmp_path / "root"
    shutil.copytree(root, copy)
    shipped_file = copy / SHIPPED / source["file"]
    data = bytearray(shipped_file.read_bytes())
    data[len(data) // 2] ^= 0xFF
    shipped_file.write_bytes(bytes(data))
    with pytest.raises(PretrainedError, match="sha256"):
        install(source["name"], "source", params, tmp_path / "x.pt", root=copy)
    shipped_file.unlink()
    with pytest.raises(PretrainedError, match="is missing"):
        install(source["name"], "source", params, tmp_path / "x.pt", root=copy)
    assert not (tmp_path / "x.pt").exists()


def test_the_pretrain_stage_installs_a_shipped_model(shipped, tmp_path, monkeypatch):
    from redraw.stages import pretrain

    root, work, (source, expert) = shipped
    monkeypatch.chdir(root)
    shutil.copy(work / "envs.yaml", root / "envs.yaml")
    params = _params(work, source=source["name"], expert=expert["name"])
    params["env"]["pairs"] = "envs.yaml"
    before = {p: p.read_bytes() for p in (root / SHIPPED).rglob("*") if p.is_file()}
    metrics = pretrain.run(params, "params.yaml", progress=False)
    assert metrics["eval/return"] == source["eval"]["return_mean"] and metrics["train/shipped"] == 1
    assert (root / "models/pretrain/agent.pt").is_file() and (root / "reports/pretrain_curve.json").is_file()
    pretrain.run(params, "params.yaml", env_key="env.target", out_dir=Path("models/oracle"),
                 metrics_path="reports/oracle.json", curve_path="reports/oracle_curve.json", progress=False)
    from redraw.agent.agent import load_agent

    assert load_agent(root / "models/oracle/agent.pt").action_sign == -1.0
    # nothing shipped was written by the pipeline
    assert {p: p.read_bytes() for p in (root / SHIPPED).rglob("*") if p.is_file()} == before


def test_the_docs_tables_are_the_manifest_and_every_build():
    from redraw.pretrained import DOC_TABLES, load_runs

    text = (ROOT / "docs/pretrained.md").read_text()
    for begin, end, table in DOC_TABLES:
        assert begin in text and end in text
        shown = text.split(begin, 1)[1].split(end, 1)[0].strip()
        assert shown == table(ROOT), f"docs/pretrained.md's table is stale: {begin[5:-4]}"
    # every build is a row, the ones that did not learn too
    assert len(shown.splitlines()) == 2 + len(load_runs(ROOT))
