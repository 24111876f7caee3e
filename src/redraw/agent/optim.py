"""The agent's optimizers: Adam made on first use (``LazyAdam``), with torch's fused kernel on request."""

from __future__ import annotations


def set_fused_adam(optimizer, enabled: bool) -> None:
    """Switch an existing ``torch.optim.Adam`` to the fused kernel (``enabled``) or back to torch's
    default implementation, keeping its state. Called again after ``load_state_dict``, which
    brings back the flags the checkpoint was saved with."""
    import torch

    for group in optimizer.param_groups:
        group["fused"], group["foreach"] = (True if enabled else None), None
        for p in group["params"]:
            state = optimizer.state.get(p)
            if enabled and state and torch.is_tensor(state.get("step")):
                state["step"] = state["step"].to(p.device, torch.float32)  # the fused kernel's step: on the device


class LazyAdam:
    """A ``torch.optim.Adam`` over ``module``'s parameters, made the first time it is asked for
    (``get``). An agent that only acts (an evaluation, a collection behaviour, a deployed policy)
    never makes one: constructing torch's first optimizer imports ``torch._dynamo``, ~1.7 s of a
    process that acts for seconds. A state loaded before then (``load_state_dict``) waits for it,
    so a checkpoint saved by such an agent keeps its optimizers' states as it loaded them.
    ``fused``: Adam's fused kernel (``set_fused_adam``), applied whenever the optimizer is made or
    loaded. Holds the module itself, not a function of it, so ``copy.deepcopy`` of its owner gives
    the copy's optimizer the copy's parameters."""

    def __init__(self, module, lr: float, eps: float):
        self.module, self.lr, self.eps = module, lr, eps
        self.fused = False
        self._opt = None
        self._pending: dict | None = None

    @property
    def made(self) -> bool:
        return self._opt is not None

    def get(self):
        if self._opt is None:
            import torch

            self._opt = torch.optim.Adam(self.module.parameters(), self.lr, eps=self.eps)
            if self._pending is not None:
                self._opt.load_state_dict(self._pending)
                self._pending = None
            set_fused_adam(self._opt, self.fused)
        return self._opt

    def set_fused(self, enabled: bool) -> None:
        self.fused = enabled
        if self._opt is not None:
            set_fused_adam(self._opt, enabled)

    def state_dict(self) -> dict:
        return self._pending if self._opt is None and self._pending is not None else self.get().state_dict()

    def load_state_dict(self, state: dict) -> None:
        if self._opt is None:
            self._pending = state
        else:
            self._opt.load_state_dict(state)
            set_fused_adam(self._opt, self.fused)  # load_state_dict brings back the saver's flags
