"""DVC stages ``pretrain`` and ``oracle``: world model and actor-critic trained online.

``pretrain`` trains in the source simulator (``env.source``), starting from ``data/source``;
``oracle`` runs the same training directly in the target simulator (``env.target``), starting
from ``data/oracle`` (``collect_source``'s episodes, collected in the target simulator): the upper
bound in results tables, trained exactly as the source policy is.

Dreamer loop: act in ``env.source`` with the actor, store finished episodes, and train at
``pretrain.train_ratio`` updates per agent step on chunks from the replay (which starts from
the collected ``data/source``). Evaluates periodically on the source task.

Resumable: the run's checkpoint lives in ``checkpoints/pretrain-<hash>/`` (or under
``$REDRAW_CHECKPOINTS``, see ``redraw.checkpoint``) where the hash covers everything that shapes
training. A run killed at any point (SIGKILL included) restarts from its last checkpoint with the
same update count and the same replay; a run with other settings gets its own directory, so no
checkpoint is ever overwritten by a different run; a second process of the same run waits for the
first one's lock on the directory, then resumes from its checkpoint.

    python -m redraw.stages.pretrain [--oracle] [--params params.yaml]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from redraw.agent.agent import Agent, AgentPolicy
from redraw.agent.configs import NOT_SHAPING, configs_from_params
from redraw.checkpoint import checkpoint_root as default_checkpoint_root
from redraw.checkpoint import hold_lock, identity_hash, load_checkpoint, save_checkpoint
from redraw.config import ConfigError, get
from redraw.data.collect import run_episodes, run_policy
from redraw.data.episodes import dataset_fingerprint, episode_name, iter_episodes, load_episode, save_episode
from redraw.data.replay import Replay, batch_keys
from redraw.data.schema import DataError, read_metadata
from redraw.envs.pair import env_settings
from redraw.perf import COMPILE_SECONDS, compile_report, eager, perf_config, pick_device, resolve_bf16
from redraw.perf import apply as apply_perf
from redraw.stages import report_run, stage_params
from redraw.tracking import StageRun, write_json, write_metrics

SOURCE_DATA = "data/source"
#: the simulator data each training starts its replay from, and the DVC stage that collects it, by env key
START_DATA = {"env.source": (SOURCE_DATA, "collect_source"), "env.target": ("data/oracle", "collect_oracle")}
OUT_DIR = Path("models/pretrain")
METRICS = "reports/pretrain.json"
CURVE = "reports/pretrain_curve.json"
OPENLOOP_CONTEXT = 5  #: observed steps before an open-loop prediction


def openloop_report(agent: Agent, replay: Replay, figure_path: Path, title: str, seed: int,
                    names: dict[str, list[str]] | None = None) -> dict[str, float]:
    """Open-loop prediction on one replay chunk: decoded error, and a truth-vs-prediction figure."""
    from redraw.plots import open_loop as plot_open_loop

    state = replay.rng_state()
    batch = replay.sample(4)
    replay.set_rng_state(state)  # reporting must not change the training stream
    batch = {k: v.to(agent.device) for k, v in batch.items()}
    obs = {k: batch[k] for k in agent.obs_spec}
    generator = torch.Generator(device=agent.device).manual_seed(seed)
    with eager(agent.wm):  # a one-off report: not worth a compilation for its shapes
        out = agent.wm.open_loop(obs, batch["action"], batch["is_first"], OPENLOOP_CONTEXT, generator=generator)
    metrics = {}
    for k, truth in out["truth"].items():
        err = (out["pred"][k].float() - truth.float()) ** 2
        if truth.dtype == torch.uint8:
            err = err / 255.0**2
        metrics[f"openloop/{k}_mse"] = float(err.mean())
    plot_open_loop({k: v[0].cpu().numpy() for k, v in out["truth"].items()},
                   {"prediction": {k: v[0].cpu().numpy() for k, v in out["pred"].items()}},
                   figure_path, title, context=OPENLOOP_CONTEXT, names=names)
    return metrics


def fit_obs_scale(agent: Agent, episodes: list[tuple[str, dict]]) -> None:
    """Fix the world model's observation scale (``model.obs_norm``) from ``(where, episode)``
    pairs: the collected episodes (data/source, data/oracle), or else the first online episode. Non-finite
    observations are refused naming the episode and the key."""
    keys = agent.wm.vector_keys
    if not (agent.cfg.wm.obs_norm and keys and episodes):
        return
    for where, episode in episodes:
        for k in keys:
            if not np.isfinite(episode[k]).all():
                raise ValueError(f"{where}: observation '{k}' holds non-finite values")
    vectors = np.concatenate([np.concatenate([ep[k] for k in keys], -1) for _, ep in episodes])
    agent.wm.set_obs_scale(torch.from_numpy(vectors))


def stage_bf16(params: dict, path: str = "params.yaml") -> bool:
    """The precision of a training stage that goes on from a checkpoint (calibration, policy
    training): ``pretrain.bf16`` resolved on this machine, so ``true`` / ``false`` force it for
    every stage, not only the pretraining."""
    return resolve_bf16(get(params, "pretrain.bf16", path), pick_device(), f"{path}: pretrain.bf16")


#: seed stream of the training's evaluation episodes (never the evaluate stage's test episodes)
EVAL_STREAM = 99


def evaluate(agent: Agent, env, episodes: int, seed: int, first: int = 0) -> dict[str, float]:
    """Mean undiscounted return of the actor (sampled actions) over episodes ``first`` ..
    ``first + episodes - 1`` of the training's evaluation stream. Each episode acts with its own
    generator, so the training's random stream is untouched."""
    returns, _ = run_policy(env, AgentPolicy(agent, sample=True), episodes, seed, progress=False,
                            stream=EVAL_STREAM, first=first)
    return {"return_mean": float(np.mean(returns)), "return_std": float(np.std(returns)), "episodes": episodes}


def run(params: dict, path: str = "params.yaml", env_key: str = "env.source", out_dir: Path = OUT_DIR,
        metrics_path: str = METRICS, curve_path: str = CURVE, progress: bool = True,
        checkpoint_root: Path | None = None, world_model: str | None = None) -> dict:
    from redraw.envs import load_pairs, make_env
    from redraw.pretrained import install_stage, selected

    role = "expert" if env_key == "env.target" else "rssm" if world_model == "rssm" else "source"
    shipped = selected(params, role)
    if shipped:  # pretrained.<role>: a shipped model instead of a training
        return install_stage(shipped, role, params, path, out_dir, metrics_path, curve_path)
    agent_cfg, pre = configs_from_params(params, path, world_model)
    if env_key == "env.target":  # the oracle: collect_target, which uses it, would refuse a bad behaviour only after it
        from redraw.stages.collect import check_behaviour

        check_behaviour("target", params, path)
    seed = int(get(params, "seed", path))
    env_name = get(params, env_key, path)
    env_kwargs = env_settings(params, path)
    obs_mode = env_kwargs["obs_mode"]
    start_data, collect_stage = START_DATA[env_key]
    try:
        meta = read_metadata(start_data)
    except DataError as exc:  # missing or unreadable: say which stage makes it
        raise DataError(exc.file, exc.field, f"{exc.message}; run `dvc repro {collect_stage}` first") from None
    if meta.env != env_name or meta.obs_mode != obs_mode:
        raise ConfigError(f"{start_data}: holds {meta.env}/{meta.obs_mode} data, params ask for {env_name}/{obs_mode}; "
                          f"rerun {collect_stage}")
    perf = perf_config(params, path)
    apply_perf(perf)
    agent_cfg.compile = perf.compile
    torch.manual_seed(seed)
    device = pick_device()
    if pre.envs < 1:
        raise ConfigError(f"{path}: pretrain.envs must be at least 1, got {pre.envs}")
    if pre.eval_episodes < 1 or pre.final_eval_episodes < 0:
        raise ConfigError(f"{path}: pretrain.eval_episodes must be at least 1 and pretrain.final_eval_episodes "
                          f"at least 0, got {pre.eval_episodes} and {pre.final_eval_episodes}")
    envs = [make_env(env_name, seed=seed + 1, **env_kwargs) for _ in range(pre.envs)]
    env = envs[0]
    eval_env = make_env(env_name, seed=seed + 2, **env_kwargs)
    obs_spec = env.observation_spec()
    identity = {
        "env": env_name, "obs_mode": obs_mode, "obs_spec": {k: list(v[0]) for k, v in obs_spec.items()},
        "action_size": env.action_size, "world_model": agent_cfg.world_model, "exploration": agent_cfg.exploration,
        "model": asdict(agent_cfg.wm), "actor_critic": asdict(agent_cfg.ac),
    }
    # the env's definition, not only the env-pair file's name: an edited perturbation must not resume
    # one env: the key predates it; the length and the evaluation, logging and checkpoint cadence do
    # not shape the training up to a step, so a finished run resumes when it is given more steps
    schedule = {k: v for k, v in asdict(pre).items() if (k != "envs" or v != 1) and k not in NOT_SHAPING}
    run_identity = {**identity, "pretrain": schedule, "seed": seed, "env_kwargs": env_kwargs,
                    # compiled updates and other thread counts round differently: another run
                    **({"perf": {"compile": perf.compile, "threads": perf.threads}} if perf.compile or perf.threads else {}),
                    **({"fused_chain": False} if not perf.fused_chain else {}),
                    **({"fused_adam": False} if not perf.fused_adam else {}),
                    "env_definition": load_pairs(env_kwargs["pairs"]).definition(env_name),
                    "source_data": dataset_fingerprint(start_data)}  # the key predates data/oracle: kept, so are the hashes
    ckpt_dir = (checkpoint_root or default_checkpoint_root()) / f"{out_dir.name}-{identity_hash(run_identity)}"
    ckpt_path, replay_dir = ckpt_dir / "checkpoint.pt", ckpt_dir / "replay"
    lock = hold_lock(ckpt_dir, out_dir.name)  # until this process has written its last checkpoint
    replay_dir.mkdir(parents=True, exist_ok=True)

    agent = Agent(obs_spec, env.action_size, agent_cfg, device=device)
    agent.use_perf(perf)
    agent.seed(seed)
    keys = batch_keys(obs_spec)
    replay = Replay(keys, pre.batch_length, seed=seed)
    collected = [(str(p), episode) for p, episode in iter_episodes(start_data)]
    for _, episode in collected:
        replay.add(episode)
    fit_obs_scale(agent, collected)
    scale_fitted = bool(replay.episodes)  # else (no collected episodes) from the first online episode
    step, online_episodes, curve, history = 0, 0, [], []
    next_eval, last_return = pre.eval_every, None
    seconds_before = 0.0  # training time of the processes before a resume
    if ckpt_path.is_file():
        state = load_checkpoint(ckpt_path, expect=run_identity, map_location=device)
        agent.load_checkpoint_state(state["agent"])
        step, online_episodes, curve = state["step"], state["online_episodes"], state["curve"]
        next_eval, last_return = state["next_eval"], state["last_return"]
        replay.set_rng_state(state["replay_rng"])
        seconds_before = float(state.get("seconds", 0.0))  # checkpoints before this key: unknown, 0
        history = state.get("last_logged", [])  # the losses the last log had, if it resumes at its end
        scale_fitted = True  # the checkpoint's weights carry the scale the run started with
        print(f"{out_dir.name}: resuming {ckpt_path} at step {step}, update {agent.updates}")
    # the replay is exactly what it was at the checkpoint: episodes written after it are dropped
    for i, path_i in enumerate(sorted(replay_dir.glob("*.npz"))):
        if i < online_episodes:
            replay.add(load_episode(path_i))
        else:
            path_i.unlink()

    def checkpoint():
        save_checkpoint(ckpt_path, {
            "agent": agent.checkpoint_state(), "step": step, "steps": pre.steps,  # the target: not in the identity
            "online_episodes": online_episodes, "curve": curve,
            "next_eval": next_eval, "last_return": last_return, "replay_rng": replay.rng_state(),
            "seconds": seconds_before + time.perf_counter() - start,
            "last_logged": history[-1:],
        }, run_identity)

    actor = AgentPolicy(agent, sample=True, explore=True)  # the explorer acts when there is one

    stage = {"models/pretrain": "pretrain", "models/oracle": "oracle", "models/pretrain_rssm": "pretrain_rssm"}.get(
        out_dir.as_posix(), out_dir.name)
    tracker = StageRun(stage, params, tags={"env": env_name, "resumed_at_update": str(agent.updates),
                                            "start_data": start_data,
                                            "source_data_hash": str(run_identity["source_data"]),
                                            "precision": agent.precision})
    bar = tqdm(total=pre.steps, initial=step, unit="step", desc=f"pretrain {env_name}", disable=None if progress else True)  # None: only on a terminal
    last_ckpt, start = agent.updates, time.perf_counter()
    step_compiled = False  # the compile report is printed once, after this process's first updates
    resumed_updates = agent.updates  # a resumed run has updates before it compiled anything
    try:
        while True:
            # 1. the updates the steps taken so far pay for (also finishes a burst cut by a kill)
            while agent.updates < math.floor(step * pre.train_ratio):
                if not scale_fitted:
                    fit_obs_scale(agent, [(str(replay_dir / episode_name(0)), replay.episodes[0])])
                    scale_fitted = True
                try:
                    metrics = agent.train_step(replay.sample(pre.batch_size))
                except RuntimeError as exc:  # NaN weights or inputs surface as invalid probabilities
                    if "nan" not in str(exc).lower() and "inf" not in str(exc).lower():
                        raise
                    metrics = {"loss/wm": float("nan")}
                    agent.updates += 1
                bad = [k for k, v in metrics.items() if k.startswith("loss/") and not math.isfinite(v)]
                if bad:
                    kept = (f"the last good checkpoint is kept at {ckpt_path}" if ckpt_path.is_file()
                            else "no checkpoint had been written yet")
                    raise FloatingPointError(f"non-finite {', '.join(bad)} at update {agent.updates}; {kept}")
                if agent.updates % pre.log_every == 0:
                    history.append({"step": step, "update": agent.updates, **metrics})
                    tracker.log_metrics(metrics, step=agent.updates)
                    bar.set_postfix(wm=f"{metrics['loss/wm']:.2f}", ret=f"{metrics['ac/return']:.2f}")
                if agent.updates - last_ckpt >= pre.checkpoint_every:
                    checkpoint()
                    last_ckpt = agent.updates
            # 2. evaluation on the source task when due, and always at the end
            done = step >= pre.steps
            if step >= next_eval or (done and (not curve or curve[-1]["step"] != step)):
                # new episodes at each point (a few episodes, the same at every point, made a curve of
                # how the actor did on those few); the last point, the verdict's, may run more
                n = pre.final_eval_episodes if done and pre.final_eval_episodes else pre.eval_episodes
                result = evaluate(agent, eval_env, n, seed, first=len(curve) * pre.eval_episodes)
                curve.append({"step": step, "update": agent.updates, "eval_return": result["return_mean"],
                              "train_return": last_return, "episodes": n})
                next_eval = (step // pre.eval_every + 1) * pre.eval_every
                tracker.log_metrics({"eval/return": result["return_mean"], "train/steps": step}, step=agent.updates)
                bar.write(f"{out_dir.name}: step {step} update {agent.updates}: eval return {result['return_mean']:.1f}")
            if done:
                break
            if perf.compile and agent.updates > resumed_updates and not step_compiled:
                bar.write(f"{out_dir.name}: {compile_report()}")
                step_compiled = True
            # 3. one episode of interaction in each env, stepped together (episode i: its own seed)
            seeds = [np.random.SeedSequence([seed, 7, online_episodes + i]) for i in range(pre.envs)]
            episodes = run_episodes(envs, actor, seeds)
            prev_step = step
            for episode in episodes:
                save_episode(replay_dir / episode_name(online_episodes), episode, compress=False)
                replay.add(episode)
                online_episodes += 1
                last_return = float(episode["reward"][1:].sum())
                step = min(pre.steps, step + len(episode["reward"]) - 1)
            bar.update(step - prev_step)
        checkpoint()
    except BaseException:
        tracker.end("FAILED")
        raise
    finally:
        lock.close()
        bar.close()
        for env_i in envs:
            env_i.close()
        eval_env.close()
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(out_dir / "agent.pt", {"agent": agent.checkpoint_state()}, identity)
    write_json(curve_path, curve)
    figures = Path(curve_path).with_suffix("")  # reports/pretrain_curve -> figures beside it
    figures = figures.with_name(figures.name.replace("_curve", "_figures"))
    from redraw.plots import learning_curve

    learning_curve(curve, figures / "learning_curve.png", f"{out_dir.name}: {env_name}")
    openloop = openloop_report(agent, replay, figures / "open_loop.png", f"{out_dir.name}: {env_name}", seed,
                               names=getattr(env, "observation_names", lambda: None)())
    final = curve[-1] if curve else {}
    metrics = {
        "eval/return": final.get("eval_return", float("nan")),
        "train/steps": step,
        "train/updates": agent.updates,
        "train/seconds": round(seconds_before + time.perf_counter() - start, 1),  # all processes of a resumed run
        "train/compile_seconds": round(sum(COMPILE_SECONDS.values()), 1),  # this process's compilation
    }
    if history:
        metrics.update({k: v for k, v in history[-1].items() if k.startswith("loss/")})
    metrics.update(openloop)
    write_metrics(metrics_path, metrics)
    tracker.log_metrics({k: v for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(v)},
                        step=agent.updates)
    tracker.log_artifacts(figures, "figures")
    tracker.log_artifacts(curve_path)
    tracker.end()
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m redraw.stages.pretrain",
                                     description="Train the DRAW world model and actor-critic online in env.source "
                                     "(DVC stage pretrain) or, with --oracle, in env.target (stage oracle).")
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--oracle", action="store_true",
                        help="train in env.target instead, starting from data/oracle (-> models/oracle, reports/oracle*.json)")
    parser.add_argument("--rssm", action="store_true",
                        help="pretrain the RSSM (DreamerV3) world model instead, for the dreamer_finetune baseline "
                        "(-> models/pretrain_rssm, reports/pretrain_rssm*.json)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    if args.oracle and args.rssm:
        parser.error("--oracle and --rssm are separate stages")
    kwargs = {}
    if args.oracle:
        kwargs = dict(env_key="env.target", out_dir=Path("models/oracle"), metrics_path="reports/oracle.json",
                      curve_path="reports/oracle_curve.json")
    if args.rssm:
        kwargs = dict(out_dir=Path("models/pretrain_rssm"), metrics_path="reports/pretrain_rssm.json",
                      curve_path="reports/pretrain_rssm_curve.json", world_model="rssm")
    name = "oracle" if args.oracle else "pretrain_rssm" if args.rssm else "pretrain"
    return report_run(
        name,
        lambda: run(stage_params(args.params), args.params, progress=not args.no_progress, **kwargs),
        (ConfigError, FloatingPointError, ValueError),
    )

if __name__ == "__main__":
    sys.exit(main())
