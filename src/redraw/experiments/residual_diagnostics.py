"""Where a calibrated world model is wrong off its target data, and whether a policy can exploit it.

The checks behind docs/residual.md, on any work directory's checkpoints:

    redraw experiment residual_diagnostics WORKDIR [--out DIR] [--episodes 10] [--starts 4]
        [--warmup 100] [--context 5] [--horizon 32] [--seed 0]

WORKDIR is a directory the pipeline ran in (its params.yaml, target data and models/). The models
measured: ``source`` (models/pretrain), ``redraw`` and ``redraw_pessimistic`` and
``draw_finetune`` (models/calibrate/...) and ``oracle`` (models/oracle), each where it exists.
The policy is ReDRAW's trained one (models/policy/redraw, ``--policy`` to change). Checks, each
with a figure in OUT (default WORKDIR/reports/residual_diagnostics) and its numbers in
OUT/summary.json:

1. ``residual_size.png``: RMS of the residual's logit correction (and the ensemble members'
   spread) on the target data's states vs along the policy's imagined rollouts, per step.
2. ``action_sensitivity.png``: KL(p(.|s, +1) || p(.|s, -1)) of each model's prior, for the most
   opposite actions, binned by reward (the true one on the data; the model's own when imagined).
   The oracle's latents are its own: it is measured on its own posterior and its own actor's
   imagination.
3. ``action_response.png``: from states the warm-up policy (the oracle if there is one) reaches in
   the target simulator, the return over HORIZON steps of open-loop action sequences (the
   policy's own, reversed, constant +1 and -1, uniform random) in the simulator vs as each model
   predicts it. The simulator is replayed from the same seed and warm-up actions for each.
4. ``policy_rollouts_gap.png``: each model's open-loop error per horizon on the policy's own
   episodes in the target simulator (``dynamics_gap.measure``).
5. ``disagreement_vs_error.png`` (models with a residual ensemble: ``redraw_pessimistic``): does
   the members' disagreement mark where the corrected model is wrong? On every transition of the
   target data and of the policy's own episodes, while filtering: the disagreement the policy
   stage's penalty uses (``redraw.agent.pessimism``) and the one-step KL(posterior || corrected
   prior) of that transition, with their rank correlation.
6. ``member_rollouts.png`` (the same models): do members that each roll out on their own drift
   apart where the one-step disagreement does not? Per horizon, the members' divergence (mean KL
   between every ordered pair of members' priors, each member rolling out with its own correction,
   the same actions and random numbers, so identical members give 0; ``pessimism.measure:
   rollouts``): open loop on chunks of the target data and of the policy's episodes with their
   recorded actions (beside the mean model's open-loop KL to the truth), and along the policy's
   imagination (check 1's rollouts: its starts and actions).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch


MODELS = {"source": "models/pretrain/agent.pt", "redraw": "models/calibrate/redraw/agent.pt",
          "redraw_pessimistic": "models/calibrate/redraw_pessimistic/agent.pt",
          "draw_finetune": "models/calibrate/draw_finetune/agent.pt", "oracle": "models/oracle/agent.pt"}
OWN_LATENTS = {"oracle"}  #: models whose latent space is not the source model's
MODES = ("policy", "reversed", "constant +1", "constant -1", "random")
REWARD_BINS = 4
MEMBER_STARTS = 1000  #: imagination starts of check 6 (each member rolls out on its own)


class Scripted:
    """A behaviour that plays fixed actions (``reset``/``act`` as in redraw.data.behaviours)."""

    def __init__(self, actions: np.ndarray):
        self.actions, self.t = actions, 0

    def reset(self, rng=None) -> None:
        self.t = 0

    def act(self, obs: dict) -> np.ndarray:
        self.t += 1
        return self.actions[self.t - 1]


class Recorder:
    """Records the actions of ``policy`` as it acts."""

    def __init__(self, policy):
        self.policy, self.actions = policy, []

    def reset(self, rng=None) -> None:
        self.policy.reset(rng)
        self.actions = []

    def act(self, obs: dict) -> np.ndarray:
        self.actions.append(np.asarray(self.policy.act(obs), np.float32))
        return self.actions[-1]


def to_batch(episodes: list[dict], keys) -> dict[str, torch.Tensor]:
    n = min(len(ep["reward"]) for ep in episodes)
    return {k: torch.from_numpy(np.stack([ep[k][:n] for ep in episodes])) for k in keys}


def rollout(agent, actor, start, horizon: int, gen: torch.Generator):
    """States and actions of ``actor`` (sampled, clipped) in ``agent``'s prior from ``start`` [N, ...]."""
    states, actions = [start], []
    for _ in range(horizon):
        action = actor.act(agent.wm.features(states[-1]), sample=True, generator=gen)
        nxt, _ = agent.wm.step(states[-1], action, gen)
        states.append(nxt)
        actions.append(action)
    return states, actions


def sensitivity(wm, state) -> torch.Tensor:
    """KL(p(.|s, +1) || p(.|s, -1)) of the (corrected) prior at states ``state`` [N, ...] -> [N]."""
    from redraw.models.dists import categorical_kl

    ones = torch.ones(state.z.shape[0], wm.action_size)
    return categorical_kl(wm.dynamics_step(ones, state)[1], wm.dynamics_step(-ones, state)[1])


def binned(values: np.ndarray, rewards: np.ndarray, edges: np.ndarray) -> list[float | None]:
    """Mean of ``values`` per reward bin (None for a bin no state falls in)."""
    idx = np.clip(np.searchsorted(edges, rewards, side="right") - 1, 0, len(edges) - 2)
    return [float(values[idx == b].mean()) if (idx == b).any() else None for b in range(len(edges) - 1)]


def residual_size(agent, data, states, actions) -> dict:
    """RMS of the ensemble's logit correction and the members' std (0 for one member), on the
    data's (sample, action) pairs and per imagined step."""
    wm = agent.wm
    out = wm.observe({k: data[k] for k in wm.obs_spec}, data["action"], data["is_first"], generator=agent.generator)
    mask = ~data["is_first"].bool()
    members = out["residual_members"][:, mask]  # [M, N, S, K]

    def size(m):
        return float(m.mean(0).pow(2).mean().sqrt()), float(m.std(0, unbiased=False).mean())

    imagined = [size(wm.residual.members(s.z.flatten(-2), a.clamp(-1, 1))) for s, a in zip(states[:-1], actions)]
    data_rms, data_std = size(members)
    return {"data_rms": data_rms, "data_member_std": data_std, "imagined_rms": [r for r, _ in imagined],
            "imagined_member_std": [s for _, s in imagined]}


def disagreement_vs_error(agent, sets: dict[str, dict[str, torch.Tensor]], imagined, bins: int = 10) -> dict:
    """Check 5 for an ensemble model: per episode set (name -> batch [B, T, ...]), every transition's
    members' disagreement and one-step KL(posterior || corrected prior) while filtering; their
    means, the Spearman rank correlation within each set and pooled, and the mean KL per decile
    of the pooled disagreement. Beside them the disagreement the policy stage sees: on the
    transitions of ``imagined`` (states, actions), the model's own rollout under the policy."""
    from scipy.stats import spearmanr

    from redraw.agent.pessimism import disagreement, member_spread
    from redraw.models.dists import categorical_kl

    def rank_corr(x, y):  # None where one side is constant (no ranking to compare)
        return float(spearmanr(x, y).statistic) if np.ptp(x) > 0 and np.ptp(y) > 0 else None

    def thin(v):  # at most ~500 points per set for the figure, 4 decimals: the summary stays small
        return np.round(v[::max(1, v.size // 500)], 4).tolist()

    wm, pooled, out = agent.wm, {"disagreement": [], "kl": []}, {}
    for name, data in sets.items():
        o = wm.observe({k: data[k] for k in wm.obs_spec}, data["action"], data["is_first"], generator=agent.generator)
        mask = ~data["is_first"].bool()
        d = member_spread(o["residual_members"])[mask].numpy()
        e = categorical_kl(o["post_logp"].float(), o["prior_logp"].float())[mask].numpy()
        out[name] = {"transitions": int(d.size), "disagreement_mean": float(d.mean()), "kl_mean": float(e.mean()),
                     "spearman": rank_corr(d, e)}
        pooled["disagreement"].append(d)
        pooled["kl"].append(e)
    states, actions = imagined
    dis = torch.stack([disagreement(wm.residual, st.z.flatten(-2), a) for st, a in zip(states[:-1], actions)])
    out["imagined"] = {"transitions": int(dis.numel()), "disagreement_mean": float(dis.mean()),
                       "disagreement_per_step": dis.mean(1).tolist()}
    d, e = (np.concatenate(pooled[k]) for k in ("disagreement", "kl"))
    edges = np.quantile(d, np.linspace(0, 1, bins + 1))
    idx = np.clip(np.searchsorted(edges, d, side="right") - 1, 0, bins - 1)
    out["pooled"] = {"spearman": rank_corr(d, e),
                     "decile_disagreement": [float(d[idx == b].mean()) for b in range(bins) if (idx == b).any()],
                     "decile_kl": [float(e[idx == b].mean()) for b in range(bins) if (idx == b).any()]}
    out["sample"] = {name: {"disagreement": thin(v), "kl": thin(w)}
                     for name, v, w in zip(sets, pooled["disagreement"], pooled["kl"])}
    return out


def member_rollouts(agent, sets: dict[str, list[dict]], imagined, context: int, horizon: int, seed: int) -> dict:
    """Check 6 for an ensemble model (see the module's docstring): per horizon, the members'
    divergence (``pessimism.measure: rollouts``) open loop on each episode set's chunks with their
    recorded actions, beside the mean model's KL to the truth there; and on ``imagined`` (states,
    actions: the mean model's rollout under the policy), from its starts with its actions, what
    that measure shows the policy stage."""
    from redraw.agent.pessimism import member_rollouts as rollouts
    from redraw.agent.pessimism import pairwise_kl
    from redraw.data.replay import batch_keys
    from redraw.models.dists import categorical_kl
    from redraw.stages.calibrate import holdout_batch

    wm, out = agent.wm, {}

    def divergence(start, actions):  # actions [H, N, A]; the same random numbers for every member
        u = torch.rand((*actions.shape[:2], wm.cfg.latent_vars), generator=torch.Generator().manual_seed(seed + 1))
        return pairwise_kl(rollouts(wm, start, actions, u).float()).mean(1).tolist()

    for name, episodes in sets.items():
        b = holdout_batch(episodes, batch_keys(agent.obs_spec), context + horizon)
        obs = {k: b[k] for k in wm.obs_spec}
        gen = torch.Generator().manual_seed(seed)
        post = wm.observe(obs, b["action"], b["is_first"], generator=gen)["post_logp"][:, context:]
        head = {k: v[:, :context] for k, v in obs.items()}
        prev = wm.observe(head, b["action"][:, :context], b["is_first"][:, :context], generator=gen)["state"]
        ol = wm.open_loop(obs, b["action"], b["is_first"], context, generator=gen)
        out[name] = {"chunks": int(b["action"].shape[0]),
                     "error_kl": categorical_kl(post.float(), ol["prior_logp"].float()).mean(0).tolist(),
                     "member_divergence": divergence(prev, b["action"][:, context:].transpose(0, 1))}
    states, actions = imagined
    keep = torch.randperm(states[0].z.shape[0], generator=torch.Generator().manual_seed(seed))[:MEMBER_STARTS]
    start = type(states[0])(*(x[keep] for x in states[0]))
    out["imagined"] = {"starts": int(keep.numel()),
                       "member_divergence": divergence(start, torch.stack(actions)[:, keep])}
    return out


def action_response(agents: dict, warm_policy, env_kwargs: dict, env_name: str, starts: int, warmup: int,
                    horizon: int, seed: int) -> dict:
    """Per mode: the true and each model's predicted return over ``horizon`` steps after ``warmup``."""
    from redraw.data.collect import run_episode
    from redraw.envs import make_env

    env = make_env(env_name, seed=seed + 3, **{**env_kwargs, "episode_steps": warmup + horizon})
    rng = np.random.default_rng(seed)
    result = {m: {"truth": [], **{name: [] for name in agents}} for m in MODES}
    try:
        for i in range(starts):
            def seq():  # a fresh one per run: spawning advances a SeedSequence
                return np.random.SeedSequence([seed, 777, i])

            rec = Recorder(warm_policy)
            first = run_episode(env, rec, seq())
            acts = np.stack(rec.actions)
            tail = acts[warmup:]
            tails = {"policy": tail, "reversed": -tail, "constant +1": np.ones_like(tail),
                     "constant -1": -np.ones_like(tail),
                     "random": rng.uniform(-1, 1, tail.shape).astype(np.float32)}
            for mode in MODES:
                ep = first if mode == "policy" else run_episode(env, Scripted(np.concatenate([acts[:warmup], tails[mode]])), seq())
                for k in env.observation_spec():
                    if not np.array_equal(ep[k][: warmup + 1], first[k][: warmup + 1]):
                        raise RuntimeError(f"{env_name}: replaying the warm-up did not reproduce its states ({k})")
                result[mode]["truth"].append(float(ep["reward"][warmup + 1:].sum()))
                for name, agent in agents.items():
                    b = to_batch([ep], [*agent.obs_spec, "action", "is_first"])
                    wm = agent.wm
                    ol = wm.open_loop({k: b[k] for k in wm.obs_spec}, b["action"], b["is_first"], warmup + 1,
                                      generator=agent.generator)
                    result[mode][name].append(float(wm.reward(ol["feat"]).sum()))
    finally:
        env.close()
    return {m: {k: float(np.mean(v)) for k, v in r.items()} for m, r in result.items()}


def policy_rollouts(policy_agent, env_name: str, env_kwargs: dict, episodes: int, seed: int) -> list[dict]:
    from redraw.agent.agent import AgentPolicy
    from redraw.data.collect import run_episode
    from redraw.envs import make_env

    env = make_env(env_name, seed=seed + 3, **env_kwargs)
    policy_agent.seed(seed)
    try:
        return [run_episode(env, AgentPolicy(policy_agent, sample=True), np.random.SeedSequence([seed, 4242, i]))
                for i in range(episodes)]
    finally:
        env.close()


def _fmt(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def figures(summary: dict, out: Path) -> None:
    from redraw.plots import _plt, _save, horizon_curves

    plt = _plt()
    if summary["residual_size"]:
        fig, ax = plt.subplots(figsize=(6, 3.5))
        for name, r in summary["residual_size"].items():
            steps = np.arange(1, len(r["imagined_rms"]) + 1)
            line, = ax.plot(steps, r["imagined_rms"], marker="o", label=f"{name}: imagined")
            ax.axhline(r["data_rms"], color=line.get_color(), ls="--", label=f"{name}: target data")
        ax.set(xlabel="imagined step", ylabel="RMS logit correction", title="residual size on and off the data")
        ax.legend(fontsize=7)
        _save(fig, out / "residual_size.png")
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=True)
    for ax, where in zip(axes, ("data", "imagined")):
        for name, s in summary["action_sensitivity"].items():
            ax.plot(np.arange(REWARD_BINS), [np.nan if v is None else v for v in s[where]], marker="o", label=name)
        ax.set(xlabel="reward bin (low -> high)", title=f"KL(p(.|s,+1) || p(.|s,-1)), {where} states")
        ax.set_yscale("symlog", linthresh=1e-3)
    axes[0].set_ylabel("nats")
    axes[0].legend(fontsize=7)
    _save(fig, out / "action_sensitivity.png")
    resp = summary["action_response"]
    names = [k for k in next(iter(resp.values()))]
    fig, ax = plt.subplots(figsize=(8, 3.5))
    width = 0.8 / len(names)
    for j, name in enumerate(names):
        ax.bar(np.arange(len(MODES)) + j * width, [resp[m][name] for m in MODES], width, label=name)
    ax.set_xticks(np.arange(len(MODES)) + 0.4 - width / 2, MODES)
    ax.set(ylabel="return over the horizon", title="open-loop actions: simulator (truth) vs each model")
    ax.legend(fontsize=7)
    _save(fig, out / "action_response.png")
    for name, check in summary.get("disagreement_vs_error", {}).items():
        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for where, pts in check["sample"].items():
            c = check[where]
            axes[0].scatter(pts["disagreement"], pts["kl"], s=4, alpha=0.4,
                            label=f"{where}: mean {c['disagreement_mean']:.3f} / {c['kl_mean']:.2f} nats, "
                                  f"Spearman {_fmt(c['spearman'])}")
        axes[0].axvline(check["imagined"]["disagreement_mean"], color="k", ls="--",
                        label=f"mean over the policy's imagined transitions: {check['imagined']['disagreement_mean']:.3f}")
        axes[0].set(xlabel="members' disagreement", ylabel="one-step KL (nats)", yscale="log",
                    title=f"{name}: every transition, filtering")
        axes[0].legend(fontsize=7)
        pooled = check["pooled"]
        axes[1].plot(pooled["decile_disagreement"], pooled["decile_kl"], marker="o")
        axes[1].set(xlabel="members' disagreement (decile mean)", ylabel="mean one-step KL (nats)",
                    title=f"pooled, Spearman {_fmt(pooled['spearman'])}")
        _save(fig, out / ("disagreement_vs_error.png" if len(summary["disagreement_vs_error"]) == 1
                          else f"disagreement_vs_error_{name}.png"))
    for name, check in summary.get("member_rollouts", {}).items():
        fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
        for where, c in check.items():
            steps = np.arange(1, len(c["member_divergence"]) + 1)
            line, = axes[0].plot(steps, c["member_divergence"], label=where)
            if "error_kl" in c:
                axes[1].plot(steps, c["error_kl"], color=line.get_color(), label=where)
        axes[0].set(xlabel="open-loop / imagined step", ylabel="members' divergence (mean pairwise KL, nats)",
                    title=f"{name}: each member rolling out on its own (measure: rollouts)")
        axes[1].set(xlabel="open-loop step", ylabel="KL(truth || mean model), nats", title="the mean model's open-loop error")
        one_step = summary["disagreement_vs_error"][name]
        steps = np.arange(1, len(one_step["imagined"]["disagreement_per_step"]) + 1)
        axes[2].plot(steps, one_step["imagined"]["disagreement_per_step"], label="imagined (the policy stage's)")
        for where, ls in (("target data", ":"), ("policy's episodes", "--")):
            axes[2].axhline(one_step[where]["disagreement_mean"], color="k", ls=ls, label=f"{where} (filtering)")
        axes[2].set(xlabel="imagined step", ylabel="members' one-step disagreement",
                    title="the one-step measure (pessimism.measure: transition)")
        for ax in axes:
            ax.legend(fontsize=7)
        _save(fig, out / ("member_rollouts.png" if len(summary["member_rollouts"]) == 1
                          else f"member_rollouts_{name}.png"))
    horizon_curves({name: {"latent KL (nats)": g["kl"], "decoded MSE": g["mse"]}
                    for name, g in summary["policy_rollouts_gap"].items()},
                   out / "policy_rollouts_gap.png", "open-loop error on the policy's own episodes")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workdir", type=Path, help="a directory the pipeline ran in")
    parser.add_argument("--out", type=Path, default=None, help="figures and summary.json (default WORKDIR/reports/residual_diagnostics)")
    parser.add_argument("--policy", default="models/policy/redraw/agent.pt", help="the policy (relative to WORKDIR)")
    parser.add_argument("--episodes", type=int, default=10, help="newest target episodes; also the policy's own (default 10)")
    parser.add_argument("--starts", type=int, default=4, help="simulator starts of check 3 (default 4)")
    parser.add_argument("--warmup", type=int, default=100, help="warm-up steps before check 3's actions (default 100)")
    parser.add_argument("--context", type=int, default=5, help="observed steps before open loop in check 4 (default 5)")
    parser.add_argument("--horizon", type=int, default=32, help="imagined / open-loop steps (default 32)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    from redraw.agent.agent import load_agent
    from redraw.config import ConfigError, get, load_params
    from redraw.data.episodes import list_episodes, load_episode
    from redraw.data.schema import DataError, read_metadata
    from redraw.envs.pair import env_settings
    from redraw.experiments.dynamics_gap import measure
    from redraw.perf import apply as apply_perf
    from redraw.perf import eager, perf_config

    if min(args.episodes, args.starts, args.warmup, args.context, args.horizon) < 1:
        parser.error("--episodes, --starts, --warmup, --context and --horizon must be at least 1")
    work = args.workdir
    out = args.out or work / "reports/residual_diagnostics"
    try:
        params = load_params(work / "params.yaml")
        data_dir = work / str(get(params, "target_data", work / "params.yaml"))
        env_name = get(params, "env.target", work / "params.yaml")
        env_kwargs = env_settings(params, str(work / "params.yaml"))
        if env_kwargs.get("pairs") and not Path(env_kwargs["pairs"]).is_absolute():  # relative to WORKDIR
            env_kwargs["pairs"] = str(work / env_kwargs["pairs"])
        meta = read_metadata(data_dir)
        apply_perf(perf_config(params, str(work / "params.yaml")))  # its torch threads, as the stages'
    except (ConfigError, DataError, FileNotFoundError) as exc:
        parser.error(str(exc))
    paths = {name: work / p for name, p in MODELS.items() if (work / p).is_file()}
    if "redraw" not in paths or not (work / args.policy).is_file():
        parser.error(f"{work}: needs {MODELS['redraw']} and {args.policy}; run `dvc repro train_policy@redraw` there")
    files = list_episodes(data_dir)[-args.episodes:]
    episodes = [load_episode(f) for f in files]
    expect = {"obs_spec": {k: list(v["shape"]) for k, v in meta.observations.items()}, "action_size": meta.action_size}
    torch.manual_seed(args.seed)
    agents = {name: load_agent(p, expect=expect) for name, p in paths.items()}
    policy = load_agent(work / args.policy, expect=expect)
    for a in (*agents.values(), policy):
        a.seed(args.seed)
    data = to_batch(episodes, [*policy.obs_spec, "action", "is_first", "reward"])
    edges = np.quantile(data["reward"][:, 1:].numpy(), np.linspace(0, 1, REWARD_BINS + 1))
    edges[-1] += 1e-6

    summary: dict = {"workdir": str(work), "target_data": str(data_dir), "behaviour": meta.behaviour,
                     "reward_bin_edges": edges.tolist(), "residual_size": {}, "action_sensitivity": {}}
    imagined = {}  # a residual model's imagined rollout (states, actions) under the policy
    with torch.no_grad(), eager(*(a.wm for a in (*agents.values(), policy))):
        for name, agent in agents.items():
            wm = agent.wm
            obs = {k: data[k] for k in wm.obs_spec}
            o = wm.observe(obs, data["action"], data["is_first"], generator=agent.generator)
            mask = ~data["is_first"].bool()
            # a step's state: the prior's belief and the posterior sample, as the prior sees them
            starts = type(o["states"])(*(x[mask] for x in o["states"]))
            actor = (agent if name in OWN_LATENTS else policy).ac.actor
            states, actions = rollout(agent, actor, starts, args.horizon, agent.generator)
            on = sensitivity(wm, starts).numpy()
            off = torch.stack([sensitivity(wm, s) for s in states[1:]]).flatten().numpy()
            off_reward = torch.stack([wm.reward(wm.features(s)).float() for s in states[1:]]).flatten().numpy()
            summary["action_sensitivity"][name] = {
                "data": binned(on, data["reward"][mask].numpy(), edges), "imagined": binned(off, off_reward, edges),
                "data_mean": float(on.mean()), "imagined_mean": float(off.mean())}
            if wm.residual is not None:
                summary["residual_size"][name] = residual_size(agent, data, states, actions)
                imagined[name] = (states, actions)
        warm = agents["oracle"] if "oracle" in agents else policy
        from redraw.agent.agent import AgentPolicy

        summary["action_response"] = action_response(agents, AgentPolicy(warm, sample=True), env_kwargs, env_name,
                                                     args.starts, args.warmup, args.horizon, args.seed)
        own = policy_rollouts(policy, env_name, env_kwargs, args.episodes, args.seed)
        summary["policy_return"] = float(np.mean([ep["reward"][1:].sum() for ep in own]))
        sets = {"target data": data, "policy's episodes": to_batch(own, [*policy.obs_spec, "action", "is_first"])}
        summary["disagreement_vs_error"] = {name: disagreement_vs_error(agent, sets, imagined[name])
                                            for name, agent in agents.items()
                                            if agent.wm.residual is not None and len(agent.wm.residual.nets) > 1}
        episode_sets = {"target data": episodes, "policy's episodes": own}
        summary["member_rollouts"] = {name: member_rollouts(agents[name], episode_sets, imagined[name],
                                                            args.context, args.horizon, args.seed)
                                      for name in summary["disagreement_vs_error"]}
        try:
            gaps = dict(measure(own, list(paths.values()), expect, args.context, args.horizon, args.seed))
        except ValueError as exc:
            parser.error(str(exc))
        summary["policy_rollouts_gap"] = {name: {"kl": gaps[p]["kl"], "mse": gaps[p]["mse"],
                                                 "kl_filter": gaps[p]["kl_filter"]} for name, p in paths.items()}
    bad = [k for k, v in flat(summary) if isinstance(v, float) and not math.isfinite(v)]
    if bad:  # a diverged model: say where, and write no summary that looks like a result
        print(f"residual diagnostics: non-finite numbers at {', '.join(bad[:6])}", file=sys.stderr)
        return 1
    out.mkdir(parents=True, exist_ok=True)
    figures(summary, out)
    (out / "summary.json").write_text(json.dumps(summary, indent=1, allow_nan=False))
    empty = sum(v is None for _, v in flat(summary))
    print(f"residual diagnostics of {work}: {out}/summary.json and {len(list(out.glob('*.png')))} figures"
          + (f" ({empty} reward bins without states: null)" if empty else ""))
    return 0


def flat(tree, prefix=""):
    """(dotted key, value) of every leaf of ``tree`` (lists by index)."""
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else None
    if items is None:
        yield prefix, tree
        return
    for k, v in items:
        yield from flat(v, f"{prefix}.{k}" if prefix else str(k))


if __name__ == "__main__":
    sys.exit(main())
