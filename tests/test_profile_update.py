"""benchmarks/profile_update.py, where an update's time goes: it times the agent's own phases and
prints each with what is left of the update, then the operator table; bad arguments are refused
naming them."""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import profile_update  # noqa: E402


def test_one_updates_phases_and_top_operators_are_printed(capsys):
    assert profile_update.main(["--case", "quick preset", "--eager", "--iters", "1", "--top", "3",
                                "--set", "pretrain.imag_starts=16"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("quick preset: eager, ") and "imagination starts 16, horizon" in out
    whole = float(re.search(r"^whole update ([\d.]+) ms$", out, re.M)[1])
    phases = dict((label.strip(), float(ms)) for label, ms in
                  re.findall(r"^  (\S.*?)\s+(-?[\d.]+) ms\s+-?\d+%$", out, re.M))
    assert set(phases) == {"world-model loss (forward)", "imagination (all rollouts)", "actor-critic update",
                           "world-model backward + step, rest"}, out
    # every phase (the agent's methods it wraps) ran and took time, the rest included; none is the whole
    assert all(ms > 0 for ms in phases.values()) and max(phases.values()) < whole, phases
    assert "Self CPU" in out  # the operator table


def test_bad_arguments_are_refused_naming_them(capsys):
    with pytest.raises(SystemExit):
        profile_update.main(["--imagine-chunk", "-1"])
    assert "--imagine-chunk must be at least 1, got -1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        profile_update.main(["--case", "quick preset", "--set", "pretrain.imag_startz=16"])
    assert "pretrain.imag_startz" in capsys.readouterr().err
    # a key that one of the script's flags sets is refused, not silently overwritten by the flag's default
    with pytest.raises(SystemExit):
        profile_update.main(["--case", "quick preset", "--set", "perf.compile=false"])
    assert "--set perf.compile: use --eager" in capsys.readouterr().err
