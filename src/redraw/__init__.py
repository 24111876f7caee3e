"""ReDRAW: sim-to-real transfer with a latent-state dynamics residual on a DRAW world model."""

__version__ = "0.1.0"
