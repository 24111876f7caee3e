"""Plan2Explore: an ensemble's disagreement about the next encoder embedding as the reward of an
exploration actor-critic (docs/method.md#pretrain: 8 heads, extrinsic weight 0)."""

from __future__ import annotations

import torch
from torch import nn

from redraw.agent.optim import LazyAdam
from redraw.models.networks import mlp, uniform_init_
from redraw.perf import CompiledRegions


class Disagreement(CompiledRegions, nn.Module):
    """``heads`` MLPs predict the next embedding from (features, action); their variance is the
    intrinsic reward. With ``use_compile`` the reward without a graph (``spread``) and the
    ensemble's training loss (``loss``) run compiled: the variance over the heads is then one
    fused pass instead of six over [heads, rows, embedding] tensors."""

    COMPILED = ("spread", "loss")  #: what ``use_compile`` compiles

    def __init__(self, feat_dim: int, action_size: int, target_dim: int, heads: int = 8, units: int = 512,
                 layers: int = 2, lr: float = 3e-4, eps: float = 1e-8, grad_clip: float = 100.0):
        super().__init__()
        self.heads = nn.ModuleList(mlp(feat_dim + action_size, units, layers, target_dim) for _ in range(heads))
        uniform_init_(self)
        self.grad_clip = grad_clip
        self.adam = LazyAdam(self, lr, eps)  # made on first use

    @property
    def opt(self) -> torch.optim.Optimizer:
        return self.adam.get()

    def outputs(self, feat: torch.Tensor, action: torch.Tensor) -> list[torch.Tensor]:
        """Each head's prediction [..., target] in fp32."""
        x = torch.cat([feat, action], -1)
        return [head(x).float() for head in self.heads]

    def predict(self, feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        return torch.stack(self.outputs(feat, action))  # [heads, ..., target]

    def reward(self, feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Ensemble variance (unbiased) averaged over the target's dimensions, differentiable in
        ``feat`` and ``action`` (a backprop explorer learns through it). Written out in two
        passes: ``Tensor.var(0)`` over the head axis is ~4x slower on CPU."""
        # a graph only for inputs that carry one (not DRAW's imagination: REINFORCE needs none)
        grad = torch.is_grad_enabled() and (feat.requires_grad or action.requires_grad)
        rows = feat.reshape(-1, feat.shape[-1]).shape[0]
        if not grad and rows > self.REWARD_ROWS:  # in row chunks: heads x rows x target floats at once
            lead = feat.shape[:-1]               # was 13 GB at the paper's size (40 x 1024 starts)
            f, a = feat.reshape(rows, -1), action.reshape(rows, -1)
            return torch.cat([self.reward(f[i : i + self.REWARD_ROWS], a[i : i + self.REWARD_ROWS])
                              for i in range(0, rows, self.REWARD_ROWS)]).reshape(lead)
        if grad:
            return self.spread(feat, action)
        with torch.no_grad():
            return self._compiled.get("spread", self.spread)(feat, action)

    def spread(self, feat: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """The heads' unbiased variance, averaged over the target's dimensions."""
        if torch.compiler.is_compiling():
            # the heads' outputs as they come, never stacked: the stack's fp32 copy of every
            # prediction ([heads, rows, target]) was written and read back in full; summed head by
            # head, Inductor reads each head's output in one fused pass (~30% less time per chunk
            # at the paper's size, docs/performance.md)
            preds = self.outputs(feat, action)
            mean = sum(preds) / len(preds)
            return (sum((p - mean).square() for p in preds) / (len(preds) - 1)).mean(-1)
        pred = self.predict(feat, action)
        centred = pred - pred.mean(0)
        return centred.square().sum(0).div(len(self.heads) - 1).mean(-1)

    REWARD_ROWS = 8192  #: rows per chunk of ``reward`` without a graph

    def loss(self, feat: torch.Tensor, action: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Every head's squared error on the next embedding, averaged."""
        if torch.compiler.is_compiling():  # head by head, never stacked, as in ``spread``
            target = target.float()
            errors = [((p - target) ** 2).mean() for p in self.outputs(feat, action)]
            return sum(errors) / len(errors)
        return ((self.predict(feat, action) - target.float()) ** 2).mean()

    def update(self, feat: torch.Tensor, action: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """One step on transitions feat_t, action_{t+1}, embed_{t+1} (all treated as constants)."""
        loss = self._compiled.get("loss", self.loss)(feat.detach(), action.detach(), target.detach())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.parameters(), self.grad_clip)
        self.opt.step()
        return {"loss/disagreement": loss.detach()}
