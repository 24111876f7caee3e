"""The RSSM's observe chain over a whole sequence as one autograd node with its own backward.

``RSSM.observe`` filters a batch step by step (64 steps at 16 rows in every preset): the GRU's
state at step t needs the posterior sample of step t-1, which needs the GRU's state at t-1.
Through autograd every step records ~40 operations whose backward computes, besides the
gradients that flow on to step t-1, the weight gradients of that step alone (products with 16
rows on the inner dimension) and adds them to the weights' gradients. ``observe_chain`` runs the
same forward unrecorded and a backward that carries only the state's and the sample's gradients
back through the steps; the weight and LayerNorm gradients of all steps are then one product (or
one reduction) over all B x T rows. It is the same function as the step-by-step chain, with the
same samples (the uniforms are drawn from the generator in the same order), and its gradients
are autograd's up to float rounding (``tests/test_perf.py``); ``perf.fused_chain: false`` runs
the step-by-step chain, as for DRAW's prior (``models.prior_chain``).

One step, as ``RSSM`` defines it (at an episode start the previous state is the initial one and
the previous action zero):

    x      = SiLU(LN(W_img [z_prev, a_prev]))                      img_in
    r,c,u  = LN(W_gru [deter_prev, x]);  r = sigmoid(r), u = sigmoid(u - 1)
    deter  = u * tanh(r * c) + (1 - u) * deter_prev                  LayerNormGRU
    logits = W_out SiLU(LN(W_post [deter, embed])) + b_out           posterior
    post   = log((1 - unimix) softmax(logits) + unimix / K)
    z      = one_hot(sample(post)) with the gradient of exp(post)    straight-through
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from redraw.models.dists import class_log_softmax, class_softmax, one_hot, sample_index

__all__ = ["observe_chain", "chain_params"]


def _mlp_layer(seq: torch.nn.Sequential, out: bool) -> list[torch.Tensor]:
    """Weights of a one-layer ``networks.mlp`` (Linear without bias, LayerNorm, SiLU[, Linear])."""
    mods = list(seq)
    ok = (len(mods) == (4 if out else 3) and isinstance(mods[0], torch.nn.Linear) and mods[0].bias is None
          and isinstance(mods[1], torch.nn.LayerNorm) and isinstance(mods[2], torch.nn.SiLU)
          and (not out or (isinstance(mods[3], torch.nn.Linear) and mods[3].bias is not None)))
    if not ok:
        raise ValueError("observe_chain runs one-layer networks.mlp img_in and posterior networks")
    params = [mods[0].weight, mods[1].weight, mods[1].bias]
    return params + ([mods[3].weight, mods[3].bias] if out else [])


def chain_params(model) -> tuple[list[torch.Tensor], float]:
    """The tensors ``observe_chain`` needs from an ``RSSM``, in its order, and the LayerNorm eps:
    img_in (weight, LN weight, LN bias), the GRU (weight, LN weight, LN bias), the posterior
    (weight, LN weight, LN bias, output weight, output bias)."""
    if model.gru.linear.bias is not None:
        raise ValueError("observe_chain runs a bias-free GRU linear map")
    params = (_mlp_layer(model.img_in, False) + [model.gru.linear.weight, model.gru.norm.weight, model.gru.norm.bias]
              + _mlp_layer(model.posterior, True))
    eps = {model.img_in[1].eps, model.gru.norm.eps, model.posterior[1].eps}
    if len(eps) > 1:
        raise ValueError(f"the chain's LayerNorms differ in eps: {sorted(eps)}")
    return params, eps.pop()


def observe_chain(model, embed: torch.Tensor, action: torch.Tensor, first: torch.Tensor,
                  init_deter: torch.Tensor, init_z: torch.Tensor, deter0: torch.Tensor, z0: torch.Tensor,
                  generator: torch.Generator | None = None):
    """The RSSM's posterior chain over a sequence, in fp32: deters [B, T, deter], samples
    [B, T, S, K] and posterior log-probabilities [B, T, S, K].

    embed [B, T, E]; action [B, T, A] (no gradient flows to it); first [B, T] bool (the previous
    state is (``init_deter`` [deter], ``init_z`` [S, K]) there and the previous action zero);
    (deter0 [B, deter], z0 [B, S, K]): the state before step 0. Gradients flow to the weights,
    ``embed``, ``init_deter``, ``deter0`` and ``z0`` (not to ``init_z``: the initial sample is the
    prior's mode, which has none)."""
    params, eps = chain_params(model)
    shape = (model.cfg.latent_vars, model.cfg.latent_classes, model.cfg.unimix)
    args = (embed.float(), action.float().clamp(-1, 1), first.bool(), init_deter.float(), init_z.float(),
            deter0.float(), z0.float(), shape, eps, generator)
    if not torch.is_grad_enabled():
        return _forward(*args, [p.float() for p in params])[:3]
    return _ObserveChain.apply(*args, *params)


def _layer_norm(u, gamma, beta, eps):
    return torch.native_layer_norm(u, (u.shape[-1],), gamma, beta, eps)


def _forward(embed, action, first, init_deter, init_z, deter0, z0, shape, eps, generator, params):
    """The chain, unrecorded: (deters, samples, posterior log-probs, what a backward needs)."""
    w_img, g_img, b_img, w_gru, g_gru, b_gru, w_post, g_post, b_post, w_out, b_out = params
    S, K, unimix = shape
    B, T, _ = action.shape
    init_z = init_z.reshape(S * K)
    first_t = first.transpose(0, 1)[..., None]  # [T, B, 1]
    zero_act = torch.zeros_like(action[:, 0])
    deter, z = deter0, z0.reshape(B, S * K)
    # what the backward needs, per step: each layer's input, pre-norm output, LayerNorm statistics
    # and activations (lists over t)
    saved: dict[str, list[torch.Tensor]] = {}

    def record(**step: torch.Tensor) -> None:
        for name, value in step.items():
            saved.setdefault(name, []).append(value)

    # each weight as a contiguous [in, out] matrix: at the chain's 16 rows an fp32 product with the
    # transposed view of a Linear's [out, in] weight took ~1.7x as long (MKL)
    w_img_t, w_gru_t, w_post_t, w_out_t = (w.t().contiguous() for w in (w_img, w_gru, w_post, w_out))
    deters, zs, posts = [], [], []
    for t in range(T):
        reset = first_t[t]
        prev_deter = torch.where(reset, init_deter, deter)
        prev_z = torch.where(reset, init_z, z)
        act = torch.where(reset, zero_act, action[:, t])
        in_img = torch.cat([prev_z, act], -1)
        u = torch.mm(in_img, w_img_t)
        y, mu, rs = _layer_norm(u, g_img, b_img, eps)
        x = F.silu(y)
        record(in_img=in_img, u_img=u, m_img=mu, r_img=rs, y_img=y)
        in_gru = torch.cat([prev_deter, x], -1)
        u = torch.mm(in_gru, w_gru_t)
        parts, mu, rs = _layer_norm(u, g_gru, b_gru, eps)
        reset_g, cand, update = parts.chunk(3, -1)
        r, up = torch.sigmoid(reset_g), torch.sigmoid(update - 1)
        a = torch.tanh(r * cand)
        deter = up * a + (1 - up) * prev_deter
        record(in_gru=in_gru, u_gru=u, m_gru=mu, r_gru=rs, gates=torch.cat([r, cand, up, a], -1))
        in_post = torch.cat([deter, embed[:, t]], -1)
        u = torch.mm(in_post, w_post_t)
        y, mu, rs = _layer_norm(u, g_post, b_post, eps)
        h = F.silu(y)
        logits = torch.addmm(b_out, h, w_out_t).view(B, S, K)
        record(in_post=in_post, u_post=u, m_post=mu, r_post=rs, y_post=y, h_post=h)
        if unimix > 0:  # as dists.latent_logprobs
            soft = class_softmax(logits)
            post = torch.log((1 - unimix) * soft + unimix / K)
        else:
            post = class_log_softmax(logits)
            soft = post.exp()
        record(soft=soft, post=post)
        probs = post.exp()  # as dists.sample_onehot: one_hot + probs - probs, whose value rounds as its does
        z = (one_hot(sample_index(probs, generator), K, probs.dtype) + probs - probs).reshape(B, S * K)
        deters.append(deter)
        zs.append(z)
        posts.append(post)
    deters, zs, posts = torch.stack(deters, 1), torch.stack(zs, 1).view(B, T, S, K), torch.stack(posts, 1)
    return deters, zs, posts, saved


def _ln_backward(gy, u, mean, rstd, gamma):
    return torch.ops.aten.native_layer_norm_backward(gy, u, (u.shape[-1],), mean, rstd, gamma, None,
                                                     [True, False, False])[0]


def _ln_param_grads(gy, u, mean, rstd):
    """Gradients of a LayerNorm's weight and bias over all rows: gy, u [N, H], mean, rstd [N, 1]."""
    xhat = (u - mean) * rstd
    return (gy * xhat).sum(0), gy.sum(0)


class _ObserveChain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, embed, action, first, init_deter, init_z, deter0, z0, shape, eps, generator, *params):
        deters, zs, posts, saved = _forward(embed, action, first, init_deter, init_z, deter0, z0, shape, eps,
                                            generator, params)
        ctx.set_materialize_grads(False)  # an output nothing used has no gradient: None, not zeros
        ctx.shape, ctx.saved = shape, saved
        ctx.save_for_backward(first, *params)
        return deters, zs, posts

    @staticmethod
    def backward(ctx, g_deters, g_zs, g_posts):
        first, *params = ctx.saved_tensors
        w_img, g_img, _, w_gru, g_gru, _, w_post, g_post, _, w_out, _ = params
        sv = ctx.saved
        S, K, unimix = ctx.shape
        B, T = first.shape
        D = S * K
        Dd = w_gru.shape[0] // 3
        keep = (~first.transpose(0, 1)[..., None]).float()  # [T, B, 1]: the previous state is the chain's own
        carry_deter = carry_z = None
        g_init_deter = torch.zeros(Dd, dtype=w_gru.dtype, device=w_gru.device)
        g_embed = [None] * T
        g_l_all, gu_post_all, gy_post_all = [None] * T, [None] * T, [None] * T
        g_parts_all, gu_gru_all, gu_img_all, gy_img_all = [None] * T, [None] * T, [None] * T, [None] * T
        zero = torch.zeros(B, D, dtype=w_out.dtype, device=w_out.device)
        for t in reversed(range(T)):
            # the sample: straight-through, the gradient of exp(post)
            gz = carry_z if g_zs is None else g_zs[:, t].reshape(B, D) if carry_z is None else carry_z + g_zs[:, t].reshape(B, D)
            post = sv["post"][t]
            gp = g_posts[:, t] if g_posts is not None else zero.view(B, S, K)
            if gz is not None:
                gp = gp + gz.view(B, S, K) * post.exp()
            soft = sv["soft"][t]
            # post = log((1 - m) softmax(l) + m / K): d post / d l = w * (1 - softmax), w = (1 - m) softmax / q
            w = (1 - unimix) * soft / post.exp() if unimix > 0 else 1.0
            wg = w * gp
            g_l = (wg - soft * wg.sum(-1, keepdim=True)).reshape(B, D)
            g_l_all[t] = g_l
            gy = torch.ops.aten.silu_backward(torch.mm(g_l, w_out), sv["y_post"][t])
            gu = _ln_backward(gy, sv["u_post"][t], sv["m_post"][t], sv["r_post"][t], g_post)
            gy_post_all[t], gu_post_all[t] = gy, gu
            g_in_post = torch.mm(gu, w_post)
            g_embed[t] = g_in_post[:, Dd:]
            g_deter = g_in_post[:, :Dd]
            if g_deters is not None:
                g_deter = g_deter + g_deters[:, t]
            if carry_deter is not None:
                g_deter = g_deter + carry_deter
            # the GRU: deter = u * a + (1 - u) * prev, a = tanh(r * c)
            r, cand, up, a = sv["gates"][t].chunk(4, -1)
            prev_deter = sv["in_gru"][t][:, :Dd]
            g_a = g_deter * up
            g_rc = g_a * (1 - a * a)
            g_parts = torch.cat([g_rc * cand * r * (1 - r), g_rc * r, g_deter * (a - prev_deter) * up * (1 - up)], -1)
            g_parts_all[t] = g_parts
            gu = _ln_backward(g_parts, sv["u_gru"][t], sv["m_gru"][t], sv["r_gru"][t], g_gru)
            gu_gru_all[t] = gu
            g_in_gru = torch.mm(gu, w_gru)
            g_prev_deter = g_deter * (1 - up) + g_in_gru[:, :Dd]
            gy = torch.ops.aten.silu_backward(g_in_gru[:, Dd:], sv["y_img"][t])
            gu = _ln_backward(gy, sv["u_img"][t], sv["m_img"][t], sv["r_img"][t], g_img)
            gy_img_all[t], gu_img_all[t] = gy, gu
            g_prev_z = torch.mm(gu, w_img[:, :D])  # the action's gradient is not needed
            g_init_deter = g_init_deter + (g_prev_deter * (1 - keep[t])).sum(0)
            carry_deter, carry_z = g_prev_deter * keep[t], g_prev_z * keep[t]

        def rows(xs):
            return torch.stack(xs).reshape(T * B, xs[0].shape[-1])

        # every step's weight and LayerNorm gradients in one product (or sum) over all B x T rows
        grads = []
        for gu_all, gy_all, name in ((gu_img_all, gy_img_all, "img"), (gu_gru_all, g_parts_all, "gru"),
                                     (gu_post_all, gy_post_all, "post")):
            gu, gy = rows(gu_all), rows(gy_all)
            grads.append(gu.t() @ rows(sv[f"in_{name}"]))
            grads.extend(_ln_param_grads(gy, rows(sv[f"u_{name}"]), rows(sv[f"m_{name}"]), rows(sv[f"r_{name}"])))
        g_l = rows(g_l_all)
        grads += [g_l.t() @ rows(sv["h_post"]), g_l.sum(0)]
        need = ctx.needs_input_grad
        g_embed = torch.stack(g_embed, 1) if need[0] else None
        g_z0 = carry_z.view(B, S, K) if need[6] and carry_z is not None else None
        return (g_embed, None, None, g_init_deter if need[3] else None, None,
                carry_deter if need[5] else None, g_z0, None, None, None, *grads)
