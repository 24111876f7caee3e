"""DRAW's prior chain over a whole sequence as one autograd node with its own backward pass.

``DRAW.observe`` runs the prior once per step of the batch (64 steps at 16 rows in every preset):
the belief of step t is the prior's softmax at step t-1, so the steps cannot be batched. Through
autograd each step is ~15 recorded operations whose backward computes, besides the gradient
that flows on to step t-1, the weight gradients of that step alone (products with 16 rows on
the inner dimension) and adds them to the weights' gradients: at 16 rows the CPU's per-operation
cost, not the arithmetic, is what the chain spends. ``prior_chain`` runs the same forward without
recording it and a backward that carries only the belief's gradient back through the steps; the
weight and LayerNorm gradients of all steps are then one product (or one reduction) over all
B x T rows. Same function, same gradients up to float rounding (``tests/test_perf.py`` checks
them against autograd's); ``perf.fused_chain: false`` runs the step-by-step autograd chain.

The prior it runs is ``networks.mlp``'s: ``layers`` x (Linear without bias, LayerNorm, SiLU),
then Linear with bias to the raw logits.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F

from redraw.models.dists import class_softmax

__all__ = ["prior_chain", "prior_params"]


def prior_params(prior: torch.nn.Sequential) -> tuple[list[torch.Tensor], float]:
    """The tensors ``prior_chain`` needs from an ``mlp`` prior, in its order, and the LayerNorm eps:
    the layers' weights, the LayerNorms' weights and biases, the output weight and bias."""
    mods = list(prior)
    linears, norms = mods[:-1:3], mods[1:-1:3]
    out = mods[-1]
    if not (all(isinstance(m, torch.nn.Linear) and m.bias is None for m in linears)
            and all(isinstance(m, torch.nn.LayerNorm) for m in norms)
            and all(isinstance(m, torch.nn.SiLU) for m in mods[2:-1:3])
            and isinstance(out, torch.nn.Linear) and out.bias is not None and len(mods) % 3 == 1 and len(mods) > 1):
        raise ValueError("prior_chain runs a networks.mlp prior: at least one (Linear, LayerNorm, SiLU), then Linear")
    eps = {m.eps for m in norms}
    if len(eps) > 1:
        raise ValueError(f"the prior's LayerNorms differ in eps: {sorted(eps)}")
    params = [m.weight for m in linears] + [m.weight for m in norms] + [m.bias for m in norms] + [out.weight, out.bias]
    return params, eps.pop() if eps else 1e-5


def prior_chain(prior: torch.nn.Sequential, acts: torch.Tensor, z: torch.Tensor, reset: torch.Tensor,
                init_belief: torch.Tensor, belief0: torch.Tensor, classes: int,
                correction: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The prior over a sequence: raw logits and beliefs, both [B, T, S*K].

    acts [B, T, A] (already clipped; no gradient flows to them), z [B, T, S*K] (the previous
    samples), reset [B, T] bool (the previous belief is ``init_belief`` [S*K] there),
    belief0 [B, S*K] (the belief before step 0). Step t's input is ``[acts_t, belief, z_t]`` and
    its belief ``softmax(raw_t + correction_t)`` over the ``classes`` (``correction`` [B, T, S*K]:
    the latent residual's, whose chain has no gradient: its inputs are stop-gradient and the
    prior is frozen; the returned raw logits are the prior's own).
    """
    params, eps = prior_params(prior)
    if correction is not None:
        with torch.no_grad():
            return _forward(acts, z, reset, init_belief, belief0, classes, eps, params, correction)[:2]
    return _PriorChain.apply(acts, z, reset, init_belief, belief0, classes, eps, *params)


def _forward(acts, z, reset, init_belief, belief0, classes, eps, params, correction=None):
    """The chain, unrecorded: (raw logits, beliefs, every step's input x [T, B, A + 2 S*K], the
    steps' layer tensors a backward needs)."""
    L = (len(params) - 2) // 3
    weights, gammas, betas = params[:L], params[L:2 * L], params[2 * L:3 * L]
    w_out, b_out = params[3 * L], params[3 * L + 1]
    B, T, A = acts.shape
    D = z.shape[-1]
    H = weights[0].shape[0]
    w_in = weights[0]
    # the chain's products take each weight as a contiguous [in, out] matrix: at its 16 rows an fp32
    # product with the transposed view of a Linear's [out, in] weight took ~1.7x as long (MKL)
    w_belief = w_in[:, A:A + D].t().contiguous()
    w_hidden = [None] + [w.t().contiguous() for w in weights[1:]]
    w_out_t = w_out.t().contiguous()
    # the first layer's action and sample parts for every step in one product; the belief's in the chain
    known = (torch.mm(acts.transpose(0, 1).reshape(T * B, A), w_in[:, :A].t())
             + torch.mm(z.transpose(0, 1).reshape(T * B, D), w_in[:, A + D:].t())).view(T, B, H)
    reset_t = reset.transpose(0, 1)[..., None]  # [T, B, 1]
    pre, mean, rstd, normed, hidden = ([[None] * T for _ in range(L)] for _ in range(5))
    raws, beliefs, prevs = [], [], []
    belief = belief0
    for t in range(T):
        prev = torch.where(reset_t[t], init_belief, belief)
        u = torch.addmm(known[t], prev, w_belief)
        for i in range(L):
            if i:
                u = torch.mm(h, w_hidden[i])
            y, mu, rs = torch.native_layer_norm(u, (H,), gammas[i], betas[i], eps)
            h = F.silu(y)
            pre[i][t], mean[i][t], rstd[i][t], normed[i][t], hidden[i][t] = u, mu, rs, y, h
        raw = torch.addmm(b_out, h, w_out_t)
        belief = class_softmax((raw if correction is None else raw + correction[:, t]).view(B, -1, classes))
        belief = belief.reshape(B, D)
        prevs.append(prev)
        raws.append(raw)
        beliefs.append(belief)
    x = torch.cat([acts.transpose(0, 1), torch.stack(prevs), z.transpose(0, 1)], -1)
    return torch.stack(raws, 1), torch.stack(beliefs, 1), x, (pre, mean, rstd, normed, hidden)


class _PriorChain(torch.autograd.Function):
    @staticmethod
    def forward(ctx, acts, z, reset, init_belief, belief0, classes, eps, *params):
        raw, belief, x, steps = _forward(acts, z, reset, init_belief, belief0, classes, eps, params)
        ctx.set_materialize_grads(False)  # an output nothing used has no gradient: None, not zeros
        ctx.classes, ctx.L = classes, (len(params) - 2) // 3
        ctx.steps = steps
        ctx.save_for_backward(x, reset, belief, *params)
        return raw, belief

    @staticmethod
    def backward(ctx, g_raw, g_belief):
        x, reset, belief, *params = ctx.saved_tensors
        pre, mean, rstd, normed, hidden = ctx.steps
        L, K = ctx.L, ctx.classes
        B, T, D = belief.shape
        A = x.shape[-1] - 2 * D
        H = params[0].shape[0]
        reset_t = reset.transpose(0, 1)[..., None]  # [T, B, 1]
        weights, gammas = params[:L], params[L:2 * L]
        w_out = params[3 * L]
        g_out, g_pre, g_normed = [None] * T, [[None] * T for _ in range(L)], [[None] * T for _ in range(L)]
        keep = (~reset_t).to(x.dtype)  # [T, B, 1]: where the previous belief is the chain's own
        w_belief = weights[0][:, A:A + D].contiguous()
        carry, g_prevs = None, [None] * T  # carry: d loss / d belief_t, from step t+1
        for t in reversed(range(T)):
            gb = carry if g_belief is None else g_belief[:, t] if carry is None else carry + g_belief[:, t]
            gr = g_raw[:, t] if g_raw is not None else torch.zeros(B, D, dtype=x.dtype, device=x.device)
            if gb is not None:  # back through belief_t = softmax(raw_t) over the classes
                p = belief[:, t].view(B, -1, K)
                gbk = gb.view(B, -1, K)
                gr = gr + (p * (gbk - (gbk * p).sum(-1, keepdim=True))).reshape(B, D)
            g_out[t] = gr
            gh = torch.mm(gr, w_out)
            for i in reversed(range(L)):
                gy = torch.ops.aten.silu_backward(gh, normed[i][t])
                gu = torch.ops.aten.native_layer_norm_backward(gy, pre[i][t], (H,), mean[i][t], rstd[i][t],
                                                               gammas[i], None, [True, False, False])[0]
                g_normed[i][t], g_pre[i][t] = gy, gu
                if i:
                    gh = torch.mm(gu, weights[i])
            g_prevs[t] = torch.mm(gu, w_belief)
            carry = g_prevs[t] * keep[t]
        g_prev = torch.stack(g_prevs)  # [T, B, D]
        g_init = (g_prev * (1 - keep)).sum((0, 1))
        g_in0 = torch.stack(g_pre[0])  # [T, B, H]
        g_z = torch.mm(g_in0.reshape(T * B, H), weights[0][:, A + D:]).view(T, B, D).transpose(0, 1)
        grads, g_gammas, g_betas = [], [], []
        for i in range(L):  # every step's weight and LayerNorm gradients in one product / sum over all B x T rows
            inp = x if i == 0 else torch.stack(hidden[i - 1])
            grads.append(torch.stack(g_pre[i]).reshape(-1, H).t() @ inp.reshape(-1, inp.shape[-1]))
            gy = torch.stack(g_normed[i]).reshape(-1, H)
            xhat = (torch.stack(pre[i]).reshape(-1, H) - torch.stack(mean[i]).reshape(-1, 1)) * torch.stack(rstd[i]).reshape(-1, 1)
            g_gammas.append((gy * xhat).sum(0))
            g_betas.append(gy.sum(0))
        go = torch.stack(g_out).reshape(-1, D)
        g_w_out = go.t() @ torch.stack(hidden[L - 1]).reshape(-1, H)
        g_b_out = go.sum(0)
        need = ctx.needs_input_grad
        return (None, g_z if need[1] else None, None, g_init if need[3] else None,
                carry if need[4] else None, None, None, *grads, *g_gammas, *g_betas, g_w_out, g_b_out)
