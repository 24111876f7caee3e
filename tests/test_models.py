"""DRAW, the actor-critic and their maths, against naive references."""

import math

import pytest
import torch

from redraw.agent.returns import lambda_returns
from redraw.models.dists import categorical_kl, class_log_softmax, class_softmax, latent_logprobs, symexp, symlog, twohot_bins, twohot_encode
from redraw.models.draw import DRAW, WorldModelConfig
from redraw.models.rssm import RSSM

SPEC = {"state": ((3,), "float32")}
PIX = {"image": ((64, 64, 3), "uint8"), "velocity": ((2,), "float32")}


def tiny(**kw):
    base = dict(latent_vars=8, latent_classes=4, hidden=32, deter=16, cnn_depth=4, mlp_units=32, mlp_layers=2,
                head_units=32, reward_bins=255)
    base.update(kw)
    return WorldModelConfig(**base)


def batch_for(spec, B=3, T=6, A=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    batch = {
        "action": torch.rand(B, T, A, generator=g) * 2 - 1,
        "reward": torch.rand(B, T, generator=g),
        "is_first": torch.zeros(B, T, dtype=torch.bool),
        "is_terminal": torch.zeros(B, T, dtype=torch.bool),
    }
    batch["is_first"][:, 0] = True
    for k, (shape, dtype) in spec.items():
        batch[k] = (torch.randint(0, 255, (B, T, *shape), generator=g, dtype=torch.uint8) if dtype == "uint8"
                    else torch.randn(B, T, *shape, generator=g))
    return batch


def test_symlog_symexp_and_twohot_against_naive():
    x = torch.tensor([-1000.0, -3.5, -1e-3, 0.0, 0.7, 42.0])
    torch.testing.assert_close(symexp(symlog(x)), x)
    torch.testing.assert_close(symlog(x), torch.tensor([math.copysign(math.log(abs(v) + 1), v) for v in x.tolist()]))
    bins = twohot_bins(255)
    enc = twohot_encode(x, bins)
    torch.testing.assert_close(enc.sum(-1), torch.ones(len(x)))
    torch.testing.assert_close((enc * bins).sum(-1), symlog(x))  # exact two-hot: expectation is the value
    for row, v in zip(enc, symlog(x).tolist()):  # naive: two neighbouring bins only
        nz = row.nonzero().flatten().tolist()
        assert len(nz) <= 2 and all(abs(bins[i].item() - v) <= (bins[1] - bins[0]).item() + 1e-6 for i in nz)


def test_kl_and_unimix_against_naive():
    g = torch.Generator().manual_seed(0)
    p_logits, q_logits = torch.randn(2, 5, 3, generator=g), torch.randn(2, 5, 3, generator=g)
    p, q = latent_logprobs(p_logits, 0.01), latent_logprobs(q_logits, 0.01)
    assert torch.all(p.exp() >= 0.01 / 3 - 1e-7)
    naive = torch.zeros(2)
    for b in range(2):
        for s in range(5):
            for k in range(3):
                naive[b] += p[b, s, k].exp() * (p[b, s, k] - q[b, s, k])
    torch.testing.assert_close(categorical_kl(p, q), naive)


def test_class_softmax_matches_torch_softmax_values_and_gradients():
    x = torch.randn(3, 7, 5, 4, requires_grad=True)
    y = x.detach().clone().requires_grad_(True)
    w = torch.randn(3, 7, 5, 4)
    torch.testing.assert_close(class_softmax(x), torch.softmax(y, -1))
    torch.testing.assert_close(class_log_softmax(x), torch.log_softmax(y, -1))
    ((class_softmax(x) + class_log_softmax(x)) * w).sum().backward()
    ((torch.softmax(y, -1) + torch.log_softmax(y, -1)) * w).sum().backward()
    torch.testing.assert_close(x.grad, y.grad)
    assert class_softmax(x.bfloat16()).dtype == torch.float32


def test_compiled_latent_maths_class_by_class_is_the_eager_maths(tmp_path, monkeypatch):
    """Inside torch.compile the softmaxes and the inverse-CDF sampler over a few classes run class
    by class (a faster layout for Inductor): the same values to float rounding and the same samples
    from the same uniforms as the eager maths."""
    from redraw.models.dists import one_hot, sample_index

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))

    def maths(logits, u):
        p = class_softmax(logits)
        return p, class_log_softmax(logits), one_hot(sample_index(p, uniform=u), logits.shape[-1], torch.float32)

    g = torch.Generator().manual_seed(0)
    logits, u = 3 * torch.randn(64, 8, 4, generator=g), torch.rand(64, 8, generator=g)
    e, c = maths(logits, u), torch.compile(maths, dynamic=False, fullgraph=True)(logits, u)
    torch.testing.assert_close(c[0], e[0])
    torch.testing.assert_close(c[1], e[1])
    assert torch.equal(c[2], e[2]) and torch.equal(c[2].sum(-1), torch.ones(64, 8))


def test_lambda_returns_against_naive_loop():
    g = torch.Generator().manual_seed(1)
    H, N = 7, 4
    r, c, v = torch.rand(H, N, generator=g), (torch.rand(H, N, generator=g) > 0.2).float(), torch.rand(H + 1, N, generator=g)
    disc, lam = 0.99, 0.95
    ret = lambda_returns(r, c, v, disc, lam)
    for n in range(N):  # naive: weighted sum of n-step returns
        for t in range(H):
            total = 0.0
            for k in range(1, H - t + 1):
                nstep, d = 0.0, 1.0
                for i in range(k):
                    nstep += d * r[t + i, n].item()
                    d *= disc * c[t + i, n].item()
                nstep += d * v[t + k, n].item()
                w = (1 - lam) * lam ** (k - 1) if k < H - t else lam ** (k - 1)
                total += w * nstep
            assert ret[t, n].item() == pytest.approx(total, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("model", [DRAW, RSSM])
@pytest.mark.parametrize("spec", [SPEC, PIX], ids=["proprio", "pixels"])
def test_observe_and_imagine_shapes(spec, model):
    A = 2 if "image" in spec else 1
    wm = model(spec, A, tiny())
    F = 32 if model is DRAW else 16 + 32
    assert wm.feat_dim == F
    batch = batch_for(spec, A=A)
    out = wm.observe({k: batch[k] for k in spec}, batch["action"], batch["is_first"])
    assert out["feat"].shape == (3, 6, F) and out["prior_logp"].shape == out["post_logp"].shape == (3, 6, 8, 4)
    torch.testing.assert_close(out["states"].z.detach().sum(-1), torch.ones(3, 6, 8))
    start = type(out["states"])(*(x[:, -1].detach() for x in out["states"]))
    traj = wm.imagine(lambda f: torch.zeros(f.shape[0], A), start, horizon=5)
    assert traj["feat"].shape == (6, 3, F) and traj["action"].shape == (5, 3, A)
    assert traj["reward"].shape == (5, 3) and traj["cont"].shape == (5, 3)
    loss, metrics, _ = wm.loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and {"loss/reward", "loss/dyn", "loss/rep"} <= set(metrics)


def test_kl_balancing_and_free_bits_reach_the_right_parameters():
    cfg = tiny(free_bits=0.0)
    wm = DRAW(SPEC, 1, cfg)
    batch = batch_for(SPEC)
    _, _, out = wm.loss(batch)
    mask = (~batch["is_first"]).float()
    dyn = (categorical_kl(out["post_logp"].detach(), out["prior_logp"]) * mask).sum() / mask.sum()
    rep = (categorical_kl(out["post_logp"], out["prior_logp"].detach()) * mask).sum() / mask.sum()
    grads = {}
    for name, term in (("dyn", dyn), ("rep", rep)):
        wm.zero_grad()
        term.backward(retain_graph=True)
        grads[name] = {n for n, p in wm.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    # dyn trains the prior (the posterior only through the samples the prior reads, as in DreamerV3)
    assert any(n.startswith("prior.") for n in grads["dyn"])
    assert "init_logits" in grads["dyn"]
    assert any(n.startswith("posterior.") for n in grads["rep"])
    assert not any(n.startswith("prior.") for n in grads["rep"])
    # free bits: a KL below the threshold contributes nothing
    wm_fb = DRAW(SPEC, 1, tiny(free_bits=1e6))
    loss, metrics, _ = wm_fb.loss(batch)
    assert metrics["loss/dyn"].item() == pytest.approx(1e6)


def test_reward_head_is_zero_initialised_and_episode_starts_reset_the_prior():
    wm = DRAW(SPEC, 1, tiny())
    assert wm.reward_head[-1].weight.abs().sum() == 0
    batch = batch_for(SPEC, B=1, T=4)
    batch["is_first"][0, 2] = True
    out = wm.observe({"state": batch["state"]}, batch["action"], batch["is_first"])
    # at both starts the prior sees the initial state and a zero action: identical priors
    torch.testing.assert_close(out["prior_logp"][0, 0], out["prior_logp"][0, 2])


def test_residual_plugs_into_the_dynamics_step_without_unimix():
    wm = DRAW(SPEC, 1, tiny())
    prev = wm.initial((2,))
    action = torch.zeros(2, 1)
    raw, logp = wm.dynamics_step(action, prev)
    torch.testing.assert_close(logp, latent_logprobs(raw, 0.01))

    class Zero(torch.nn.Module):
        def forward(self, z, a):
            return torch.zeros(*z.shape[:-1], 8, 4)

    wm.residual = Zero()
    raw2, logp2 = wm.dynamics_step(action, prev)
    torch.testing.assert_close(raw2, raw)
    torch.testing.assert_close(logp2, torch.log_softmax(raw, -1))


def test_same_seed_same_losses():
    def losses(seed):
        torch.manual_seed(seed)
        wm = DRAW(SPEC, 1, tiny())
        loss, _, _ = wm.loss(batch_for(SPEC), generator=torch.Generator().manual_seed(seed))
        return loss.item()

    assert losses(3) == losses(3)
    assert losses(3) != losses(4)


@pytest.mark.parametrize("model", [DRAW, RSSM])
@pytest.mark.parametrize("spec", [SPEC, PIX], ids=["proprio", "pixels"])
def test_open_loop_predicts_the_rest_of_the_sequence(spec, model):
    A = 2 if "image" in spec else 1
    wm = model(spec, A, tiny())
    batch = batch_for(spec, A=A, T=9)
    out = wm.open_loop({k: batch[k] for k in spec}, batch["action"], batch["is_first"], context=4)
    assert out["feat"].shape == (3, 5, wm.feat_dim)
    for k, (shape, _) in spec.items():
        assert out["pred"][k].shape == (3, 5, *shape) == out["truth"][k].shape
    with pytest.raises(ValueError, match="context must be in 1..8"):
        wm.open_loop({k: batch[k] for k in spec}, batch["action"], batch["is_first"], context=9)


def test_observation_scale_standardises_proprio_dims_and_travels_with_the_weights():
    g = torch.Generator().manual_seed(0)
    # a big velocity-like dim and two small dims (the kind that carries reacher's reward)
    data = torch.randn(2000, 3, generator=g) * torch.tensor([3.0, 0.02, 0.15]) + torch.tensor([0.0, 0.5, -0.1])
    obs = {"state": data[:5]}

    paper = DRAW(SPEC, 1, tiny(obs_norm=False))
    paper.set_obs_scale(data)  # no-op without obs_norm: the paper's symlog-only path is untouched
    assert torch.equal(paper.encode(obs), paper.vec_encoder(symlog(data[:5])))

    model = DRAW(SPEC, 1, tiny(obs_norm=True))
    raw_std = symlog(data).std(0)
    assert raw_std[1] < 0.05 * raw_std[0]  # symlog alone: the small dims barely move the input
    model.set_obs_scale(data)
    seen = model._vec_in({"state": data})
    assert seen.mean(0).abs().max() < 0.05 and (seen.std(0) - seen.std(0)[0]).abs().max() < 0.05
    # decode inverts the input transform: a decoder output equal to the input gives back the observation
    back = symexp(model._vec_in(obs)) * model.vec_std + model.vec_mean
    assert torch.allclose(back, obs["state"], atol=1e-5)

    again = DRAW(SPEC, 1, tiny(obs_norm=True))
    again.load_state_dict(model.state_dict())  # the scale is part of the saved weights
    assert torch.equal(again.encode(obs), model.encode(obs))
    with pytest.raises(ValueError, match="non-finite"):
        model.set_obs_scale(torch.full((4, 3), float("nan")))
