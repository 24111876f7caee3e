"""This checkout's commit, as the benchmarks' records name the code they ran.

Shared by ``transfer_quality.py`` (the work dirs it prepares) and ``bc_reference.py`` (its records of
those work dirs), so that neither imports the other for it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commit(root: Path = ROOT) -> str:
    """The commit of the checkout at ``root`` (``+dirty`` with uncommitted changes to the code a
    work dir copies)."""
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "src", "dvc.yaml", "params.yaml", "envs.yaml",
                            "presets", "scripts"], cwd=root, capture_output=True, text=True).stdout.strip()
    return (out.stdout.strip() or "unknown") + ("+dirty" if dirty else "")
