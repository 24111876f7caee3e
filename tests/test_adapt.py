"""The latent residual and the calibration methods: what is corrected, what trains, what stays put."""

import copy

import pytest
import torch

from redraw.agent.adapt import CalibrateConfig, Calibrator, dynamics_gap
from redraw.models.dists import latent_logprobs
from redraw.models.draw import LatentState
from redraw.models.residual import LatentResidual, ResidualConfig
from test_agent import agent
from test_models import SPEC, batch_for


def zero_residual_(residual: LatentResidual) -> None:
    for net in residual.nets:
        torch.nn.init.zeros_(net[-1].weight)
        torch.nn.init.zeros_(net[-1].bias)


def test_residual_shapes_and_ensemble_average_in_logit_space():
    res = LatentResidual(8, 4, 2, ResidualConfig(hidden=16, members=3))
    z, a = torch.rand(5, 7, 32), torch.rand(5, 7, 2)
    members = res.members(z, a)
    assert members.shape == (3, 5, 7, 8, 4)
    torch.testing.assert_close(res(z, a), members.mean(0))
    assert len(res.nets) == 3 and res.nets[0][0].in_features == 34 and res.nets[0][-1].out_features == 32
    assert res.nets[0][-1].weight.abs().sum() > 0, "the output layer must not be zero-initialised"


def test_zero_residual_gives_the_raw_prior_without_unimix_and_no_residual_keeps_the_mix():
    a = agent()
    wm = a.wm
    g = torch.Generator().manual_seed(1)
    prev = LatentState(torch.softmax(torch.randn(4, 8, 4, generator=g), -1),
                       torch.nn.functional.one_hot(torch.randint(0, 4, (4, 8), generator=g), 4).float())
    action = torch.rand(4, 1, generator=g) * 2 - 1
    raw = wm.prior_logits(action, prev)
    _, logp_plain = wm.dynamics_step(action, prev)
    torch.testing.assert_close(logp_plain, latent_logprobs(raw, 0.01))
    a.attach_residual(ResidualConfig(hidden=16))
    zero_residual_(wm.residual)
    raw_c, logp_c = wm.dynamics_step(action, prev)
    torch.testing.assert_close(raw_c, raw)
    torch.testing.assert_close(logp_c, torch.log_softmax(raw, -1))
    # a non-zero residual shifts the raw logits by exactly its output on [z, a]
    torch.nn.init.normal_(wm.residual.nets[0][-1].bias)
    raw_r, _ = wm.dynamics_step(action, prev)
    torch.testing.assert_close(raw_r, raw + wm.residual(prev.z.flatten(-2), action))


@pytest.mark.parametrize("fused_chain", [True, False])
def test_filtering_under_the_corrected_prior_is_stepping_the_corrected_model(fused_chain, monkeypatch):
    """What calibration fits (observe's prior over a sequence) is the model the policy imagines in
    (one ``dynamics_step`` after another): at each step the prior is the corrected one on the
    previous posterior sample and the previous *corrected* belief, which the correction reaches."""
    from redraw.models.draw import DRAW

    monkeypatch.setattr(DRAW, "fused_chain", fused_chain)
    a = agent()
    a.attach_residual(ResidualConfig(hidden=16, members=2))
    torch.nn.init.normal_(a.wm.residual.nets[0][-1].bias, std=3.0)
    wm = a.wm
    batch = batch_for(SPEC, B=2, T=5)
    batch["is_first"][1, 3] = True  # an episode starts inside the chunk
    with torch.no_grad():
        out = wm.observe({"state": batch["state"]}, batch["action"], batch["is_first"],
                         generator=torch.Generator().manual_seed(0))
        prev, init, uncorrected = wm.initial((2,)), wm.initial((2,)), None
        for t in range(5):
            first = batch["is_first"][:, t, None, None]
            action = torch.where(first[..., 0], 0.0, batch["action"][:, t])
            prev = LatentState(torch.where(first, init.belief, prev.belief), torch.where(first, init.z, prev.z))
            raw, logp = wm.dynamics_step(action, prev)
            torch.testing.assert_close(out["prior_logp"][:, t], logp)
            torch.testing.assert_close(out["states"].belief[:, t], torch.softmax(raw, -1))
            if uncorrected is not None:  # a chain that carried the uncorrected belief would differ
                carried = prev._replace(belief=torch.where(first, init.belief, uncorrected))
                assert not torch.allclose(out["prior_base"][:, t], wm.prior_logits(action, carried))
            uncorrected = torch.softmax(wm.prior_logits(action, prev), -1)
            prev = LatentState(torch.softmax(raw, -1), out["states"].z[:, t])


@pytest.mark.parametrize("members", [1, 2])
def test_redraw_calibration_trains_only_the_residual_and_leaves_the_world_model_bit_identical(members):
    a = agent()
    before = copy.deepcopy(a.state_dict())
    cal = Calibrator(a, "redraw", CalibrateConfig(), ResidualConfig(hidden=16, members=members))
    res_before = copy.deepcopy(a.wm.residual.state_dict())
    batch = batch_for(SPEC, B=2, T=6)
    loss, _ = cal.loss(batch)
    loss.backward()
    for name, p in a.named_parameters():
        assert (p.grad is not None) == name.startswith("wm.residual."), name
    # the loss, against a naive reference: per member KL(sg(post) || softmax(raw prior + member)),
    # summed over variables, averaged over non-first steps, summed (not averaged) over members
    with torch.no_grad():
        a.generator.manual_seed(3)
        loss, _ = cal.loss(batch)
        a.generator.manual_seed(3)
        out = a.wm.observe({"state": batch["state"]}, batch["action"], batch["is_first"], generator=a.generator)
        keep = ~batch["is_first"]
        naive = 0.0
        for member in out["residual_members"]:
            logq = torch.log_softmax(out["prior_base"] + member, -1)
            kl = (out["post_logp"].exp() * (out["post_logp"] - logq)).sum((-2, -1))
            naive = naive + kl[keep].mean()
    assert len(out["residual_members"]) == members
    torch.testing.assert_close(loss, naive)
    for _ in range(3):
        cal.step(batch)
    after = a.state_dict()
    for k, v in before.items():
        assert torch.equal(v, after[k]), f"{k} changed in calibration"
    assert any(not torch.equal(v, a.wm.residual.state_dict()[k]) for k, v in res_before.items())


def test_redraw_calibration_reduces_the_target_kl():
    a = agent()
    cal = Calibrator(a, "redraw", CalibrateConfig(), ResidualConfig(hidden=32))
    batch = batch_for(SPEC, B=4, T=8)
    first = cal.step(batch)["loss/calib"]
    for _ in range(60):
        last = cal.step(batch)["loss/calib"]
    assert last < 0.8 * first


def test_finetune_baselines_train_what_the_paper_says():
    a = agent()
    before = copy.deepcopy(a.state_dict())
    cal = Calibrator(a, "draw_finetune", CalibrateConfig(), ResidualConfig())
    cal.step(batch_for(SPEC, B=2, T=6))
    after = a.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved and all(k.startswith(("wm.prior.", "wm.init_logits")) for k in moved), moved

    r = agent(world_model="rssm")
    before = copy.deepcopy(r.state_dict())
    Calibrator(r, "dreamer_finetune", CalibrateConfig(), ResidualConfig()).step(batch_for(SPEC, B=2, T=6))
    after = r.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    trainable = ("wm.img_in.", "wm.gru.", "wm.prior.", "wm.posterior.", "wm.init_deter")
    assert moved and all(k.startswith(trainable) for k in moved), moved
    assert not any(k.startswith(("wm.vec_encoder", "wm.vec_decoder", "wm.reward_head", "wm.cont_head", "ac."))
                   for k in moved)


def test_a_method_refuses_the_wrong_world_model():
    with pytest.raises(ValueError, match="rssm"):
        Calibrator(agent(), "dreamer_finetune", CalibrateConfig(), ResidualConfig())
    with pytest.raises(ValueError, match="unknown method"):
        Calibrator(agent(), "magic", CalibrateConfig(), ResidualConfig())


@pytest.mark.parametrize("method", ["redraw", "draw_finetune"])
def test_dynamics_gap_reports_every_horizon_and_measures_what_calibration_minimises(method):
    a = agent()
    cal = Calibrator(a, method, CalibrateConfig(), ResidualConfig(hidden=16))
    if method == "redraw":
        torch.nn.init.normal_(a.wm.residual.nets[0][-1].bias, std=2.0)  # the report must see the residual
    batch = batch_for(SPEC, B=2, T=9)
    gap = dynamics_gap(a, batch, context=3, seed=0)
    assert len(gap["kl"]) == len(gap["mse"]) == 6
    assert gap["pred"]["state"].shape == gap["truth"]["state"].shape == (2, 6, 3)
    # kl_filter is the one-step KL calibration reports (for redraw: under the corrected prior)
    a.generator.manual_seed(0)
    with torch.no_grad():
        _, metrics = cal.loss(batch)
    torch.testing.assert_close(torch.tensor(gap["kl_filter"]), metrics["calib/kl"].float())
    # open loop: the squared error of the decoded predictions against the held-out truth
    torch.testing.assert_close(torch.tensor(gap["mse"]),
                               ((gap["pred"]["state"] - gap["truth"]["state"]) ** 2).mean((0, 2)))


@pytest.mark.parametrize("world_model, residual", [("draw", False), ("draw", True), ("rssm", False)])
def test_policy_step_filters_exactly_like_observe(world_model, residual):
    """The deployable step, fed its own latent back, reproduces observe() on a sequence."""
    from redraw.agent.policy import PolicyStep

    a = agent(world_model=world_model)
    if residual:
        a.attach_residual(ResidualConfig(hidden=16))
        torch.nn.init.normal_(a.wm.residual.nets[0][-1].bias, std=2.0)
    batch = batch_for(SPEC, B=2, T=4)
    S = a.wm.cfg.latent_vars
    # observe draws one uniform per variable per step in this order for both models
    out = a.wm.observe({"state": batch["state"]}, batch["action"], batch["is_first"],
                       generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    uniforms = torch.rand((2, 4, S), generator=g) if world_model == "draw" else None
    step = PolicyStep(a)
    latent = torch.zeros(2, step.latent_size)
    for t in range(4):
        u = uniforms[:, t] if uniforms is not None else torch.rand((2, S), generator=g)
        action, latent = step(batch["state"][:, t], latent, batch["action"][:, t], batch["is_first"][:, t].float(),
                              u, torch.zeros(2, 1))
        feat = out["feat"][:, t]
        torch.testing.assert_close(latent[:, step.head:], out["states"].z[:, t].flatten(1))
        if world_model == "draw":
            torch.testing.assert_close(latent[:, : step.head], out["states"].belief[:, t].flatten(1))
        else:
            torch.testing.assert_close(latent[:, : step.head], out["states"].deter[:, t])
        torch.testing.assert_close(action, a.ac.actor.dist(feat).mean.clamp(-1, 1))
