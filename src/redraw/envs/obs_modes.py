"""The observation modes every env offers, whichever simulator it runs in (``DMCEnv``, ``GymEnv``).

``pixels``: an ``image`` (H x W x 3 uint8) and a ``velocity`` vector; ``proprio``: one ``state`` vector.
"""

from __future__ import annotations

OBS_MODES = ("pixels", "proprio")


def check_obs_mode(obs_mode: str) -> None:
    """Refuse an observation mode that is not one of ``OBS_MODES``."""
    if obs_mode not in OBS_MODES:
        raise ValueError(f"obs_mode must be one of {OBS_MODES}, got {obs_mode!r}")
