"""benchmarks/train_speed.py, the training-speed benchmark: what it reports is what it measured."""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import train_speed  # noqa: E402


@pytest.mark.slow
def test_the_speed_up_is_the_ratio_of_the_two_paths_medians(capsys):
    """One round of the quick preset (its default path uncompiled): both paths measured in their own
    process, and the speed-up line is their printed medians' ratio. Without the cpu preset there is
    no cpu-preset line."""
    assert train_speed.main(["--case", "quick preset", "--iters", "1", "--rounds", "1", "--env-steps", "8"]) == 0
    out = capsys.readouterr().out
    times = dict(re.findall(r"^\s+(eager|default)\s+([\d.]+) ms/update \(median\)", out, re.M))
    assert times.keys() == {"eager", "default"}, out
    line = out.strip().splitlines()[-1]
    match = re.fullmatch(r"\s*speed-up quick preset: (\d+\.\d\d)x", line)
    assert match, line
    assert float(match[1]) == pytest.approx(float(times["eager"]) / float(times["default"]), abs=0.011)
    assert "FLOP floor of the default path" in out and "speed-up cpu preset" not in out


def test_cases_are_checked_before_anything_runs(capsys):
    with pytest.raises(SystemExit):
        train_speed.main(["--case", "cpu presets"])
    assert "invalid choice: 'cpu presets'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_speed.main(["--quick", "--case", "paper size"])
    assert "--quick and --case: give one" in capsys.readouterr().err
