"""Simulator collection: schema-conformant, deterministic, and never half-written."""

import numpy as np
import pytest

from redraw.data.behaviours import BehaviourConfig, CorrelatedNoise, Mixture, describe, make_behaviour
from redraw.data.collect import CollectConfig, collect
from redraw.data.episodes import dataset_stats, list_episodes, load_episode
from redraw.data.schema import read_metadata


def cfg(tmp_path, name="data", **kw):
    base = dict(env="pendulum-swingup-reversed", out_dir=str(tmp_path / name), obs_mode="proprio",
                episodes=3, episode_steps=20, workers=1, seed=7)
    base.update(kw)
    return CollectConfig(**base)


@pytest.mark.parametrize("obs_mode", ["proprio", "pixels"])
def test_collected_episodes_follow_the_schema(tmp_path, obs_mode):
    meta = collect(cfg(tmp_path, obs_mode=obs_mode, behaviour=BehaviourConfig(kind="correlated")), progress=False)
    assert read_metadata(tmp_path / "data") == meta
    assert meta.behaviour.startswith("correlated") and meta.control_hz == 25.0 and meta.action_size == 1
    files = list_episodes(tmp_path / "data")
    assert [f.name for f in files] == ["episode-000000.npz", "episode-000001.npz", "episode-000002.npz"]
    spec = meta.step_spec()
    for f in files:
        ep = load_episode(f)
        assert set(ep) == set(spec)
        for key, (shape, dtype) in spec.items():
            assert ep[key].shape == (21, *shape), key
            assert ep[key].dtype == np.dtype(dtype), key
        assert ep["is_first"][0] and not ep["is_first"][1:].any()
        assert ep["is_last"][-1] and not ep["is_last"][:-1].any()
        assert not ep["action"][0].any() and ep["reward"][0] == 0
        assert np.all(np.abs(ep["action"]) <= 1)
    assert dataset_stats(tmp_path / "data")["transitions"] == 60


def test_same_seed_same_data_whatever_the_worker_count(tmp_path):
    collect(cfg(tmp_path, "one", workers=1, episodes=4), progress=False)
    collect(cfg(tmp_path, "two", workers=2, episodes=4), progress=False)
    collect(cfg(tmp_path, "other", workers=1, episodes=4, seed=8), progress=False)
    for a, b, c in zip(*(list_episodes(tmp_path / d) for d in ("one", "two", "other"))):
        ea, eb, ec = load_episode(a), load_episode(b), load_episode(c)
        for key in ea:
            np.testing.assert_array_equal(ea[key], eb[key], err_msg=key)
        assert not np.array_equal(ea["state"], ec["state"])


def test_transitions_round_up_to_whole_episodes(tmp_path):
    c = cfg(tmp_path, episodes=0, transitions=45)
    assert c.n_episodes() == 3
    collect(c, progress=False)
    assert dataset_stats(c.out_dir)["transitions"] == 60


def test_failed_collection_leaves_nothing_behind(tmp_path):
    with pytest.raises(FileNotFoundError, match="x.pt: no checkpoint"):
        collect(cfg(tmp_path, behaviour=BehaviourConfig(kind="policy", checkpoint=str(tmp_path / "x.pt"))),
                progress=False)
    assert not (tmp_path / "data").exists()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="needs behaviour.checkpoint"):
        collect(cfg(tmp_path, behaviour=BehaviourConfig(kind="policy")), progress=False)


def test_existing_data_is_never_overwritten(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        collect(cfg(tmp_path), progress=False)
    assert (out / "keep.txt").read_text() == "mine"


def test_correlated_noise_is_correlated_and_bounded():
    low, high = -np.ones(2), np.ones(2)
    noise = CorrelatedNoise(low, high, rho=0.95, scale=0.5)
    noise.reset(np.random.default_rng(0))
    xs = np.array([noise.act({}) for _ in range(4000)])
    assert np.all(xs >= -1) and np.all(xs <= 1)
    lag1 = np.corrcoef(xs[:-1, 0], xs[1:, 0])[0, 1]
    assert lag1 > 0.85
    with pytest.raises(ValueError, match="rho"):
        CorrelatedNoise(low, high, rho=1.0, scale=1.0)


class Constant:
    """A stand-in policy: always the same action."""

    def reset(self, rng):
        pass

    def act(self, obs):
        return np.array([0.25], np.float32)


def test_noise_fraction_replaces_whole_episodes_of_the_policy_with_noise():
    low, high = -np.ones(1), np.ones(1)
    mix = Mixture(Constant(), CorrelatedNoise(low, high, rho=0.9, scale=1.0), 0.3)
    chosen = []
    for seed in range(400):
        mix.reset(np.random.default_rng(seed))
        actions = [float(mix.act({})[0]) for _ in range(5)]
        is_policy = actions == [0.25] * 5
        assert is_policy or 0.25 not in actions  # one behaviour for the whole episode
        chosen.append(is_policy)
        mix.reset(np.random.default_rng(seed))  # the episode's seed decides, nothing else
        assert (float(mix.act({})[0]) == 0.25) == is_policy
    assert 0.24 < 1 - np.mean(chosen) < 0.36  # 400 episodes: 0.3 +- 3 std
    for fraction, policy_share in ((0.0, 1.0), (1.0, 0.0)):
        only = Mixture(Constant(), CorrelatedNoise(low, high, rho=0.9, scale=1.0), fraction)
        picks = []
        for seed in range(20):
            only.reset(np.random.default_rng(seed))
            picks.append(float(only.act({})[0]) == 0.25)
        assert np.mean(picks) == policy_share


def test_noise_fraction_is_checked_and_described():
    low, high = -np.ones(1), np.ones(1)
    with pytest.raises(ValueError, match="noise_fraction must be in"):
        make_behaviour(BehaviourConfig(kind="policy", checkpoint="x.pt", noise_fraction=1.5), low, high)
    with pytest.raises(ValueError, match="kind is 'correlated'"):
        make_behaviour(BehaviourConfig(kind="correlated", noise_fraction=0.5), low, high)
    assert describe(BehaviourConfig(kind="policy", checkpoint="m/agent.pt", noise_fraction=0.5)) == \
        "policy:m/agent.pt + 50% correlated(rho=0.9, scale=1.0)"


@pytest.mark.slow
def test_a_trained_agent_collects_as_behaviour(tmp_path, monkeypatch):
    """The oracle as the expert behind the target data: a checkpoint from the training stage."""
    import subprocess
    import sys

    from test_pretrain import make_workdir

    work = make_workdir(tmp_path / "work", steps=40)
    subprocess.run([sys.executable, "-m", "redraw.stages.pretrain", "--oracle", "--no-progress"], cwd=work, check=True,
                   capture_output=True)
    ckpt = str(work / "models/oracle/agent.pt")
    meta = collect(cfg(tmp_path, episodes=2, workers=2, behaviour=BehaviourConfig(kind="policy", checkpoint=ckpt)),
                   progress=False)
    assert meta.behaviour == f"policy:{ckpt}"
    assert dataset_stats(tmp_path / "data")["transitions"] == 40
    mixed = collect(cfg(tmp_path, "mixed", episodes=2, behaviour=BehaviourConfig(kind="policy", checkpoint=ckpt,
                                                                                 noise_fraction=1.0)), progress=False)
    assert mixed.behaviour == f"policy:{ckpt} + 100% correlated(rho=0.9, scale=1.0)"
    noise = [load_episode(f)["action"] for f in list_episodes(tmp_path / "mixed")]
    policy = [load_episode(f)["action"] for f in list_episodes(tmp_path / "data")]
    assert all(not np.array_equal(a, b) for a, b in zip(noise, policy))  # the agent did not act
    with pytest.raises(ValueError, match="obs_spec"):  # a proprio agent cannot act on pixels
        collect(cfg(tmp_path, "pix", obs_mode="pixels", behaviour=BehaviourConfig(kind="policy", checkpoint=ckpt)),
                progress=False)


@pytest.mark.parametrize("name", ["expert", "source_policy", "expert_noisy", "correlated"])
def test_each_target_regime_is_set_by_name_and_passes_the_stage_check(tmp_path, name):
    """`redraw regime NAME` writes the regime's behaviour into params.yaml; the collect_target
    stage accepts it, and its policy (if any) is a dependency of collect_target in dvc.yaml."""
    import shutil
    from pathlib import Path

    from redraw.cli import main as cli
    from redraw.config import load_params
    from redraw.data.behaviours import TARGET_REGIMES
    from redraw.stages.collect import check_behaviour, config_from_params, stage_deps

    repo = Path(__file__).resolve().parents[1]
    shutil.copy(repo / "params.yaml", tmp_path / "params.yaml")
    assert cli(["regime", name, "--params", str(tmp_path / "params.yaml")]) == 0
    params = load_params(tmp_path / "params.yaml")
    behaviour = config_from_params("target", params).behaviour
    for key, value in TARGET_REGIMES[name][1].items():
        assert getattr(behaviour, key) == value, key
    check_behaviour("target", params, str(tmp_path / "params.yaml"), dvc_path=str(repo / "dvc.yaml"))
    if behaviour.kind == "policy":
        assert str(Path(behaviour.checkpoint).parent) in stage_deps("collect_target", str(repo / "dvc.yaml"))


def test_every_regime_sets_the_same_keys_so_switching_is_exact():
    from redraw.data.behaviours import TARGET_REGIMES

    keys = {frozenset(b) for _, b in TARGET_REGIMES.values()}
    assert len(keys) == 1 and next(iter(keys)) <= set(BehaviourConfig.__dataclass_fields__)


def test_a_target_policy_outside_collect_targets_deps_is_refused(tmp_path, capsys):
    from pathlib import Path

    from redraw.cli import main as cli
    from redraw.config import ConfigError, load_params
    from redraw.stages.collect import check_behaviour

    repo = Path(__file__).resolve().parents[1]
    params = load_params(repo / "params.yaml")
    params["collect_target"]["behaviour"].update(kind="policy", checkpoint="elsewhere/agent.pt")
    with pytest.raises(ConfigError, match=r"p.yaml: collect_target.behaviour.checkpoint: elsewhere/agent.pt is not "
                                          r"under a dependency of stage collect_target"):
        check_behaviour("target", params, "p.yaml", dvc_path=str(repo / "dvc.yaml"))
    assert cli(["regime", "nonsense", "--params", str(tmp_path / "p.yaml")]) == 2
    assert "unknown regime 'nonsense'" in capsys.readouterr().err


def test_a_pool_worker_that_cannot_start_raises_in_the_parent_instead_of_hanging(tmp_path):
    """multiprocessing.Pool restarts a worker whose initializer raises, for ever: the worker keeps
    the error and the first episode it is given raises it, so the collection fails naming it."""
    from redraw.data import collect as collect_module
    from redraw.data.behaviours import BehaviourConfig
    from redraw.data.collect import CollectConfig

    cfg = CollectConfig(env="no-such-env", out_dir=str(tmp_path / "out"), obs_mode="proprio", episodes=1,
                        episode_steps=5, workers=2, seed=0, behaviour=BehaviourConfig(kind="random"))
    collect_module._init_worker(cfg, str(tmp_path), pooled=True)
    try:
        with pytest.raises(Exception, match="no-such-env"):
            collect_module._collect_one(0)
    finally:
        collect_module._WORKER.clear()


def test_the_presets_a_regime_names_are_the_presets_that_collect_it():
    """`redraw regime` says which presets use each regime: a preset named there collects that
    regime's target data, and a preset that collects one is named there."""
    import re
    from pathlib import Path

    import yaml

    from redraw.data.behaviours import TARGET_REGIMES

    named = {}
    for name, (what, _) in TARGET_REGIMES.items():
        found = re.search(r"the ([\w ,]+?) presets?\)", what)
        named[name] = set(re.split(r", | and ", found.group(1))) if found else set()
    presets = Path(__file__).resolve().parents[1] / "presets"
    collects = {name: set() for name in TARGET_REGIMES}
    for path in sorted(presets.glob("*.yaml")):
        behaviour = (yaml.safe_load(path.read_text()).get("collect_target") or {}).get("behaviour")
        if not behaviour:
            continue
        for name, (_, keys) in TARGET_REGIMES.items():
            if all(keys[k] == v for k, v in behaviour.items() if k in keys):
                collects[name].add(path.stem)
    assert named == collects
    assert collects["expert"] >= {"cpu", "paper"} and not collects["expert_noisy"]
