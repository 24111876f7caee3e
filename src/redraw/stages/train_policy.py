"""DVC stage ``train_policy@<method>``: the policy for the target, trained in imagination.

The actor-critic learns in the adapted world model's imagination (``calibrate@<method>``),
starting from posterior states of the target data, with rewards from the *frozen source
reward head* (target rewards are never fitted). ReDRAW re-initialises the actor-critic; the
finetune baselines keep the pretrained one and train on (``redraw.methods``: a method's
``reinit_actor_critic``). ``redraw_pessimistic`` penalises (or ends) imagined rollouts where its
residual ensemble disagrees (``pessimism``, its ``policy_setup`` in redraw.methods.redraw_pessimistic).

    python -m redraw.stages.train_policy METHOD [--params params.yaml]

With ``train_policy.adapt`` (the reference's concurrent schedule) every update first takes one
calibration step on the same target batch (the residual, or the finetuned parts; a fresh Adam),
and ``calibrate.gap_every`` measures the held-out dynamics error along the way
(``reports/train_policy/<method>_heldout.json``).

Resumable: every ``train_policy.checkpoint_every`` updates the run's state (actor-critic and its
optimisers, the concurrent schedule's optimiser, the random streams, the curves so far) goes to
``checkpoints/policy-<method>-<hash>/`` (or under ``$REDRAW_CHECKPOINTS``), the hash covering the
calibrated model's bytes and everything else that shapes the run. A stopped run (SIGKILL
included) restarts there and ends with the same policy, bit for bit, as one never stopped.

Writes ``models/policy/<method>/agent.pt`` and ``reports/train_policy/<method>.json``. With
``train_policy.eval_every`` set and a simulated target (a registered env), the policy is also run
in ``env.target`` every so many updates: ``reports/train_policy/<method>_curve.json`` (a DVC plot)
holds the learning curve. Those evaluations run episodes of their own, never the evaluate
stage's test episodes, and draw their own randomness, so the trained policy is the same with or
without them.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from redraw import methods
from redraw.agent.adapt import Calibrator, dynamics_gap
from redraw.agent.agent import load_agent
from redraw.checkpoint import RunCheckpoint, file_hash, load_checkpoint, save_checkpoint
from redraw.config import ConfigError, get, section
from redraw.data.replay import Replay, batch_keys
from redraw.data.target import TargetDataError, load_target
from redraw.perf import apply as apply_perf
from redraw.perf import perf_config, pick_device
from redraw.stages import method_run_tags, method_stage_main
from redraw.stages.calibrate import OUT_ROOT as CALIBRATED_ROOT
from redraw.stages.calibrate import calibrate_configs, heldout_point, holdout_batch, schedule
from redraw.stages.pretrain import stage_bf16
from redraw.tracking import StageRun, write_json, write_metrics

OUT_ROOT = Path("models/policy")
REPORTS = Path("reports/train_policy")


@dataclass
class TrainPolicyConfig:
    """Section ``train_policy`` of params.yaml."""

    updates: int = 2000  #: actor-critic updates in imagination
    batch_size: int = 16  #: target chunks per update (their posterior states start imagination)
    batch_length: int = 64
    imag_starts: int = 256  #: imagination starts per update (0: every posterior state)
    #: the residual methods' starts (0: imag_starts); the reference starts ReDRAW's imagination
    #: from a third of the batch's posterior states (341 of 1024), the baselines' from all
    residual_imag_starts: int = 0
    lr: float = 0.0  #: actor and critic Adam learning rate in this stage (0: actor_critic.lr, as in pretraining)
    log_every: int = 50
    checkpoint_every: int = 500  #: updates between checkpoints of the run (it resumes from the last)
    eval_every: int = 0  #: run the policy in env.target (a simulator) every N updates (0: never)
    eval_episodes: int = 5  #: episodes per such evaluation
    #: the reference's concurrent schedule: every update also trains what calibrate@METHOD trained
    #: (the residual, or the finetuned world-model parts) on the same target batch, so adaptation
    #: goes on for as long as the policy trains (docs/method.md#calibrate); false: the calibrated
    #: model stays frozen here
    adapt: bool = False
    #: uniform mix of the residual-corrected prior in this stage (the paper: 0, no mix; 0.01
    #: restores the pretrained prior's mix: a control for how far the policy exploits sharp
    #: imagined transitions). Residual methods only.
    imag_unimix: float = 0.0
    #: beyond the paper: the actor also minimises this weight times the negative log-likelihood of
    #: the target data's actions at their posterior states (behaviour cloning of whoever collected
    #: them, e.g. the expert), which keeps the policy near the data where the calibrated model is
    #: right. 0: off (the paper's policy stage, every number unchanged)
    bc_weight: float = 0.0


def policy_stage_agent(path, reinit: bool, lr: float, imag_starts: int, seed: int, bf16: bool | None = None):
    """The agent at ``path`` set up for the policy stage: everything frozen but the actor-critic
    (re-initialised if ``reinit``; Adam at ``lr`` unless 0), ``imag_starts`` starts per update;
    ``bf16``: its precision (None: the machine's, as ``load_agent``)."""
    torch.manual_seed(seed)
    agent = load_agent(path, device=pick_device(), bf16=bf16)
    agent.requires_grad_(False)
    if reinit:
        agent.reset_actor_critic()
    train_actor_critic(agent)
    if lr:
        for opt in (agent.ac.actor_opt, agent.ac.critic_opt):
            for group in opt.param_groups:
                group["lr"] = lr
    agent.cfg.imag_starts = imag_starts
    agent.seed(seed)
    return agent


def train_actor_critic(agent) -> None:
    """Make the actor and critic trainable (the slow critic is a copy that never trains)."""
    agent.ac.requires_grad_(True)
    agent.ac.slow_critic.requires_grad_(False)


def evaluate_in_target(agent, env, episodes: int, seed: int, point: int = 0) -> list[float]:
    """Returns of ``agent`` acting in ``env`` (actions sampled) on episodes of their own: not the
    evaluate stage's (its test episodes are never used to watch or pick a policy). Each ``point``
    of a learning curve runs new episodes (its own initial states, e.g. reacher's targets): a few
    episodes, the same at every point, made a curve that followed how the policy did on those few
    alone. The agent's random stream is restored afterwards, so training goes on unchanged."""
    from redraw.agent.agent import AgentPolicy
    from redraw.data.collect import CURVE_STREAM, run_policy

    state = agent.generator.get_state()
    agent.seed(seed)
    try:
        returns, _ = run_policy(env, AgentPolicy(agent, sample=True), episodes, seed, progress=False,
                                stream=CURVE_STREAM, first=point * episodes)
    finally:
        agent.generator.set_state(state)
    return returns


def run(method: str, params: dict, path: str = "params.yaml", progress: bool = True) -> dict:
    if method not in methods.calibrated():
        raise ConfigError(f"unknown method {method!r} for policy training; choose one of "
                          f"{', '.join(methods.calibrated())}")
    spec = methods.REGISTRY[method]
    cfg = section(params, "train_policy", TrainPolicyConfig, path)
    cal_cfg, _ = calibrate_configs(params, path)
    seed = int(get(params, "seed", path))
    target_env = get(params, "env.target", path)
    if cfg.imag_starts < 0 or cfg.residual_imag_starts < 0:
        raise ConfigError(f"{path}: train_policy.imag_starts and residual_imag_starts must be >= 0 (0: every "
                          f"posterior state; as imag_starts), got {cfg.imag_starts} and {cfg.residual_imag_starts}")
    if not 0.0 <= cfg.imag_unimix < 1.0:
        raise ConfigError(f"{path}: train_policy.imag_unimix must be in [0, 1), got {cfg.imag_unimix}")
    if not cfg.bc_weight >= 0:
        raise ConfigError(f"{path}: train_policy.bc_weight must be >= 0 (0: no behaviour cloning), got {cfg.bc_weight}")
    if cfg.lr < 0:
        raise ConfigError(f"{path}: train_policy.lr must be positive (or 0 for actor_critic.lr), got {cfg.lr}")
    if cfg.checkpoint_every < 1:
        raise ConfigError(f"{path}: train_policy.checkpoint_every must be at least 1, got {cfg.checkpoint_every}")
    if cfg.eval_every > 0:
        from redraw.envs import load_pairs
        from redraw.envs.pair import env_settings

        if target_env not in load_pairs(env_settings(params, path)["pairs"]).envs:
            raise ConfigError(f"{path}: train_policy.eval_every needs env.target to be a simulator; {target_env!r} is "
                              f"not a registered env (set train_policy.eval_every: 0 for a real system)")
        if cfg.eval_episodes < 1:
            raise ConfigError(f"{path}: train_policy.eval_episodes must be at least 1, got {cfg.eval_episodes}")
    data_dir = str(get(params, "target_data", path))
    model_path = CALIBRATED_ROOT / method / "agent.pt"
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path}: no calibrated model; run `dvc repro calibrate@{method}` first")
    identity = load_checkpoint(model_path, map_location="cpu")["identity"]
    _, train_eps, held_eps, fingerprint = load_target(data_dir, identity, str(model_path), target_env,
                                               int(get(params, "target_transitions", path)), cal_cfg.holdout_episodes)
    if fingerprint != identity["target_data"]:
        raise TargetDataError(f"{data_dir} is not the data {model_path} was calibrated on; re-run calibrate@{method}")
    perf = perf_config(params, path)
    apply_perf(perf)
    starts = cfg.residual_imag_starts if spec.residual and cfg.residual_imag_starts else cfg.imag_starts
    agent = policy_stage_agent(model_path, spec.reinit_actor_critic, cfg.lr, starts, seed, stage_bf16(params, path))
    if spec.policy_setup is not None:  # e.g. redraw_pessimistic's pessimism
        spec.policy_setup(agent, params, path, model_path)
    if cfg.imag_unimix:
        if getattr(agent.wm, "residual", None) is None:
            raise ConfigError(f"{path}: train_policy.imag_unimix mixes the residual-corrected prior; {method} has "
                              "no residual (set it to 0)")
        agent.wm.residual_unimix = cfg.imag_unimix
    agent.bc_weight = cfg.bc_weight
    keys = batch_keys(agent.obs_spec)
    replay = Replay(keys, cfg.batch_length, seed=seed)
    for ep in train_eps:
        replay.add(ep)
    calibrator = None
    if cfg.adapt:  # the concurrent schedule: calibration goes on beside the policy
        # freezes all but its part; a bootstrapped ensemble's weights are redrawn as calibrate drew them
        calibrator = Calibrator(agent, method, cal_cfg, None, resume=True, episodes=len(replay.episodes), seed=seed)
        train_actor_critic(agent)
    agent.use_perf(perf)

    env, env_identity = None, {}
    if cfg.eval_every > 0:
        from redraw.envs import load_pairs, make_env
        from redraw.envs.pair import env_settings

        env_kwargs = env_settings(params, path)
        env = make_env(target_env, seed=seed + 3, **env_kwargs)
        env_identity = {"env_kwargs": env_kwargs, "env_definition": load_pairs(env_kwargs["pairs"]).definition(target_env)}
    # everything that shapes this run; its checkpoint is resumed only by the same run
    run_identity = {"method": method, "seed": seed, "target_env": target_env, "target_data": fingerprint,
                    "calibrated_model": file_hash(model_path), "held_out_episodes": cal_cfg.holdout_episodes,
                    # without behaviour cloning a run is the one it was before the option existed
                    "train_policy": {k: v for k, v in schedule(cfg).items() if k != "bc_weight" or v},
                    "calibrate": schedule(cal_cfg) if cfg.adapt else None, "perf": asdict(perf),
                    "pessimism": asdict(agent.pessimism) if agent.pessimism is not None else None,
                    "precision": agent.precision, **env_identity}  # never resumed in the other precision
    history, curve, heldout, done, seconds_before = [], [], [], 0, 0.0
    gap_batch = None
    if calibrator is not None and cal_cfg.gap_every:
        gap_batch = holdout_batch(held_eps, keys, cal_cfg.gap_context + cal_cfg.gap_horizon)
    ckpt = None
    try:
        ckpt = RunCheckpoint(f"policy-{method}", run_identity, f"train_policy@{method}")  # locked until closed
        state = ckpt.load(map_location=agent.device)
        if state is not None:
            agent.load_checkpoint_state(state["agent"])
            if calibrator is not None:
                calibrator.opt.load_state_dict(state["calibrator_opt"])
            replay.set_rng_state(state["replay_rng"])
            done, seconds_before = int(state["update"]), float(state["seconds"])
            history, curve, heldout = state["history"], state["curve"], state["heldout"]
            print(f"train_policy@{method}: resuming {ckpt.path} at update {done}", flush=True)
        elif gap_batch is not None:
            heldout.append(heldout_point(0, dynamics_gap(agent, gap_batch, cal_cfg.gap_context, seed)))
    except BaseException:
        if ckpt is not None:
            ckpt.close()
        if env is not None:
            env.close()
        raise
    tracker = StageRun(f"train_policy@{method}", params,
                       tags=method_run_tags(method, target_env, fingerprint, agent, done))
    start = time.perf_counter()

    def checkpoint(update: int) -> None:
        ckpt.save({
            "agent": agent.checkpoint_state(), "update": update, "replay_rng": replay.rng_state(),
            "calibrator_opt": calibrator.opt.state_dict() if calibrator is not None else None,
            "history": history, "curve": curve, "heldout": heldout,
            "seconds": seconds_before + time.perf_counter() - start})

    try:
        bar = tqdm(range(done, cfg.updates), desc=f"train_policy {method}", unit="update", initial=done,
                   total=cfg.updates, disable=None if progress else True)
        for update in bar:
            batch = replay.sample(cfg.batch_size, with_episode=calibrator is not None and calibrator.needs_episode)
            adapted = calibrator.step(batch) if calibrator is not None else {}
            metrics = {**adapted, **agent.policy_step(batch)}
            bad = [k for k, v in metrics.items() if k.startswith("loss/") and not np.isfinite(v)]
            if bad:
                raise FloatingPointError(f"non-finite {', '.join(bad)} at update {update + 1}; nothing was "
                                         f"written to models/policy; {ckpt.kept()}")
            if (update + 1) % cfg.log_every == 0 or update + 1 == cfg.updates:
                history.append({"update": update + 1, **metrics})
                tracker.log_metrics(metrics, step=update + 1)
                bar.set_postfix(ret=f"{metrics['ac/return']:.2f}")
            if env is not None and ((update + 1) % cfg.eval_every == 0 or update + 1 == cfg.updates):
                returns = evaluate_in_target(agent, env, cfg.eval_episodes, seed, point=len(curve))
                curve.append({"update": update + 1, "eval_return": float(np.mean(returns))})
                tracker.log_metrics({"eval/return": curve[-1]["eval_return"]}, step=update + 1)
                bar.write(f"train_policy {method}: update {update + 1}, {target_env} return "
                          f"{curve[-1]['eval_return']:.1f} over {len(returns)} episodes")
            if gap_batch is not None and ((update + 1) % cal_cfg.gap_every == 0 or update + 1 == cfg.updates):
                heldout.append(heldout_point(update + 1, dynamics_gap(agent, gap_batch, cal_cfg.gap_context, seed)))
                tracker.log_metrics({f"heldout/{k}": v for k, v in heldout[-1].items() if k != "update"},
                                    step=update + 1)
            if (update + 1) % cfg.checkpoint_every == 0 and update + 1 < cfg.updates:
                checkpoint(update + 1)
        bar.close()
        if done < cfg.updates:  # the finished run: a rerun of the same run writes its outputs again
            checkpoint(cfg.updates)
    except BaseException:
        tracker.end("FAILED")
        raise
    finally:
        ckpt.close()
        if env is not None:
            env.close()
    save_checkpoint(OUT_ROOT / method / "agent.pt", {"agent": agent.checkpoint_state()},
                    {**identity, "policy_updates": cfg.updates, "actor_critic_reinit": spec.reinit_actor_critic,
                     "adapted_concurrently": cfg.adapt,
                     **({"pessimism": asdict(agent.pessimism)} if agent.pessimism is not None else {})})
    write_json(REPORTS / f"{method}_history.json", history)
    write_json(REPORTS / f"{method}_curve.json", curve)
    write_json(REPORTS / f"{method}_heldout.json", heldout)
    # all processes of a resumed run
    metrics = {"policy/updates": cfg.updates, "policy/seconds": round(seconds_before + time.perf_counter() - start, 1),
               **{k: v for k, v in history[-1].items() if k.startswith(("loss/", "ac/", "pessimism/"))},
               **({"eval/return": curve[-1]["eval_return"]} if curve else {}),
               **({f"heldout/{k}": v for k, v in heldout[-1].items() if k != "update"} if heldout else {})}
    write_metrics(REPORTS / f"{method}.json", metrics)
    tracker.log_metrics(metrics)
    tracker.end()
    return metrics


def main(argv: list[str] | None = None) -> int:
    return method_stage_main("train_policy", "Train the target policy in the adapted world model's imagination "
                             "(DVC stage train_policy@METHOD).", run, methods.calibrated(),
                             (ConfigError, TargetDataError, FileNotFoundError, FloatingPointError, ValueError), argv)


if __name__ == "__main__":
    sys.exit(main())
