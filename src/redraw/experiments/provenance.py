"""The checkout the experiments run from, and its commit, as their records name the code they ran.

Shared by ``transfer_quality`` (the work dirs it prepares and the code it copies into them),
``bc_reference`` (its records of those work dirs) and the other experiments (their default
results files under ``benchmarks/results/``), so that none imports another for it.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

#: what the commit's ``+dirty`` looks at: the code and settings a work dir copies
CODE = ("src", "dvc.yaml", "params.yaml", "envs.yaml", "presets", "scripts")


def checkout_root() -> Path:
    """The checkout whose ``src/`` this package was imported from: the repository itself (an
    editable install), a work dir that copied ``src`` with its pipeline, or a sweep point's clone
    (``PYTHONPATH=<clone>/src``): the directory above ``src/`` wherever it holds a ``dvc.yaml``.
    An installed package has no checkout of its own; then the git repository of the working
    directory, else the working directory."""
    here = Path(__file__).resolve().parents[3]  # src/redraw/experiments/provenance.py
    if (here / "dvc.yaml").is_file() and (here / "src/redraw").is_dir():
        return here
    top = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True)
    return Path(top.stdout.strip()) if top.returncode == 0 and top.stdout.strip() else Path.cwd()


ROOT = checkout_root()


def commit(root: Path = ROOT, code: tuple[str, ...] = CODE) -> str:
    """The commit of the checkout at ``root`` (``+dirty`` with uncommitted changes to ``code``, by
    default the code and settings a work dir copies)."""
    out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True)
    dirty = subprocess.run(["git", "status", "--porcelain", "--", *code], cwd=root, capture_output=True,
                           text=True).stdout.strip()
    return (out.stdout.strip() or "unknown") + ("+dirty" if dirty else "")
