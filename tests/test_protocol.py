"""The evaluation protocol: what the policy stage may look at, reproducible target data, and the
pipeline's record of what each stage depends on."""

import numpy as np
import pytest
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
    from redraw.agent.agent import AgentPolicy
    from redraw.data.collect import run_policy
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
    later = RecordingEnv()
    evaluate_in_target(a, later, 20, seed=0, point=1)  # the curve's next point: episodes of its own
    assert len(set(later.seeds)) == 20 and not set(later.seeds) & (set(curve.seeds) | set(final.seeds))


def test_pretrainings_curve_runs_new_episodes_at_each_point_and_leaves_the_training_stream_alone():
    """The pretraining's evaluations (the learnt-its-task verdict reads the last) run episodes of
    their own stream, new ones at each point, never the test episodes; the agent's random stream,
    which the training draws from, is the same after an evaluation as before it."""
    from redraw.agent.agent import AgentPolicy
    from redraw.data.collect import run_policy
    from redraw.stages.pretrain import evaluate

    final, first, second = RecordingEnv(), RecordingEnv(), RecordingEnv()
    a = agent()
    run_policy(final, AgentPolicy(a), 10, seed=0, progress=False)
    state = a.generator.get_state()
    out = evaluate(a, first, 5, seed=0)
    assert torch.equal(a.generator.get_state(), state) and out["episodes"] == 5
    evaluate(a, second, 10, seed=0, first=5)
    assert len(set(first.seeds)) == 5 and len(set(second.seeds)) == 10
    assert not set(first.seeds) & set(second.seeds) and not (set(first.seeds) | set(second.seeds)) & set(final.seeds)
    again = RecordingEnv()
    evaluate(a, again, 5, seed=0)
    assert again.seeds == first.seeds


def save_agent(a, path, **identity):
    """Save agent ``a`` (for pendulum's proprio observations) as the training stages do."""
    from dataclasses import asdict

    from redraw.checkpoint import save_checkpoint

    ident = {"env": "pendulum-swingup-reversed", "obs_mode": "proprio", "obs_spec": {"state": [3]},
             "action_size": 1, "world_model": a.cfg.world_model, "exploration": a.cfg.exploration,
             "model": asdict(a.cfg.wm), "actor_critic": asdict(a.cfg.ac), **identity}
    save_checkpoint(path, {"agent": a.checkpoint_state()}, ident)
    return path


def save_policy(path):
    """A small (untrained) agent whose sampled actions vary from step to step."""
    a = agent()
    with torch.no_grad():
        a.ac.actor.net[-1].bias.fill_(0.0)
    return save_agent(a, path)


def test_expert_target_data_are_the_same_whatever_the_number_of_collection_workers(tmp_path):
    """collect.workers does not change the data (params.yaml, data/collect.py), also when a
    trained agent is the behaviour (the paper's expert data): each episode's actions come from
    its own seed, not from the episodes the same worker collected before it."""
    from redraw.data.behaviours import BehaviourConfig
    from redraw.data.collect import CollectConfig, collect
    from redraw.data.episodes import list_episodes, load_episode

    ckpt = str(save_policy(tmp_path / "expert.pt"))

    def run(name, workers, seed=7):
        collect(CollectConfig(env="pendulum-swingup-reversed", out_dir=str(tmp_path / name), obs_mode="proprio",
                              episodes=4, episode_steps=15, workers=workers, seed=seed,
                              behaviour=BehaviourConfig(kind="policy", checkpoint=ckpt)), progress=False)
        return [load_episode(f) for f in list_episodes(tmp_path / name)]

    one, two, other = run("one", 1), run("two", 2), run("other", 1, seed=8)
    for i, (a, b) in enumerate(zip(one, two)):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=f"episode {i}: {key}")
    assert not any(np.array_equal(a["action"], c["action"]) for a, c in zip(one, other))
    assert not np.array_equal(one[0]["action"], one[1]["action"])
    # which worker collects which episodes, in which order, is up to the pool (a worker that starts
    # first may take them all): a worker that collects them in another order makes the same files
    from redraw.data import collect as collect_module

    cfg = CollectConfig(env="pendulum-swingup-reversed", out_dir=str(tmp_path / "unused"), obs_mode="proprio",
                        episodes=4, episode_steps=15, workers=1, seed=7,
                        behaviour=BehaviourConfig(kind="policy", checkpoint=ckpt))
    (tmp_path / "shuffled").mkdir()
    collect_module._init_worker(cfg, str(tmp_path / "shuffled"))
    try:
        for index in (3, 1, 0, 2):
            collect_module._collect_one(index)
    finally:
        collect_module._close_worker()
    shuffled = [load_episode(f) for f in list_episodes(tmp_path / "shuffled")]
    for i, (a, b) in enumerate(zip(one, shuffled)):
        np.testing.assert_array_equal(a["action"], b["action"], err_msg=f"episode {i}")


def test_each_stage_depends_on_the_code_that_computes_its_outputs():
    """DVC reruns a stage only when a dep changes: code a stage runs but does not declare leaves
    stale results that look current."""
    from pathlib import Path

    import yaml

    stages = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["stages"]
    needs = {
        # eval_every's learning curve: the target env, the evaluation loop and its episodes
        "train_policy": ["src/redraw/envs", "src/redraw/data/collect.py"],
        # the evaluation loop (data/collect.py's run_policy) runs its episodes with run_episode
        "evaluate": ["src/redraw/data/collect.py", "src/redraw/envs", "src/redraw/agent"],
        # the expert behind the paper's target data acts through the agent's code
        "collect_target": ["src/redraw/agent", "src/redraw/models", "src/redraw/data/behaviours.py"],
    }
    for stage, paths in needs.items():
        deps = stages[stage].get("do", stages[stage])["deps"]
        missing = [p for p in paths if p not in deps]
        assert not missing, f"dvc.yaml stage {stage} lacks deps {missing}"


# -- the policy stage on a calibrated model (a synthetic target data set, no MLflow) ------------------
class NoTracking:
    def __init__(self, *args, **kwargs):
        pass

    def log_metrics(self, *args, **kwargs):
        pass

    def log_artifacts(self, *args, **kwargs):
        pass

    def end(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def policy_stage_setup(tmp_path, monkeypatch, method, exploration="task"):
    """A working directory with validated target data and a calibrated ``method`` model whose
    actor-critic is recognisable (pretrained with ``exploration``); returns the params and the
    calibrated model's state."""
    import json
    from pathlib import Path

    from redraw.config import load_params
    from redraw.data.episodes import dataset_fingerprint
    from redraw.models.residual import ResidualConfig
    from redraw.stages import train_policy
    from synthetic import make_dataset

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(train_policy, "StageRun", NoTracking)
    make_dataset("data/target", episodes=3, steps=40)
    fingerprint = dataset_fingerprint("data/target")
    Path("reports/validation").mkdir(parents=True)
    Path("reports/validation/result.json").write_text(json.dumps(
        {"data_dir": "data/target", "success": True, "data_fingerprint": fingerprint}))
    a = agent(world_model="rssm" if method == "dreamer_finetune" else "draw", exploration=exploration)
    residual = None
    if method == "redraw":
        residual = ResidualConfig(hidden=16)
        a.attach_residual(residual)
        torch.nn.init.normal_(a.wm.residual.nets[0][-1].bias, std=2.0)
    with torch.no_grad():  # a pretrained actor-critic, unlike a fresh one (its critic's output is not zero)
        for p in a.ac.parameters():
            p.add_(0.1)
    from dataclasses import asdict

    save_agent(a, Path("models/calibrate") / method / "agent.pt", method=method, target_data=fingerprint,
               target_env="pendulum-swingup-reversed", residual=asdict(residual) if residual else None)
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    params.update(seed=0, target_data="data/target", target_transitions=0)
    params["env"]["target"] = "pendulum-swingup-reversed"
    params["calibrate"]["holdout_episodes"] = 1
    params["train_policy"].update(updates=3, batch_size=2, batch_length=16, imag_starts=8, lr=0.001, log_every=1,
                                  eval_every=0)
    return params, {k: v.clone() for k, v in a.state_dict().items()}


def model_state(path):
    return torch.load(path, weights_only=True)["state"]["agent"]["model"]


@pytest.mark.parametrize("method, exploration", [("redraw", "task"), ("draw_finetune", "task"),
                                                 ("dreamer_finetune", "task"), ("redraw", "plan2explore"),
                                                 ("draw_finetune", "plan2explore")])
def test_the_policy_stage_trains_only_the_actor_critic_reinitialised_for_redraw_alone(tmp_path, monkeypatch,
                                                                                    method, exploration):
    """Also from a Plan2Explore pretraining (the paper's): the task actor-critic trains, the
    explorer and its ensemble leave the stage as they came."""
    from redraw.stages import train_policy

    params, calibrated = policy_stage_setup(tmp_path, monkeypatch, method, exploration)
    assert any(k.startswith("explorer.") for k in calibrated) == (exploration == "plan2explore")
    made = {}
    real = train_policy.policy_stage_agent

    def capture(*args, **kwargs):
        made["agent"] = real(*args, **kwargs)
        made["start"] = {k: v.clone() for k, v in made["agent"].state_dict().items() if k.startswith("ac.")}
        return made["agent"]

    monkeypatch.setattr(train_policy, "policy_stage_agent", capture)
    train_policy.run(method, params, progress=False)
    trained = model_state(tmp_path / "models/policy" / method / "agent.pt")
    assert trained.keys() == calibrated.keys()
    # the world model (with the residual, for redraw) leaves the stage bit-identical
    for k, v in calibrated.items():
        if not k.startswith("ac."):
            assert torch.equal(v, trained[k]), f"{k} changed in the policy stage"
    assert any(k.startswith("wm.residual.") for k in trained) == (method == "redraw")
    # ReDRAW starts from a fresh actor-critic, the finetunes from the pretrained one; all train it
    start = made["start"]
    fresh = not any(torch.equal(start[k], calibrated[k]) for k in start if not k.startswith("ac.bins"))
    kept = all(torch.equal(start[k], calibrated[k]) for k in start)
    assert (fresh, kept) == ((True, False) if method == "redraw" else (False, True))
    if method == "redraw":
        last = max((k for k in start if k.startswith("ac.critic.net.") and k.endswith(".weight")),
                   key=lambda k: int(k.split(".")[3]))
        assert not start[last].any()  # a fresh critic's output layer is zero
    assert any(not torch.equal(start[k], trained[k]) for k in start)


def test_redraws_policy_stage_imagines_under_the_corrected_dynamics(tmp_path, monkeypatch):
    """Imagination in the policy stage steps through the residual (not only the filtering)."""
    from redraw.models.draw import DRAW
    from redraw.stages import train_policy

    params, calibrated = policy_stage_setup(tmp_path, monkeypatch, "redraw")
    calls, inside = [], []
    real_imagine = DRAW.imagine

    def imagine(self, *args, **kwargs):
        inside.append(True)
        try:
            return real_imagine(self, *args, **kwargs)
        finally:
            inside.pop()

    monkeypatch.setattr(DRAW, "imagine", imagine)
    real = train_policy.policy_stage_agent

    def capture(*args, **kwargs):
        a = real(*args, **kwargs)
        for k, v in a.wm.residual.state_dict().items():
            assert torch.equal(v, calibrated[f"wm.residual.{k}"]), k  # the calibrated residual itself
        a.wm.residual.register_forward_hook(lambda *_: calls.append(bool(inside)))
        return a

    monkeypatch.setattr(train_policy, "policy_stage_agent", capture)
    train_policy.run("redraw", params, progress=False)
    horizon = agent().cfg.ac.horizon
    assert calls.count(True) == 3 * horizon  # every imagined step of each of the 3 updates


@pytest.mark.parametrize("method", ["redraw", "draw_finetune", "dreamer_finetune"])
def test_calibration_never_fits_the_target_rewards(method):
    """Target rewards never train anything (docs/method.md#train-the-policy): a robot's logs with
    reward 0 calibrate the same model as the simulator's rewards, and the policy stage's rewards
    are still the source reward head's.

    For the DRAW methods this holds by construction: the reward head reads the posterior sample,
    and what they train (the prior, the residual) is not upstream of it, so no reward loss could
    reach it. ``dreamer_finetune`` trains the RSSM's posterior and recurrent state, which the
    reward head reads: there only leaving the reward term out keeps the rewards out."""
    import copy

    from redraw.agent.adapt import CalibrateConfig, Calibrator
    from redraw.models.dists import twohot_loss
    from redraw.models.residual import ResidualConfig
    from test_models import SPEC, batch_for

    batch = batch_for(SPEC, B=2, T=6)
    logged = {"zero (a robot's logs)": torch.zeros(2, 6),
              "simulated": torch.rand(2, 6, generator=torch.Generator().manual_seed(1)) * 10}
    runs = {}
    for name, reward in logged.items():
        a = agent(world_model="rssm" if method == "dreamer_finetune" else "draw")
        with torch.no_grad():  # a pretrained reward head (a zero-initialised one predicts 0 everywhere)
            for p in a.wm.reward_head.parameters():
                p.normal_(0.0, 0.5, generator=torch.Generator().manual_seed(9))
        cal = Calibrator(a, method, CalibrateConfig(), ResidualConfig(hidden=16))
        pretrained = copy.deepcopy(a.state_dict())  # with redraw's fresh residual
        data = {**batch, "reward": reward}
        # could a reward loss reach what the method trains? only through dreamer_finetune's posterior
        out = a.wm.observe({"state": data["state"]}, data["action"], data["is_first"], generator=a.generator)
        reward_loss = twohot_loss(a.wm.reward_head(out["feat"]), data["reward"], a.wm.bins).mean()
        grads = (torch.autograd.grad(reward_loss, cal.params, allow_unused=True) if reward_loss.requires_grad
                 else [None] * len(cal.params))
        reaches = any(g is not None and g.abs().sum() > 0 for g in grads)
        assert reaches == (method == "dreamer_finetune"), f"a reward loss reaches {method}'s trainable part"
        for _ in range(3):
            metrics = cal.step(data)
        assert "loss/reward" not in metrics
        after = a.state_dict()
        moved = {k for k in after if not torch.equal(after[k], pretrained[k])}
        assert moved, "calibration trained nothing: the comparison below would prove nothing"
        assert not any(k.startswith("wm.reward_head.") for k in moved), "the source reward head moved"
        # the rewards the policy stage imagines with: the source head's, not zero where the logs are
        imagined = a.wm.reward(out["feat"].detach())
        assert imagined.abs().max() > 0.1
        runs[name] = (metrics["loss/calib"], after)
    (loss_zero, zero), (loss_sim, simulated) = runs.values()
    assert loss_zero == loss_sim
    for k, v in zero.items():
        assert torch.equal(v, simulated[k]), k


# -- calibration: held-out error vs updates, and early stopping on it --------------------------------
def calibrate_setup(tmp_path, monkeypatch, **calibrate):
    """A working directory with validated target data and a pretrained DRAW model; the params."""
    import json
    from pathlib import Path

    from redraw.config import load_params
    from redraw.data.episodes import dataset_fingerprint
    from redraw.stages import calibrate as stage
    from synthetic import make_dataset

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(stage, "StageRun", NoTracking)
    make_dataset("data/target", episodes=4, steps=40)
    Path("reports/validation").mkdir(parents=True)
    Path("reports/validation/result.json").write_text(json.dumps(
        {"data_dir": "data/target", "success": True, "data_fingerprint": dataset_fingerprint("data/target")}))
    torch.manual_seed(0)
    save_agent(agent(), Path("models/pretrain/agent.pt"))
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    params.update(seed=0, target_data="data/target", target_transitions=0)
    params["env"]["target"] = "pendulum-swingup-reversed"
    params["calibrate"].update(updates=12, batch_size=2, batch_length=16, holdout_episodes=1, gap_context=3,
                               gap_horizon=8, log_every=4, **calibrate)
    params["calibrate"]["residual"]["hidden"] = 16
    return params


def calibrated(method="redraw"):
    from pathlib import Path

    return model_state(Path("models/calibrate") / method / "agent.pt")


@pytest.mark.parametrize("method", ["redraw", "draw_finetune"])
def test_the_held_out_curve_changes_nothing_and_early_stopping_keeps_its_best_point(tmp_path, monkeypatch, method):
    import json
    from pathlib import Path

    from redraw.stages import calibrate as stage

    params = calibrate_setup(tmp_path, monkeypatch, gap_every=0)
    stage.run(method, params, progress=False)
    plain = calibrated(method)
    points = json.loads(Path(f"reports/calibrate/{method}_heldout.json").read_text())
    assert [p["update"] for p in points] == [0, 12]  # before and after only

    params["calibrate"]["gap_every"] = 3
    metrics = stage.run(method, params, progress=False)
    measured = calibrated(method)
    assert all(torch.equal(plain[k], measured[k]) for k in plain)  # measuring draws from its own generator
    points = json.loads(Path(f"reports/calibrate/{method}_heldout.json").read_text())
    assert [p["update"] for p in points] == [0, 3, 6, 9, 12] and metrics["calib/kept_update"] == 12
    assert points[-1]["kl_open_loop"] == pytest.approx(metrics["gap/kl_h8_adapted"])
    assert Path(f"reports/calibrate/{method}_figures/heldout_vs_updates.png").is_file()

    # early stopping keeps the weights of the best measured point: here update 6 (the measurement
    # made to say so), whose weights are those of a 6-update calibration
    params["calibrate"].update(updates=6, gap_every=0)
    stage.run(method, params, progress=False)
    six = calibrated(method)
    real = stage.heldout_point
    monkeypatch.setattr(stage, "heldout_point", lambda update, gap: {**real(update, gap),
                                                                     "kl_open_loop": abs(update - 6) + 0.5})
    params["calibrate"].update(updates=12, gap_every=3, early_stop=True)
    metrics = stage.run(method, params, progress=False)
    assert metrics["calib/kept_update"] == 6
    kept = calibrated(method)
    assert all(torch.equal(six[k], kept[k]) for k in six) and any(not torch.equal(plain[k], kept[k]) for k in plain)


@pytest.mark.parametrize("setting, message", [
    ({"gap_every": -1}, "calibrate.gap_every must be >= 0"),
    ({"checkpoint_every": 0}, "calibrate.checkpoint_every must be at least 1, got 0"),
    ({"gap_every": 0, "early_stop": True}, "calibrate.early_stop needs calibrate.gap_every > 0"),
])
def test_bad_held_out_settings_are_refused_naming_the_key(tmp_path, monkeypatch, setting, message):
    from redraw.config import ConfigError
    from redraw.stages import calibrate as stage

    params = calibrate_setup(tmp_path, monkeypatch, **setting)
    with pytest.raises(ConfigError, match=f"params.yaml: {message}"):
        stage.run("redraw", params, progress=False)
    assert not (tmp_path / "models/calibrate").exists()


@pytest.mark.parametrize("method", ["redraw", "draw_finetune", "dreamer_finetune"])
def test_the_concurrent_schedule_trains_the_calibrated_part_beside_the_policy_and_nothing_else(tmp_path, monkeypatch,
                                                                                          method):
    """train_policy.adapt: the residual (or the finetuned parts) goes on training on the target
    batches; every other world-model weight stays as calibrated; without it all of them stay."""
    import json
    from pathlib import Path

    from redraw.agent.adapt import Calibrator
    from redraw.stages import train_policy

    params, calibrated_state = policy_stage_setup(tmp_path, monkeypatch, method)
    probe = load_agent_for(method)
    trainable = {n for n, p in probe.named_parameters() if p.requires_grad}
    assert trainable and all(not n.startswith("ac.") for n in trainable)

    train_policy.run(method, params, progress=False)
    frozen = model_state("models/policy/" + method + "/agent.pt")
    assert all(torch.equal(frozen[k], calibrated_state[k]) for k in calibrated_state if not k.startswith("ac."))

    params["train_policy"]["adapt"] = True
    params["calibrate"]["gap_every"] = 1
    metrics = train_policy.run(method, params, progress=False)
    adapted = model_state("models/policy/" + method + "/agent.pt")
    wm_keys = [k for k in calibrated_state if not k.startswith("ac.")]
    moved = {k for k in wm_keys if not torch.equal(adapted[k], calibrated_state[k])}
    assert moved and moved <= trainable, moved - trainable
    points = json.loads(Path(f"reports/train_policy/{method}_heldout.json").read_text())
    assert [p["update"] for p in points] == [0, 1, 2, 3] and "heldout/kl_open_loop" in metrics
    assert "loss/calib" in metrics


def load_agent_for(method):
    """The calibrated agent of policy_stage_setup with the parts ``method``'s calibration trains
    marked trainable (what the concurrent schedule may move)."""
    from redraw.agent.adapt import CalibrateConfig, Calibrator
    from redraw.agent.agent import load_agent

    a = load_agent(f"models/calibrate/{method}/agent.pt")
    Calibrator(a, method, CalibrateConfig(), None, resume=True)
    return a


def test_imag_unimix_mixes_the_corrected_prior_of_the_policy_stage_only(tmp_path, monkeypatch):
    """train_policy.imag_unimix: the residual-corrected prior gets the uniform mix back in the
    policy stage (a control); 0 keeps the paper's unmixed prior; a model without a residual is
    refused, naming the key."""
    from redraw.config import ConfigError
    from redraw.models.dists import latent_logprobs
    from redraw.models.draw import LatentState
    from redraw.stages import train_policy

    params, _ = policy_stage_setup(tmp_path, monkeypatch, "redraw")
    made = {}
    real = train_policy.policy_stage_agent
    monkeypatch.setattr(train_policy, "policy_stage_agent", lambda *a, **k: made.setdefault("agent", real(*a, **k)))
    params["train_policy"]["imag_unimix"] = 0.01
    train_policy.run("redraw", params, progress=False)
    wm = made["agent"].wm
    assert wm.residual_unimix == 0.01
    g = torch.Generator().manual_seed(0)
    S, K = wm.cfg.latent_vars, wm.cfg.latent_classes
    z = torch.nn.functional.one_hot(torch.randint(0, K, (4, S), generator=g), K).float()
    prev, action = LatentState(torch.full((4, S, K), 1.0 / K), z), torch.rand(4, 1, generator=g) * 2 - 1
    raw, logp = wm.dynamics_step(action, prev)
    assert torch.allclose(logp, latent_logprobs(raw, 0.01)) and logp.exp().min() >= 0.01 / K - 1e-6
    wm.residual_unimix = 0.0
    assert torch.allclose(wm.dynamics_step(action, prev)[1], latent_logprobs(raw, 0.0))

    monkeypatch.setattr(train_policy, "policy_stage_agent", real)
    (tmp_path / "ft").mkdir()
    params, _ = policy_stage_setup(tmp_path / "ft", monkeypatch, "draw_finetune")
    params["train_policy"]["imag_unimix"] = 0.01
    with pytest.raises(ConfigError, match="params.yaml: train_policy.imag_unimix .* draw_finetune has no residual"):
        train_policy.run("draw_finetune", params, progress=False)
    params["train_policy"]["imag_unimix"] = 1.0
    with pytest.raises(ConfigError, match=r"train_policy.imag_unimix must be in \[0, 1\)"):
        train_policy.run("draw_finetune", params, progress=False)


def test_behaviour_cloning_adds_its_weighted_gradient_to_the_actor_alone():
    """ActorCritic.update's clone term: the actor's gradient grows by exactly weight x the gradient
    of the masked negative log-likelihood of the recorded actions; the critic's is unchanged."""
    import copy

    a = agent()
    g = torch.Generator().manual_seed(3)
    H, N, F = a.cfg.ac.horizon, 6, a.wm.feat_dim
    traj = {"feat": torch.randn(H + 1, N, F, generator=g), "action": torch.rand(H, N, 1, generator=g) * 2 - 1,
            "reward": torch.randn(H, N, generator=g), "cont": torch.ones(H, N)}
    feat, act = torch.randn(2, 5, F, generator=g), torch.rand(2, 5, 1, generator=g) * 2 - 1
    mask = torch.tensor([[False, True, True, True, True], [True, True, False, True, True]])
    grads = {}
    for name, clone in (("rl", None), ("bc", (0.5, feat, act, mask))):
        ac = copy.deepcopy(a.ac)
        ac.actor_opt.step = ac.critic_opt.step = lambda: None  # keep the gradients, change nothing
        metrics = ac.update(traj, clone)
        grads[name] = {k: p.grad.clone() for k, p in ac.named_parameters() if p.grad is not None}
        if clone is not None:
            nll = -(ac.actor.dist(feat[mask]).log_prob(act[mask]).sum(-1)).mean()
            assert torch.allclose(metrics["loss/bc"], nll)
            ac.zero_grad()
            nll.backward()
            bc_grad = {k: p.grad.clone() for k, p in ac.actor.named_parameters()}
    assert grads["bc"].keys() == grads["rl"].keys()
    for k, v in grads["rl"].items():
        if k.startswith("critic."):
            assert torch.equal(v, grads["bc"][k]), k
    clipped = max(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(v) for k, v in grads[n].items()
                                                               if k.startswith("actor.")]))) for n in grads)
    assert clipped < a.cfg.ac.grad_clip  # so the comparison is not hidden by the clip
    for k, v in bc_grad.items():
        assert torch.allclose(grads["bc"][f"actor.{k}"], grads["rl"][f"actor.{k}"] + 0.5 * v, atol=1e-6), k


def test_the_policy_stage_clones_the_data_actions_from_their_own_posterior_states(tmp_path, monkeypatch):
    """train_policy.bc_weight: the actor is fitted to the action taken *from* each posterior state
    (recorded one row later), never across a chunk's start; a negative weight is refused naming
    the key."""
    from redraw.agent.actor_critic import ActorCritic
    from redraw.config import ConfigError
    from redraw.stages import train_policy

    import json

    params, _ = policy_stage_setup(tmp_path, monkeypatch, "redraw")
    seen, batches = [], []
    real = ActorCritic.bc_loss
    monkeypatch.setattr(ActorCritic, "bc_loss", lambda self, f, act, m: seen.append((f, act, m)) or real(self, f, act, m))
    sample = train_policy.Replay.sample
    monkeypatch.setattr(train_policy.Replay, "sample", lambda self, *a, **k: batches.append(sample(self, *a, **k))
                        or batches[-1])
    params["train_policy"].update(bc_weight=2.0, updates=2)
    train_policy.run("redraw", params, progress=False)
    assert len(seen) == len(batches) == 2
    for (feat, act, mask), batch in zip(seen, batches):
        B, T = params["train_policy"]["batch_size"], params["train_policy"]["batch_length"]
        assert feat.shape[:2] == (B, T - 1) and not feat.requires_grad
        assert torch.equal(act, torch.as_tensor(batch["action"])[:, 1:])
        assert torch.equal(mask, ~torch.as_tensor(batch["is_first"])[:, 1:].bool())
    history = json.loads(open("reports/train_policy/redraw_history.json").read())
    assert all(np.isfinite(h["loss/bc"]) for h in history)

    params["train_policy"]["bc_weight"] = -1.0
    with pytest.raises(ConfigError, match=r"params.yaml: train_policy.bc_weight must be >= 0"):
        train_policy.run("redraw", params, progress=False)


@pytest.mark.parametrize("method, expected", [("redraw", 5), ("draw_finetune", 8)])
def test_residual_methods_imagine_from_their_own_number_of_starts(tmp_path, monkeypatch, method, expected):
    """train_policy.residual_imag_starts (the reference: ReDRAW from a third of the batch's
    posterior states, the baselines from all) applies to the residual methods only."""
    from redraw.stages import train_policy

    params, _ = policy_stage_setup(tmp_path, monkeypatch, method)
    params["train_policy"].update(imag_starts=8, residual_imag_starts=5, updates=1)
    made = {}
    real = train_policy.policy_stage_agent
    monkeypatch.setattr(train_policy, "policy_stage_agent", lambda *a, **k: made.setdefault("agent", real(*a, **k)))
    train_policy.run(method, params, progress=False)
    assert made["agent"].cfg.imag_starts == expected


def test_a_stopped_policy_run_resumes_from_its_checkpoint_to_the_same_policy(tmp_path, monkeypatch, capsys):
    """train_policy.checkpoint_every: a run stopped after a checkpoint restarts there (actor-critic,
    optimisers, the concurrent schedule's residual and optimiser, random streams, curves) and ends
    with the policy and reports of a run never stopped; another calibrated model starts afresh."""
    import json
    import shutil
    from pathlib import Path

    from redraw.agent.agent import Agent
    from redraw.checkpoint import load_checkpoint
    from redraw.stages import train_policy

    params, _ = policy_stage_setup(tmp_path, monkeypatch, "redraw")
    params["train_policy"].update(updates=5, checkpoint_every=2, adapt=True)
    params["calibrate"]["gap_every"] = 2

    def outputs():
        reports = {name: json.loads(Path(f"reports/train_policy/redraw_{name}.json").read_text())
                   for name in ("history", "heldout")}
        return model_state("models/policy/redraw/agent.pt"), reports

    monkeypatch.setenv("REDRAW_CHECKPOINTS", str(tmp_path / "reference"))
    reference = train_policy.run("redraw", params, progress=False)
    ref_state, ref_reports = outputs()
    shutil.rmtree("models/policy")
    shutil.rmtree("reports/train_policy")

    monkeypatch.setenv("REDRAW_CHECKPOINTS", str(tmp_path / "stopped"))
    real_step, calls = Agent.policy_step, []

    def stop_in_the_fourth_update(self, batch):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(Agent, "policy_step", stop_in_the_fourth_update)
    with pytest.raises(KeyboardInterrupt):
        train_policy.run("redraw", params, progress=False)
    assert not Path("models/policy/redraw/agent.pt").exists()
    [ckpt] = (tmp_path / "stopped").glob("policy-redraw-*/checkpoint.pt")
    assert load_checkpoint(ckpt)["update"] == 2

    monkeypatch.setattr(Agent, "policy_step", real_step)
    capsys.readouterr()
    resumed = train_policy.run("redraw", params, progress=False)
    assert "resuming" in capsys.readouterr().out and load_checkpoint(ckpt)["update"] == 5
    state, reports = outputs()
    assert reports == ref_reports
    assert state.keys() == ref_state.keys() and all(torch.equal(state[k], ref_state[k]) for k in state)
    assert {k: v for k, v in resumed.items() if k != "policy/seconds"} == \
        {k: v for k, v in reference.items() if k != "policy/seconds"}

    # another calibrated model (a re-run calibrate@redraw) never resumes this run's checkpoint
    blob = torch.load("models/calibrate/redraw/agent.pt", weights_only=True)
    blob["state"]["agent"]["model"]["ac.critic.net.0.weight"] += 1.0
    torch.save(blob, "models/calibrate/redraw/agent.pt")
    train_policy.run("redraw", params, progress=False)
    assert "resuming" not in capsys.readouterr().out
    assert len(list((tmp_path / "stopped").glob("policy-redraw-*/checkpoint.pt"))) == 2


@pytest.mark.parametrize("method", ["redraw", "draw_finetune"])
def test_a_stopped_calibration_resumes_from_its_checkpoint_to_the_same_model(tmp_path, monkeypatch, capsys, method):
    """calibrate.checkpoint_every: a calibration stopped after a checkpoint restarts there (the
    trained part, its optimiser, the random streams, the held-out curve and early stopping's best
    point so far) and ends with the model and reports of one never stopped."""
    import json
    import shutil
    from pathlib import Path

    from redraw.agent.adapt import Calibrator
    from redraw.checkpoint import load_checkpoint
    from redraw.stages import calibrate as stage

    params = calibrate_setup(tmp_path, monkeypatch, gap_every=3, early_stop=True, checkpoint_every=4)
    real_point = stage.heldout_point  # the best held-out point is update 6, before the stop
    monkeypatch.setattr(stage, "heldout_point", lambda update, gap: {**real_point(update, gap),
                                                                     "kl_open_loop": abs(update - 6) + 0.5})

    def outputs():
        return calibrated(method), {name: json.loads(Path(f"reports/calibrate/{method}_{name}.json").read_text())
                                    for name in ("history", "heldout", "gap")}

    monkeypatch.setenv("REDRAW_CHECKPOINTS", str(tmp_path / "reference"))
    reference = stage.run(method, params, progress=False)
    ref_state, ref_reports = outputs()
    assert reference["calib/kept_update"] == 6
    shutil.rmtree("models/calibrate")
    shutil.rmtree("reports/calibrate")

    monkeypatch.setenv("REDRAW_CHECKPOINTS", str(tmp_path / "stopped"))
    real_step, calls = Calibrator.step, []

    def stop_in_the_tenth_update(self, batch):
        calls.append(1)
        if len(calls) == 10:
            raise KeyboardInterrupt
        return real_step(self, batch)

    monkeypatch.setattr(Calibrator, "step", stop_in_the_tenth_update)
    with pytest.raises(KeyboardInterrupt):
        stage.run(method, params, progress=False)
    assert not Path(f"models/calibrate/{method}/agent.pt").exists()
    [ckpt] = (tmp_path / "stopped").glob(f"calibrate-{method}-*/checkpoint.pt")
    assert load_checkpoint(ckpt)["update"] == 8

    monkeypatch.setattr(Calibrator, "step", real_step)
    capsys.readouterr()
    resumed = stage.run(method, params, progress=False)
    assert "resuming" in capsys.readouterr().out and load_checkpoint(ckpt)["update"] == 12
    state, reports = outputs()
    assert reports == ref_reports
    assert state.keys() == ref_state.keys() and all(torch.equal(state[k], ref_state[k]) for k in state)
    assert {k: v for k, v in resumed.items() if k != "calib/seconds"} == \
        {k: v for k, v in reference.items() if k != "calib/seconds"}


def test_the_evaluation_acts_with_the_params_torch_threads(tmp_path, monkeypatch):
    """perf.threads, as in the training stages: at batch 1 a second thread only waits for a core."""
    from pathlib import Path

    from redraw.config import load_params
    from redraw.stages import evaluate

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(evaluate, "StageRun", NoTracking)
    Path("models/pretrain").mkdir(parents=True)
    Path("models/pretrain/agent.pt").write_bytes(b"")
    seen = []

    def returns(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return [1.0, 3.0], [0.0, 0.0]

    monkeypatch.setattr(evaluate, "policy_returns", returns)
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    params["perf"]["threads"] = 1
    torch.set_num_threads(2)
    try:
        assert evaluate.run("source", params, progress=False)["return_mean"] == 2.0
    finally:
        torch.set_num_threads(1)
    assert seen == [1]


@pytest.mark.parametrize("setting", [False, "auto"])
def test_calibration_and_policy_training_take_the_precision_pretrain_bf16_sets(tmp_path, monkeypatch, setting):
    """``pretrain.bf16: false`` forces fp32 in the stages that go on from a checkpoint too, on a
    machine that multiplies bf16 natively (where ``auto`` chooses bf16), so a forced precision
    is the precision of the whole pipeline."""
    from pathlib import Path

    from redraw import perf
    from redraw.checkpoint import RunCheckpoint
    from redraw.stages import calibrate as cal_stage
    from redraw.stages import train_policy

    monkeypatch.setattr(perf, "native_bf16", lambda device="cpu": True)
    loaded = []
    for module in (cal_stage, train_policy):
        def capture(*args, _real=module.load_agent, **kwargs):
            loaded.append(_real(*args, **kwargs))
            return loaded[-1]

        monkeypatch.setattr(module, "load_agent", capture)
    identities = []

    class Recorded(RunCheckpoint):
        def __init__(self, name, identity, who):
            identities.append(identity)
            super().__init__(name, identity, who)

    for module in (cal_stage, train_policy):
        monkeypatch.setattr(module, "RunCheckpoint", Recorded)
    params = calibrate_setup(tmp_path, monkeypatch)
    params["calibrate"]["updates"] = 2
    params["pretrain"]["bf16"] = setting
    cal_stage.run("redraw", params, progress=False)
    monkeypatch.setattr(train_policy, "StageRun", NoTracking)
    params["train_policy"].update(updates=1, batch_size=2, batch_length=16, imag_starts=8, log_every=1, eval_every=0)
    train_policy.run("redraw", params, progress=False)
    assert Path("models/policy/redraw/agent.pt").is_file()
    assert len(loaded) == 3  # the calibration's two agents (source and adapted), the policy stage's
    assert [a.bf16 for a in loaded] == [setting == "auto"] * 3
    # a run is never resumed in the other precision: it is part of what names its checkpoint
    assert [i["precision"] for i in identities] == ["bf16 autocast" if setting == "auto" else "fp32"] * 2
