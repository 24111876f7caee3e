"""ReDRAW: sim-to-real transfer with a latent-state dynamics residual on a DRAW world model."""

import os

# Headless rendering: must be set before mujoco or dm_control first import their GL backend.
os.environ.setdefault("MUJOCO_GL", "egl")

__version__ = "0.1.0"
