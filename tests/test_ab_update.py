"""benchmarks/ab_update.py, two settings of the update timed update by update in one process: each
side trains with its own settings, the pairs' differences are summarised, and bad settings are
refused naming the side they came with."""

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

import ab_update  # noqa: E402


def test_each_side_trains_with_its_own_settings_and_the_pairs_are_summarised(capsys, monkeypatch):
    import train_speed

    built, steps = {}, {}
    real_build = train_speed.build

    def spy_build(case, **kwargs):  # which settings each side's agent was built with, and its updates
        agent, env, batch, pre = real_build(case, **kwargs)
        side = kwargs["flag"]
        built[side] = (agent.cfg.ac.horizon, kwargs["threads"])
        steps[side] = 0
        train = agent.train_step

        def counted(b):
            steps[side] += 1
            return train(b)

        agent.train_step = counted
        return agent, env, batch, pre

    monkeypatch.setattr(ab_update, "build", spy_build)
    assert ab_update.main(["--case", "quick preset", "--a", "actor_critic.horizon=3", "--b", "actor_critic.horizon=5",
                           "--b", "perf.threads=2", "--pairs", "3", "--warmup", "1", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert built == {"--a": (3, 1), "--b": (5, 2)}  # --threads' default 1 for A, B's own perf.threads
    assert steps == {"--a": 4, "--b": 4}  # one warm-up update and one per pair, each side
    result = json.loads(out[-1])
    assert result["pairs"] == 3 and result["a"] == {"actor_critic.horizon": 3}
    assert result["threads"] == {"A": 1, "B": 2}
    low, high = result["difference_ci_ms"]
    assert low <= result["difference_mean_ms"] <= high
    low, high = result["difference_median_ci_ms"]
    assert low <= result["difference_median_ms"] <= high
    assert result["a_over_b"] == pytest.approx(result["a_median_ms"] / result["b_median_ms"])
    assert out[0].startswith("A: actor_critic.horizon=3 (1 thread(s)): median ")


def test_bad_settings_are_refused_naming_the_side(capsys):
    for argv, said in ((["--b", "perf.compile"], "--b 'perf.compile': expected KEY=VALUE"),
                       (["--case", "quick preset", "--a", "perf.nope=1"], "--a: missing key 'perf.nope'"),
                       (["--case", "quick preset", "--b", "perf.compile=maybe"],
                        "the quick preset + --b: perf.compile must be true or false"),
                       (["--pairs", "1"], "--pairs must be at least 2")):
        with pytest.raises(SystemExit):
            ab_update.main(argv)
        assert said in capsys.readouterr().err, argv


def test_the_medians_interval_is_the_binomial_order_statistics():
    # the tables' ranks for a 95% interval of a median: 14 and 27 of 40, 2 and 9 of 10
    assert ab_update.median_interval([float(i) for i in range(40, 0, -1)]) == (14.0, 27.0)
    assert ab_update.median_interval(list(range(1, 11))) == (2, 9)
    # one outlier moves it by at most a rank; five values cannot reach 95%: the whole range
    assert ab_update.median_interval(list(range(1, 40)) + [10_000]) == (14, 27)
    assert ab_update.median_interval([3, 1, 2, 5, 4]) == (1, 5)
