"""Episode data: the rollouts that collect it and run a policy's evaluation episodes (``collect``),
the on-disk schema, npz I/O and import of external (real-robot) logs."""
