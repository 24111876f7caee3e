"""The agent on a CUDA device, as the paper preset trains it: skipped where torch sees no GPU.

What a GPU run relies on: every update runs there in bf16 autocast and stays finite, calibration
still trains only the residual, and a checkpoint written on the GPU is read back on the GPU
(resuming exactly) and on a CPU (collection, evaluation and deployment load policies there).
"""

import copy
from dataclasses import asdict

import numpy as np
import pytest
import torch

from redraw.agent.actor_critic import ActorCriticConfig
from redraw.agent.adapt import CalibrateConfig, Calibrator, dynamics_gap
from redraw.agent.agent import Agent, AgentConfig, load_agent
from redraw.agent.policy import PolicyStep
from redraw.checkpoint import save_checkpoint
from redraw.models.residual import ResidualConfig
from test_models import PIX, batch_for, tiny

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def gpu_agent(world_model="draw", exploration="task"):
    torch.manual_seed(0)
    cfg = AgentConfig(world_model=world_model, exploration=exploration, wm=tiny(), disagreement_heads=3,
                      ac=ActorCriticConfig(units=32, horizon=5), bf16=True)
    agent = Agent(PIX, 2, cfg, device="cuda")
    agent.seed(0)
    return agent


def obs(seed=0):
    rng = np.random.default_rng(seed)
    return {"image": rng.integers(0, 255, (64, 64, 3), dtype=np.uint8),
            "velocity": rng.standard_normal(2).astype(np.float32)}


@pytest.mark.parametrize("world_model,exploration", [("draw", "plan2explore"), ("rssm", "task")])
def test_updates_run_on_the_gpu_in_bf16_and_stay_finite(world_model, exploration):
    agent = gpu_agent(world_model, exploration)
    assert all(p.device.type == "cuda" for p in agent.parameters())
    before = copy.deepcopy(agent.state_dict())
    for seed in range(3):
        metrics = agent.train_step(batch_for(PIX, B=2, T=8, A=2, seed=seed))  # CPU batches, as the replay gives
        assert all(np.isfinite(v) for v in metrics.values()), metrics
    policy = agent.policy_step(batch_for(PIX, B=2, T=8, A=2, seed=9))
    assert all(np.isfinite(v) for v in policy.values()), policy
    changed = [k for k, v in agent.state_dict().items() if not torch.equal(v, before[k])]
    assert any(k.startswith("wm.") for k in changed) and any(k.startswith("ac.actor.") for k in changed)
    action, state = agent.act(obs())
    action, _ = agent.act(obs(1), state)
    assert action.shape == (2,) and np.all(np.abs(action) <= 1)


def test_calibration_on_the_gpu_trains_only_the_residual():
    agent = gpu_agent()
    frozen = copy.deepcopy(agent.wm.state_dict())
    cal = Calibrator(agent, "redraw", CalibrateConfig(), ResidualConfig(hidden=16, members=2))
    residual = copy.deepcopy(agent.wm.residual.state_dict())
    for seed in range(3):
        metrics = cal.step(batch_for(PIX, B=2, T=8, A=2, seed=seed))
        assert np.isfinite(metrics["loss/calib"])
    after = agent.wm.state_dict()
    for k, v in frozen.items():
        assert torch.equal(v, after[k]), k
    assert any(not torch.equal(v, after[f"residual.{k}"]) for k, v in residual.items())
    gap = dynamics_gap(agent, batch_for(PIX, B=2, T=8, A=2, seed=5), context=3, seed=0)
    assert len(gap["kl"]) == 5 and all(np.isfinite(gap["kl"])) and all(np.isfinite(gap["mse"]))


def test_a_gpu_checkpoint_resumes_on_the_gpu_and_loads_on_the_cpu(tmp_path):
    agent = gpu_agent()
    agent.train_step(batch_for(PIX, B=2, T=8, A=2))
    Calibrator(agent, "redraw", CalibrateConfig(), ResidualConfig(hidden=16)).step(batch_for(PIX, B=2, T=8, A=2))
    identity = {"obs_spec": {k: list(v[0]) for k, v in PIX.items()}, "action_size": 2, "world_model": "draw",
                "exploration": "task", "model": asdict(agent.cfg.wm), "actor_critic": asdict(agent.cfg.ac),
                "residual": asdict(agent.residual_cfg)}
    path = save_checkpoint(tmp_path / "agent.pt", {"agent": agent.checkpoint_state()}, identity)

    resumed = load_agent(path, device="cuda")
    assert torch.equal(resumed.generator.get_state(), agent.generator.get_state())
    sampled, _ = agent.act(obs())
    again, _ = resumed.act(obs())
    np.testing.assert_array_equal(sampled, again)

    cpu = load_agent(path, device="cpu")
    assert all(p.device.type == "cpu" for p in cpu.parameters())
    for k, v in agent.state_dict().items():
        assert torch.equal(v.cpu(), cpu.state_dict()[k]), k
    # the deployable policy step on the same inputs gives the same action on both devices
    g = torch.Generator().manual_seed(0)
    steps = {dev: PolicyStep(a) for dev, a in (("cuda", agent), ("cpu", cpu))}
    inputs = [torch.as_tensor(v)[None] for v in obs(2).values()]
    latent = torch.zeros(1, steps["cpu"].latent_size)
    rest = [latent, torch.zeros(1, 2), torch.ones(1), torch.rand(1, steps["cpu"].S, generator=g), torch.zeros(1, 2)]
    with torch.no_grad():
        on_gpu = steps["cuda"](*(x.cuda() for x in [*inputs, *rest]))
        on_cpu = steps["cpu"](*inputs, *rest)
    for x_gpu, x_cpu in zip(on_gpu, on_cpu):
        torch.testing.assert_close(x_gpu.cpu(), x_cpu, atol=1e-3, rtol=1e-3)
