"""The evaluation protocol: what the policy stage may look at, reproducible target data, and the
pipeline's record of what each stage depends on."""

import numpy as np
import torch

from test_agent import agent


class RecordingEnv:
    """Records the seed of every reset; each episode is one step long."""

    action_size = 1

    def __init__(self):
        self.seeds = []

    def reset(self, seed=None):
        self.seeds.append(seed)
        return {"state": np.zeros(3, np.float32)}

    def step(self, action):
        return {"state": np.zeros(3, np.float32)}, 0.0, True, False


def test_the_learning_curve_never_runs_the_final_evaluations_episodes():
    """train_policy's eval_every curve selects nothing on the test set: its episodes (initial
    states and action noise) are not those of the evaluate stage, for the same seed."""
    from redraw.agent.dreamer import AgentPolicy
    from redraw.stages.evaluate import run_policy
    from redraw.stages.train_policy import evaluate_in_target

    final, curve = RecordingEnv(), RecordingEnv()
    a = agent()
    run_policy(final, AgentPolicy(a), 20, seed=0, progress=False)
    evaluate_in_target(a, curve, 20, seed=0)
    assert len(set(final.seeds)) == len(set(curve.seeds)) == 20
    assert not set(final.seeds) & set(curve.seeds)
    again = RecordingEnv()
    evaluate_in_target(a, again, 20, seed=0)
    assert again.seeds == curve.seeds  # its own seeds, and still seeded
