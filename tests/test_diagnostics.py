"""redraw.experiments.residual_diagnostics on the smoke pipeline's outputs: every figure, finite numbers."""

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIGURES = ("residual_size.png", "action_sensitivity.png", "action_response.png", "policy_rollouts_gap.png")


def leaves(tree, key=""):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from leaves(v, f"{key}.{k}")
    elif isinstance(tree, list):
        for i, v in enumerate(tree):
            yield from leaves(v, f"{key}[{i}]")
    else:
        yield key, tree


@pytest.mark.slow  # it needs the smoke pipeline's outputs (smoke_repo: ~2 min to make)
def test_residual_diagnostics_run_on_smoke_outputs(smoke_repo, tmp_path):
    out = tmp_path / "diag"
    proc = subprocess.run([sys.executable, "-m", "redraw.experiments.residual_diagnostics", str(smoke_repo.path),
                           "--out", str(out), "--episodes", "2", "--starts", "2", "--warmup", "10", "--context", "3",
                           "--horizon", "8"], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    for name in FIGURES:
        assert (out / name).stat().st_size > 1000, name
    summary = json.loads((out / "summary.json").read_text())
    assert {"source", "redraw", "draw_finetune", "oracle", "redraw_pessimistic"} <= set(summary["action_sensitivity"])
    assert {"redraw", "redraw_pessimistic"} <= set(summary["residual_size"])
    assert len(summary["residual_size"]["redraw"]["imagined_rms"]) == 8
    assert summary["residual_size"]["redraw_pessimistic"]["data_member_std"] > 0  # an ensemble disagrees somewhere
    assert set(summary["action_response"]) == {"policy", "reversed", "constant +1", "constant -1", "random"}
    assert len(summary["policy_rollouts_gap"]["redraw"]["kl"]) == 8
    # check 5 for the ensemble only (redraw's single residual has no disagreement to test)
    assert set(summary["disagreement_vs_error"]) == {"redraw_pessimistic"}
    check = summary["disagreement_vs_error"]["redraw_pessimistic"]
    for where in ("target data", "policy's episodes"):
        assert check[where]["transitions"] > 0 and check[where]["disagreement_mean"] > 0, where
        assert -1 <= check[where]["spearman"] <= 1, where
    assert len(check["pooled"]["decile_kl"]) == len(check["pooled"]["decile_disagreement"]) > 1
    assert len(check["imagined"]["disagreement_per_step"]) == 8 and check["imagined"]["disagreement_mean"] > 0
    assert (out / "disagreement_vs_error.png").stat().st_size > 1000
    rollouts = summary["member_rollouts"]["redraw_pessimistic"]
    assert set(rollouts) == {"target data", "policy's episodes", "imagined"}
    assert all(len(c["member_divergence"]) == 8 for c in rollouts.values())
    assert len(rollouts["target data"]["error_kl"]) == 8 and rollouts["imagined"]["starts"] > 0
    assert (out / "member_rollouts.png").stat().st_size > 1000
    numbers = [(k, v) for k, v in leaves(summary) if isinstance(v, (int, float)) and not isinstance(v, bool)]
    assert len(numbers) > 50
    assert all(math.isfinite(v) for _, v in numbers), [k for k, v in numbers if not math.isfinite(v)]
    # the only non-numbers are reward bins no state fell in
    assert all(k.startswith(".action_sensitivity") for k, v in leaves(summary) if v is None)

