"""The evaluation's summary of returns: mean, sample std and the 95% Student-t interval of the mean."""

import math
import subprocess
import sys

import numpy as np
import pytest

from redraw.stats import paired, summarise


def test_the_interval_is_the_textbook_student_t_interval():
    s = summarise([1.0, 2.0, 3.0, 4.0, 5.0])
    half = 2.776445 * math.sqrt(2.5) / math.sqrt(5)  # t(0.975, 4 dof) from a table, sample std sqrt(2.5)
    assert s["return_mean"] == 3.0 and s["return_std"] == pytest.approx(math.sqrt(2.5), rel=1e-12)
    assert (s["return_ci_low"], s["return_ci_high"]) == pytest.approx((3.0 - half, 3.0 + half), rel=1e-6)
    assert s["episodes"] == 5
    # 100 episodes (the paper's evaluation): t(0.975, 99 dof) = 1.984217
    r = [float(i % 7) for i in range(100)]
    s = summarise(r)
    std = float(np.std(r, ddof=1))
    assert s["return_ci_high"] - s["return_mean"] == pytest.approx(1.984217 * std / 10, rel=1e-6)
    one = summarise([4.0])  # one episode: no spread, no interval
    assert one["return_ci_low"] == one["return_ci_high"] == 4.0 and one["return_std"] == 0.0


def test_paired_summaries_take_the_common_episodes_and_their_differences():
    out = paired([1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0])
    assert out["before"]["episodes"] == out["after"]["episodes"] == 3
    assert out["difference"]["return_mean"] == 2.0


def test_summarising_does_not_import_scipy_stats():
    """scipy.stats took 0.85 s to import here, paid by every evaluation stage and deployment check."""
    code = "import sys; from redraw.stats import summarise; summarise([1.0, 2.0]); print('scipy.stats' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "False"
