"""DVC stage ``calibrate@<method>``: adapt the pretrained world model to the target data.

``redraw`` trains a latent residual on the frozen DRAW model (``redraw_pessimistic``: an ensemble
of ``pessimism.members`` residuals); ``draw_finetune`` and ``dreamer_finetune`` finetune parts of
the DRAW / RSSM model: what each trains is in its module of ``redraw.methods``.
Trains only on target data the validation stage accepted, and reports the dynamics gap on
held-out target episodes before and after: one-step latent KL, and per open-loop horizon the
latent KL and decoded prediction error, with a figure of open-loop predictions (source model
vs adapted model vs truth).

    python -m redraw.stages.calibrate METHOD [--params params.yaml]

Writes ``models/calibrate/<method>/agent.pt``, ``reports/calibrate/<method>.json`` (metrics),
``reports/calibrate/<method>_gap.json`` (DVC plot), ``reports/calibrate/<method>_heldout.json``
(held-out error vs updates: every ``calibrate.gap_every`` updates, else before and after; DVC
plot) and ``reports/calibrate/<method>_figures/``. With ``calibrate.early_stop`` the model kept is
the one of the measured point with the lowest held-out open-loop KL (``calib/kept_update``).

Resumable: every ``calibrate.checkpoint_every`` updates the run's state goes to
``checkpoints/calibrate-<method>-<hash>/`` (or under ``$REDRAW_CHECKPOINTS``), the hash covering
the pretrained model's bytes, the target data and the settings; a stopped run (SIGKILL included)
restarts there and ends with the model of a run never stopped, bit for bit. A long adaptation
schedule (the reference's runs for as long as the policy trains) needs it.
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from redraw import methods
from redraw.agent.adapt import CalibrateConfig, Calibrator, dynamics_gap
from redraw.agent.agent import load_agent
from redraw.checkpoint import RunCheckpoint, file_hash, load_checkpoint, save_checkpoint
from redraw.config import ConfigError, get, section
from redraw.data.replay import Replay, batch_keys
from redraw.data.target import TargetDataError, load_target
from redraw.methods.base import WORLD_MODELS
from redraw.models.residual import ResidualConfig
from redraw.perf import apply as apply_perf
from redraw.perf import perf_config, pick_device
from redraw.stages import method_run_tags, method_stage_main
from redraw.stages.pretrain import stage_bf16
from redraw.tracking import StageRun, write_json, write_metrics

#: world model -> the pretrained model a method adapts (models/<its training>/agent.pt)
PRETRAINED = {wm: f"models/{training}/agent.pt" for wm, training in WORLD_MODELS.items()}
OUT_ROOT = Path("models/calibrate")
REPORTS = Path("reports/calibrate")


def calibrate_configs(params: dict, path: str = "params.yaml") -> tuple[CalibrateConfig, ResidualConfig]:
    residual = section(params, "calibrate.residual", ResidualConfig, path)
    rest = {k: v for k, v in get(params, "calibrate", path).items() if k != "residual"}
    cfg = section({"calibrate": rest}, "calibrate", CalibrateConfig, path)
    if cfg.gap_every < 0:
        raise ConfigError(f"{path}: calibrate.gap_every must be >= 0 (0: off), got {cfg.gap_every}")
    if cfg.checkpoint_every < 1:
        raise ConfigError(f"{path}: calibrate.checkpoint_every must be at least 1, got {cfg.checkpoint_every}")
    if cfg.early_stop and not cfg.gap_every:
        raise ConfigError(f"{path}: calibrate.early_stop needs calibrate.gap_every > 0 (the held-out "
                          "measurements it picks from)")
    return cfg, residual


def schedule(cfg) -> dict:
    """A stage section's settings that shape what it computes (all but how often it checkpoints):
    part of a run's identity."""
    return {k: v for k, v in asdict(cfg).items() if k != "checkpoint_every"}


def heldout_point(update: int, gap: dict) -> dict:
    """One point of the held-out curve: mean one-step (filtering) and open-loop KL, decoded MSE."""
    return {"update": update, "kl_filter": gap["kl_filter"], "kl_open_loop": float(np.mean(gap["kl"])),
            "mse_open_loop": float(np.mean(gap["mse"]))}


def holdout_batch(episodes: list[dict], keys: list[str], length: int, max_chunks: int = 64) -> dict[str, torch.Tensor]:
    """Non-overlapping chunks of ``length`` rows from the held-out episodes (deterministic)."""
    chunks = []
    for ep in episodes:
        n = len(ep["reward"])
        for start in range(0, n - length + 1, length):
            chunks.append({k: ep[k][start : start + length] for k in keys})
    if not chunks:
        raise TargetDataError(f"held-out episodes are shorter than the {length} steps the gap report needs "
                              "(calibrate.gap_context + gap_horizon)")
    chunks = chunks[:max_chunks]
    batch = {k: torch.from_numpy(np.stack([c[k] for c in chunks])) for k in keys}
    batch["is_first"] = batch["is_first"].clone()
    batch["is_first"][:, 0] = True
    return batch


def run(method: str, params: dict, path: str = "params.yaml", progress: bool = True) -> dict:
    if method not in methods.calibrated():
        raise ConfigError(f"unknown calibration method {method!r}; choose one of {', '.join(methods.calibrated())}")
    spec = methods.REGISTRY[method]
    cfg, res_cfg = calibrate_configs(params, path)
    if spec.residual_settings is not None:  # e.g. redraw_pessimistic's ensemble of residuals
        res_cfg = spec.residual_settings(res_cfg, params, path)
    seed = int(get(params, "seed", path))
    target_env = get(params, "env.target", path)
    data_dir = str(get(params, "target_data", path))
    transitions = int(get(params, "target_transitions", path))
    model_path = PRETRAINED[spec.world_model]
    perf = perf_config(params, path)
    apply_perf(perf)
    device = pick_device()
    identity = load_checkpoint(model_path, map_location="cpu")["identity"] if Path(model_path).is_file() else None
    if identity is None:
        raise FileNotFoundError(f"{model_path}: no pretrained model; run `dvc repro` (stage "
                                f"{WORLD_MODELS[spec.world_model]}) first")
    meta, train_eps, held_eps, fingerprint = load_target(data_dir, identity, model_path, target_env, transitions,
                                                        cfg.holdout_episodes)

    torch.manual_seed(seed)
    bf16 = stage_bf16(params, path)
    source = load_agent(model_path, device=device, bf16=bf16)  # the unadapted model, for the "before" report
    agent = load_agent(model_path, device=device, bf16=bf16)
    agent.seed(seed)
    keys = batch_keys(agent.obs_spec)
    replay = Replay(keys, cfg.batch_length, seed=seed)
    for ep in train_eps:
        replay.add(ep)
    if not len(replay):
        raise TargetDataError(f"{data_dir}: no training episode has the {cfg.batch_length} steps a batch needs")
    calibrator = Calibrator(agent, method, cfg, res_cfg, episodes=len(replay.episodes), seed=seed)
    agent.use_perf(perf)

    # everything that shapes this run; its checkpoint is resumed only by the same run
    run_identity = {"method": method, "seed": seed, "pretrained_model": file_hash(model_path), "target_env": target_env,
                    "target_data": fingerprint, "target_transitions": transitions, "calibrate": schedule(cfg),
                    "residual": asdict(res_cfg) if spec.residual else None, "perf": asdict(perf),
                    "precision": agent.precision}  # never resumed in the other precision
    ckpt = RunCheckpoint(f"calibrate-{method}", run_identity, f"calibrate@{method}")  # locked until closed
    history, heldout, best, done, seconds_before = [], None, None, 0, 0.0
    try:
        state = ckpt.load(map_location=device)
        if state is not None:
            agent.load_checkpoint_state(state["agent"])
            calibrator.opt.load_state_dict(state["opt"])
            replay.set_rng_state(state["replay_rng"])
            done, seconds_before = int(state["update"]), float(state["seconds"])
            history, heldout = state["history"], state["heldout"]
            if state["best"] is not None:
                best = (state["best"]["point"], list(state["best"]["params"]))
            print(f"calibrate@{method}: resuming {ckpt.path} at update {done}", flush=True)
    except BaseException:
        ckpt.close()
        raise
    tracker = StageRun(f"calibrate@{method}", params,
                       tags=method_run_tags(method, target_env, fingerprint, agent, done))
    start = time.perf_counter()

    def checkpoint(update: int) -> None:
        ckpt.save({"agent": agent.checkpoint_state(), "opt": calibrator.opt.state_dict(), "update": update,
                   "replay_rng": replay.rng_state(), "history": history, "heldout": heldout,
                   "best": {"point": best[0], "params": best[1]} if best is not None else None,
                   "seconds": seconds_before + time.perf_counter() - start})

    try:
        gap_batch = holdout_batch(held_eps, keys, cfg.gap_context + cfg.gap_horizon)
        before = dynamics_gap(source, gap_batch, cfg.gap_context, seed)
        # held-out error vs updates; the measurements draw from their own generator, so they change
        # nothing of the calibration itself
        if heldout is None:
            heldout = [heldout_point(0, before)]
        bar = tqdm(range(done, cfg.updates), desc=f"calibrate {method}", unit="update", initial=done,
                   total=cfg.updates, disable=None if progress else True)
        for update in bar:
            metrics = calibrator.step(replay.sample(cfg.batch_size, with_episode=calibrator.needs_episode))
            if not np.isfinite(metrics["loss/calib"]):
                raise FloatingPointError(f"non-finite calibration loss at update {update + 1}; nothing was written "
                                         f"to models/calibrate; {ckpt.kept()}")
            if (update + 1) % cfg.log_every == 0 or update + 1 == cfg.updates:
                history.append({"update": update + 1, **metrics})
                tracker.log_metrics(metrics, step=update + 1)
                bar.set_postfix(kl=f"{metrics['calib/kl']:.3f}" if "calib/kl" in metrics else None)
            if cfg.gap_every and ((update + 1) % cfg.gap_every == 0 or update + 1 == cfg.updates):
                heldout.append(heldout_point(update + 1, dynamics_gap(agent, gap_batch, cfg.gap_context, seed)))
                tracker.log_metrics({f"heldout/{k}": v for k, v in heldout[-1].items() if k != "update"},
                                    step=update + 1)
                if cfg.early_stop and (best is None or heldout[-1]["kl_open_loop"] < best[0]["kl_open_loop"]):
                    best = (heldout[-1], [p.detach().clone() for p in calibrator.params])
            if (update + 1) % cfg.checkpoint_every == 0 and update + 1 < cfg.updates:
                checkpoint(update + 1)
        bar.close()
        if done < cfg.updates:  # the finished run (its last weights): a rerun writes its outputs again
            checkpoint(cfg.updates)
        if best is not None:  # early stopping: the weights of the best held-out point
            with torch.no_grad():
                for p, kept in zip(calibrator.params, best[1]):
                    p.copy_(kept)
        after = dynamics_gap(agent, gap_batch, cfg.gap_context, seed)
        if not cfg.gap_every:
            heldout.append(heldout_point(cfg.updates, after))
    except BaseException:
        tracker.end("FAILED")
        raise
    finally:
        ckpt.close()

    out_dir = OUT_ROOT / method
    ident = {**identity, "method": method, "target_env": target_env, "target_data": fingerprint,
             "target_transitions": sum(len(e["reward"]) - 1 for e in train_eps),
             "residual": asdict(res_cfg) if spec.residual else None}
    save_checkpoint(out_dir / "agent.pt", {"agent": agent.checkpoint_state()}, ident)

    REPORTS.mkdir(parents=True, exist_ok=True)
    rows = [{"horizon": h + 1, "kl_source": before["kl"][h], "kl_adapted": after["kl"][h],
             "mse_source": before["mse"][h], "mse_adapted": after["mse"][h]} for h in range(cfg.gap_horizon)]
    write_json(REPORTS / f"{method}_gap.json", rows)
    write_json(REPORTS / f"{method}_history.json", history)
    write_json(REPORTS / f"{method}_heldout.json", heldout)
    figures = REPORTS / f"{method}_figures"
    from redraw.envs.dmc import observation_names
    from redraw.plots import horizon_curves, open_loop

    if len(heldout) > 2:
        from redraw.plots import heldout_curve

        heldout_curve(heldout, figures / "heldout_vs_updates.png",
                      f"{method}: held-out {target_env} error vs updates",
                      kept=best[0]["update"] if best is not None else None)
    horizon_curves({"source model": {"latent KL (nats)": before["kl"], "decoded MSE": before["mse"]},
                    method: {"latent KL (nats)": after["kl"], "decoded MSE": after["mse"]}},
                   figures / "dynamics_gap.png", f"{method}: open-loop error on held-out {target_env} data")
    open_loop({k: v[0].cpu().numpy() for k, v in before["truth"].items()},
              {"source model": {k: v[0].cpu().numpy() for k, v in before["pred"].items()},
               method: {k: v[0].cpu().numpy() for k, v in after["pred"].items()}},
              figures / "open_loop.png", f"{method} on held-out {target_env}", context=cfg.gap_context,
              names=observation_names(target_env, identity["obs_mode"], params.get("env", {}).get("pairs")))
    H = cfg.gap_horizon
    metrics = {
        "calib/updates": cfg.updates,
        "calib/kept_update": best[0]["update"] if best is not None else cfg.updates,
        "calib/seconds": round(seconds_before + time.perf_counter() - start, 1),  # all processes of a resumed run
        "calib/train_transitions": ident["target_transitions"],
        "calib/holdout_episodes": len(held_eps),
        "gap/kl_filter_source": before["kl_filter"],
        "gap/kl_filter_adapted": after["kl_filter"],
        f"gap/kl_h{H}_source": float(np.mean(before["kl"])),
        f"gap/kl_h{H}_adapted": float(np.mean(after["kl"])),
        f"gap/mse_h{H}_source": float(np.mean(before["mse"])),
        f"gap/mse_h{H}_adapted": float(np.mean(after["mse"])),
    }
    if history:
        metrics.update({k: v for k, v in history[-1].items() if k.startswith(("loss/", "calib/kl"))})
    write_metrics(REPORTS / f"{method}.json", metrics)
    tracker.log_metrics(metrics)
    tracker.log_artifacts(figures, "figures")
    tracker.log_artifacts(REPORTS / f"{method}_gap.json")
    tracker.end()
    return metrics


def main(argv: list[str] | None = None) -> int:
    return method_stage_main("calibrate", "Adapt the pretrained world model to the validated target data "
                             "(DVC stage calibrate@METHOD) and report the dynamics gap before/after.", run,
                             methods.calibrated(),
                             (ConfigError, TargetDataError, FileNotFoundError, FloatingPointError, ValueError), argv)


if __name__ == "__main__":
    sys.exit(main())
