"""Experiments: the drivers that measure results (returns, dynamics errors, paired comparisons) on
the pipeline's work directories, as opposed to the speed measurements in ``benchmarks/``.

Each experiment is a module of this package with ``main(argv=None) -> int``; ``redraw experiment
NAME [ARGS...]`` and ``python -m redraw.experiments.NAME [ARGS...]`` run the same ``main``, and the
Prefect sweep runs ``bc_reference`` the same way. Their records are merged into
``benchmarks/results/*.json``, which ``redraw report`` reads.

- ``transfer_quality``: every transfer method on the paper's env pairs, the quality benchmark
- ``bc_reference``: behaviour cloning without a world model on a finished work dir
- ``policy_variant``: the policy stage of a finished work dir trained again with other settings
- ``onpolicy_round``: one round of deploy, log and recalibrate
- ``rounds``: return vs round of the rounds loop with the stand-in robot
- ``adaptation_length``: held-out dynamics error vs adaptation updates
- ``dynamics_gap``: open-loop dynamics gap of any checkpoints on any episodes
- ``residual_diagnostics``: where a calibrated model is wrong off its data, and whether a policy exploits it
- ``policy_stage_control``: the policy stage alone in a frozen world model

``provenance`` is their shared helper (the checkout they run from and its commit), not an
experiment. ``EXPERIMENTS`` is the registry: every module here with a top-level ``main``, its
description the first paragraph of its own docstring. It is read from the source files without
importing them, so that ``redraw --help`` does not import torch.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass
from pathlib import Path

_HERE = Path(__file__).resolve().parent
_MAIN = re.compile(r"^def main\(", re.MULTILINE)


@dataclass(frozen=True)
class Experiment:
    name: str  #: what ``redraw experiment`` takes
    module: str  #: the module to import (``redraw.experiments.NAME``), whose ``main(argv)`` runs it
    description: str  #: the first paragraph of the module's docstring, on one line


def _docstring(source: str) -> str:
    """The module docstring of ``source``: its first token, read without parsing the whole file."""
    skip = (tokenize.ENCODING, tokenize.NL, tokenize.NEWLINE, tokenize.COMMENT)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in skip:
            continue
        return ast.literal_eval(token.string) if token.type == tokenize.STRING else ""
    return ""


def _summary(docstring: str) -> str:
    """The first paragraph of ``docstring`` as one line."""
    return " ".join(docstring.strip().split("\n\n")[0].split())


def _scan() -> dict[str, Experiment]:
    found = {}
    for path in sorted(_HERE.glob("*.py")):
        if path.stem.startswith("_"):
            continue
        source = path.read_text(encoding="utf-8")
        if _MAIN.search(source):
            found[path.stem] = Experiment(path.stem, f"{__name__}.{path.stem}", _summary(_docstring(source)))
    return found


#: name -> experiment, every module of this package with a top-level ``main``
EXPERIMENTS: dict[str, Experiment] = _scan()


def listing(width: int = 100) -> str:
    """The experiments, one line each (wrapped at ``width``): its name and its description."""
    import textwrap

    pad = max(map(len, EXPERIMENTS)) + 4
    return "\n".join(textwrap.fill(f"  {e.name:<{pad - 2}}{e.description}", width, subsequent_indent=" " * pad,
                                   break_on_hyphens=False, break_long_words=False)
                     for e in EXPERIMENTS.values())
