"""One module per DVC stage: a pure ``run(params) -> metrics`` and a thin ``main``."""

from __future__ import annotations

import sys
from typing import Callable

from redraw.config import get


def env_settings(params: dict, path: str = "params.yaml") -> dict:
    """The ``env`` settings every stage that builds an env passes to ``make_env`` (beside the name)."""
    return dict(
        obs_mode=get(params, "env.obs_mode", path),
        action_repeat=int(get(params, "env.action_repeat", path)),
        episode_steps=int(get(params, "env.episode_steps", path)),
        image_size=int(get(params, "env.image_size", path)),
        antialias=bool(get(params, "env.antialias", path)),
    )


def report_run(name: str, call: Callable[[], dict], errors: tuple[type[BaseException], ...]) -> int:
    """Run a stage: print its metrics on success (exit 0), or ``name: error: ...`` (exit 2)."""
    try:
        metrics = call()
    except errors as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        return 2
    print(f"{name}: " + ", ".join(f"{k}={v:.6g}" for k, v in metrics.items()))
    return 0
