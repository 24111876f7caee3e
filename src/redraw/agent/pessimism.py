"""The pessimism of ``redraw_pessimistic`` (docs/residual.md): it lives with the method, in
``redraw.methods.redraw_pessimistic``; the agent's policy step (``Agent.pessimism``) and older
importers reach it by these names."""

from __future__ import annotations

from redraw.methods.redraw_pessimistic import (MEASURES, MODES, PessimismConfig, disagreement, member_rollouts,
                                               member_spread, pairwise_kl, pessimism_config, pessimistic)

__all__ = ["MEASURES", "MODES", "PessimismConfig", "disagreement", "member_rollouts", "member_spread", "pairwise_kl",
           "pessimism_config", "pessimistic"]
