"""redraw_pessimistic: the residual ensemble's disagreement and what it does to imagination; the
paper's redraw unchanged by it."""

import copy
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from redraw.agent.adapt import CalibrateConfig, Calibrator
from redraw.models.residual import ResidualConfig
from test_agent import agent
from test_models import SPEC, batch_for

REFERENCE = Path(__file__).parent / "data" / "redraw_eager_reference.json"


def redraw_numbers() -> dict:
    """Every number of a short eager redraw run on the tiny agent: calibration (3 updates) and the
    policy stage (re-initialised actor-critic, 3 updates), and a checksum of the trained weights."""
    a = agent()
    cal = Calibrator(a, "redraw", CalibrateConfig(), ResidualConfig(hidden=16))
    torch.manual_seed(1)
    batches = [batch_for(SPEC, B=2, T=6) for _ in range(6)]
    out = {f"calibrate/{i}/{k}": v for i, b in enumerate(batches[:3]) for k, v in cal.step(b).items()}
    a.requires_grad_(False)
    a.reset_actor_critic()
    a.ac.requires_grad_(True)
    a.ac.slow_critic.requires_grad_(False)
    a.seed(3)
    for i, b in enumerate(batches[3:]):
        out.update({f"policy/{i}/{k}": v for k, v in a.policy_step(b).items()})
    out["weights/residual"] = float(sum(p.detach().double().sum() for p in a.wm.residual.parameters()))
    out["weights/actor"] = float(sum(p.detach().double().sum() for p in a.ac.actor.parameters()))
    return out


def test_redraw_is_unchanged_by_the_pessimism_option():
    """The numbers of redraw's eager path equal those measured before redraw_pessimistic existed
    (the commit in the reference file)."""
    ref = json.loads(REFERENCE.read_text())
    now = redraw_numbers()
    assert set(now) == set(ref["numbers"])
    for k, v in ref["numbers"].items():
        # the policy stage's actor numbers come from near-equal returns (~1e-7 at these sizes), whose
        # float rounding differs between CPUs' kernels (AVX2 vs AVX512: 2% of a 1e-7 return, 6e-5
        # of the actor loss); calibration and the weights agree to 1e-7 across machines
        tol = dict(rel=1e-3, abs=1e-6) if k.startswith("policy/") else dict(rel=1e-6, abs=1e-9)
        assert now[k] == pytest.approx(v, **tol), k


def stub_residual(members: torch.Tensor):
    """A residual whose members' corrections are ``members`` [M, H, N, S, K] whatever the input."""
    class Stub:
        def members(self, feat, action):
            return members
    return Stub()


def test_identical_members_give_exactly_zero_disagreement():
    from redraw.agent.pessimism import disagreement
    from redraw.models.residual import LatentResidual

    res = LatentResidual(8, 4, 1, ResidualConfig(hidden=16, members=5))
    for net in res.nets[1:]:
        net.load_state_dict(res.nets[0].state_dict())
    z, a = torch.rand(7, 3, 32), torch.rand(7, 3, 1) * 2 - 1
    assert torch.equal(disagreement(res, z, a), torch.zeros(7, 3))
    fresh = LatentResidual(8, 4, 1, ResidualConfig(hidden=16, members=5))  # differently initialised
    assert (disagreement(fresh, z, a) > 0).all()
    # a shift of a variable's logits common to its classes changes no distribution: no disagreement
    shifted = torch.randn(1, 7, 3, 8, 4).repeat(3, 1, 1, 1, 1) + torch.randn(3, 7, 3, 8, 1)
    assert torch.allclose(disagreement(stub_residual(shifted), z, a), torch.zeros(7, 3), atol=1e-6)


@pytest.mark.parametrize("mode", ["penalty", "truncate"])
def test_pessimism_acts_exactly_where_members_disagree_and_nowhere_else(mode):
    from redraw.agent.pessimism import PessimismConfig, disagreement, pessimistic

    H, N = 5, 6
    g = torch.Generator().manual_seed(0)
    members = torch.randn(1, H, N, 8, 4, generator=g).repeat(4, 1, 1, 1, 1)
    where = torch.rand(H, N, generator=g) < 0.4
    members[:, where] += torch.randn(4, int(where.sum()), 8, 4, generator=g)  # the members differ only there
    res = stub_residual(members)
    traj = {"feat": torch.rand(H + 1, N, 32, generator=g), "action": torch.rand(H, N, 1, generator=g),
            "reward": torch.rand(H, N, generator=g), "cont": torch.full((H, N), 0.99)}
    cfg = PessimismConfig(members=4, mode=mode, penalty=0.5, threshold=1e-3)
    new, metrics = pessimistic(traj, SimpleNamespace(residual=res), cfg)
    dis = disagreement(res, traj["feat"][:-1], traj["action"])
    assert torch.equal(dis == 0, ~where)
    assert torch.equal(new["feat"], traj["feat"]) and torch.equal(new["action"], traj["action"])
    if mode == "penalty":
        assert torch.equal(new["reward"][~where], traj["reward"][~where])
        assert (new["reward"][where] < traj["reward"][where]).all()
        torch.testing.assert_close(new["reward"], traj["reward"] - 0.5 * dis)
        assert torch.equal(new["cont"], traj["cont"])
    else:
        assert torch.equal(new["cont"][~where], traj["cont"][~where])
        assert (new["cont"][where] == 0).all()
        assert torch.equal(new["reward"], traj["reward"])
        assert metrics["pessimism/truncated"] == pytest.approx(where.float().mean().item())


@pytest.mark.parametrize("measure", ["transition", "rollouts"])
def test_a_policy_step_with_identical_members_is_the_step_without_pessimism(measure):
    """In the agent's policy stage the penalty changes nothing where the ensemble agrees."""
    from redraw.agent.pessimism import PessimismConfig

    runs = []
    for pessimism in (None, PessimismConfig(members=3, penalty=10.0, measure=measure)):
        a = agent()
        a.attach_residual(ResidualConfig(hidden=16, members=3))
        for net in a.wm.residual.nets[1:]:
            net.load_state_dict(a.wm.residual.nets[0].state_dict())
        a.pessimism = pessimism
        a.seed(2)
        metrics = a.policy_step(batch_for(SPEC, B=2, T=6))
        runs.append((metrics, copy.deepcopy(a.ac.state_dict())))
    (m0, w0), (m1, w1) = runs
    assert m1["pessimism/disagreement"] == 0
    assert all(m0[k] == m1[k] for k in m0)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    # and a disagreeing ensemble lowers the imagined reward the actor-critic sees
    a = agent()
    a.attach_residual(ResidualConfig(hidden=16, members=3))
    a.pessimism = PessimismConfig(members=3, penalty=10.0, measure=measure)
    a.seed(2)
    m2 = a.policy_step(batch_for(SPEC, B=2, T=6))
    assert m2["pessimism/disagreement"] > 0 and m2["ac/imag_reward"] < m0["ac/imag_reward"]


@pytest.mark.parametrize("values, key", [
    ({"members": 0}, "pessimism.members"),
    ({"penalty": -0.1}, "pessimism.penalty"),
    ({"members": 1, "penalty": 1.0}, "pessimism.penalty needs an ensemble"),
    ({"members": 1, "mode": "truncate"}, "pessimism.mode needs an ensemble"),
    ({"mode": "optimism"}, "pessimism.mode"),
    ({"mode": "truncate", "threshold": 0.0}, "pessimism.threshold"),
    ({"lambda": 1.0}, "unknown key 'pessimism.lambda'"),
    ({"bootstrap": "yes"}, "pessimism.bootstrap must be true or false"),
    ({"measure": "variance"}, "pessimism.measure must be one of transition, rollouts"),
    ({"members": 1, "penalty": 0.0, "bootstrap": True}, "pessimism.bootstrap needs an ensemble"),
])
def test_bad_pessimism_settings_are_refused_naming_file_and_key(values, key):
    from redraw.agent.pessimism import pessimism_config
    from redraw.config import ConfigError

    params = {"pessimism": {"members": 5, "mode": "penalty", "penalty": 1.0, "threshold": 1.0, **values}}
    with pytest.raises(ConfigError, match=f"^p.yaml: {key}"):
        pessimism_config(params, "p.yaml")


def test_no_penalty_needs_no_ensemble_and_the_repository_params_are_valid():
    from redraw.agent.pessimism import pessimism_config
    from redraw.config import load_params

    assert pessimism_config({"pessimism": {"members": 1, "penalty": 0.0}}).members == 1
    cfg = pessimism_config(load_params(Path(__file__).resolve().parents[1] / "params.yaml"))
    assert cfg.members >= 5


def test_a_bootstrapped_member_learns_only_from_the_episodes_its_resample_holds():
    """pessimism.bootstrap: member m weighs each chunk by its Poisson(1) count of the chunk's
    episode, so a member whose resample lacks every episode of a batch takes no step on it; the
    counts are fixed by the seed; without bootstrap every member learns from every chunk."""
    res = ResidualConfig(hidden=16, members=3, bootstrap=True)
    counts = Calibrator(agent(), "redraw_pessimistic", CalibrateConfig(), res, episodes=40, seed=5).boot
    assert counts.shape == (3, 40) and torch.equal(
        counts, Calibrator(agent(), "redraw_pessimistic", CalibrateConfig(), res, episodes=40, seed=5).boot)
    assert not torch.equal(counts, Calibrator(agent(), "redraw_pessimistic", CalibrateConfig(), res,
                                              episodes=40, seed=6).boot)
    assert (counts == 0).any() and (counts > 1).any()  # a resample, not a reweighting of every episode

    a = agent()
    cal = Calibrator(a, "redraw_pessimistic", CalibrateConfig(), res, episodes=4, seed=0)
    cal.boot = torch.tensor([[0.0, 0.0, 1.0, 1.0], [1.0, 2.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    before = [copy.deepcopy(net.state_dict()) for net in a.wm.residual.nets]
    batch = {**batch_for(SPEC, B=2, T=6), "episode": torch.tensor([0, 1])}  # episodes member 0 lacks
    assert cal.needs_episode
    cal.step(batch)
    moved = [any(not torch.equal(v, net.state_dict()[k]) for k, v in old.items())
             for old, net in zip(before, a.wm.residual.nets)]
    assert moved == [False, True, True]

    plain = Calibrator(agent(), "redraw_pessimistic", CalibrateConfig(), ResidualConfig(hidden=16, members=3))
    assert plain.boot is None and not plain.needs_episode


def test_members_rolling_out_on_their_own_disagree_only_once_they_differ():
    """measure ``rollouts``: each member's own rollout with the imagined actions and the same random
    numbers; identical members stay together (exactly 0), a member that differs drifts away, and
    the penalty takes penalty x that divergence off each step's reward."""
    from redraw.agent.pessimism import PessimismConfig, member_rollouts, pairwise_kl, pessimistic

    a = agent()
    a.attach_residual(ResidualConfig(hidden=16, members=3))
    wm, nets = a.wm, a.wm.residual.nets
    for net in nets[1:]:
        net.load_state_dict(nets[0].state_dict())
    g = torch.Generator().manual_seed(0)
    H, N = 4, 5
    start = wm.initial((N,))
    actions = torch.rand(H, N, wm.action_size, generator=g) * 2 - 1
    uniforms = torch.rand(H, N, wm.cfg.latent_vars, generator=g)
    with torch.no_grad():
        logps = member_rollouts(wm, start, actions, uniforms)
        assert logps.shape == (3, H, N, wm.cfg.latent_vars, wm.cfg.latent_classes)
        assert torch.equal(pairwise_kl(logps), torch.zeros(H, N))
        # the first step of member 0 is the corrected prior's step with member 0's correction
        torch.testing.assert_close(logps[0, 0], wm.dynamics_step(actions[0], start)[1])
        nets[1][-1].bias.add_(torch.randn(nets[1][-1].bias.shape, generator=g))
        dis = pairwise_kl(member_rollouts(wm, start, actions, uniforms))
    assert (dis > 0).all()
    traj = {"feat": torch.rand(H + 1, N, 3), "action": actions, "reward": torch.rand(H, N, generator=g),
            "cont": torch.ones(H, N)}
    cfg = PessimismConfig(members=3, penalty=0.1, measure="rollouts")
    new, metrics = pessimistic(traj, wm, cfg, start=start, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expect = pairwise_kl(member_rollouts(wm, start, actions, torch.rand(H, N, wm.cfg.latent_vars,
                                                                            generator=torch.Generator().manual_seed(3))))
    torch.testing.assert_close(new["reward"], traj["reward"] - 0.1 * expect)
    assert metrics["pessimism/disagreement"] == pytest.approx(expect.mean().item())
    with pytest.raises(ValueError, match="needs the imagination's start states"):
        pessimistic(traj, wm, cfg)
