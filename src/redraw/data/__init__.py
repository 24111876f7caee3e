"""Episode data: the on-disk schema, npz I/O and import of external (real-robot) logs."""
