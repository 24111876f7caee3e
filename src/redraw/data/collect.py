"""Roll out episodes in a registered env: data sets collected with a behaviour policy, in
parallel over processes, and a policy's evaluation episodes with their returns.

Episode ``i`` is a pure function of ``(seed, stream, i)``: the same data set comes out whatever
the number of workers, and an evaluation runs the same episodes whatever the policy. Output is
written to a temporary sibling directory and renamed into place at the end, so a failed or
interrupted run leaves no half-written data set.
"""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from redraw import __version__
from redraw.data.behaviours import BehaviourConfig, describe, make_behaviour
from redraw.data.episodes import Episode, episode_name, save_episode
from redraw.data.schema import DatasetMeta, write_metadata

#: seed streams of evaluation episodes in the target: the final evaluation (the evaluate stage,
#: and a deployed policy) and train_policy's learning curve, which must not select on the test episodes
EVAL_STREAM, CURVE_STREAM = 4242, 4343

@dataclass
class CollectConfig:
    """One collection run."""

    env: str  #: registered env name
    out_dir: str  #: data set directory to create (must not exist or be empty)
    obs_mode: str = "proprio"  #: pixels | proprio
    episodes: int = 0  #: number of episodes; if 0, derived from ``transitions``
    transitions: int = 0  #: total agent steps wanted (rounded up to whole episodes)
    seed: int = 0
    stream: int = 0  #: separates seed streams of different data sets (source 0, target 1)
    behaviour: BehaviourConfig = field(default_factory=BehaviourConfig)
    workers: int = 2  #: processes; 1 collects in this process
    action_repeat: int = 2
    episode_steps: int = 500  #: agent steps per episode
    image_size: int = 64
    antialias: bool = False  #: pixels: 4x multisampling (slow in software rendering)
    compress: bool = True  #: zip-compress episode files (images shrink ~10x)
    pairs: str | None = None  #: the env-pair file that defines ``env`` (None: the repository's envs.yaml)

    def n_episodes(self) -> int:
        if self.episodes > 0:
            return self.episodes
        if self.transitions > 0:
            return math.ceil(self.transitions / self.episode_steps)
        raise ValueError("set either episodes or transitions to a positive number")

    def env_kwargs(self) -> dict:
        return dict(
            obs_mode=self.obs_mode,
            action_repeat=self.action_repeat,
            episode_steps=self.episode_steps,
            image_size=self.image_size,
            antialias=self.antialias,
            pairs=self.pairs,
        )


def episode_seed(seed: int, stream: int, index: int) -> np.random.SeedSequence:
    return np.random.SeedSequence([seed, stream, index])


def run_episode(env, behaviour, seed_seq: np.random.SeedSequence) -> Episode:
    """Roll out one episode; rows follow docs/episode-schema.md (row 0 = reset)."""
    env_seed, act_seed = seed_seq.spawn(2)
    behaviour.reset(np.random.default_rng(act_seed))
    obs = env.reset(seed=int(env_seed.generate_state(1)[0]))
    episode = _EpisodeRows(obs, env.action_size)
    done = False
    while not done:
        action = behaviour.act(obs)
        obs, reward, done, terminal = env.step(action)
        episode.add(obs, action, reward, terminal)
    return episode.finish()


def run_episodes(envs: list, policy, seed_seqs: list[np.random.SeedSequence]) -> list[Episode]:
    """Roll out ``len(seed_seqs)`` episodes together, one in each of the first envs, with one
    batched policy call per step (``policy.reset_batch(rngs)`` / ``policy.act_batch(obs, rows)``,
    e.g. ``AgentPolicy``). Episode i's env and action randomness come from ``seed_seqs[i]`` as in
    ``run_episode``; an episode that ends leaves the others stepping."""
    n = len(seed_seqs)
    if n > len(envs):
        raise ValueError(f"{n} episodes at once need {n} envs, got {len(envs)}")
    seeds = [s.spawn(2) for s in seed_seqs]
    policy.reset_batch([np.random.default_rng(act_seed) for _, act_seed in seeds])
    obs = [env.reset(seed=int(env_seed.generate_state(1)[0])) for env, (env_seed, _) in zip(envs, seeds)]
    episodes = [_EpisodeRows(o, env.action_size) for o, env in zip(obs, envs)]
    active = list(range(n))
    while active:
        actions = policy.act_batch([obs[i] for i in active], active)
        still = []
        for i, action in zip(active, actions):
            obs[i], reward, done, terminal = envs[i].step(action)
            episodes[i].add(obs[i], action, reward, terminal)
            if not done:
                still.append(i)
        active = still
    return [episode.finish() for episode in episodes]


def run_policy(env, behaviour, episodes: int, seed: int, progress: bool = True, desc: str = "evaluate",
               stream: int = EVAL_STREAM, first: int = 0):
    """Episodes ``first`` .. ``first + episodes - 1`` of ``behaviour`` in ``env``; episode i is seeded
    by (seed, stream, i) whatever the policy (``stream``: the final evaluation's unless told).
    ``env`` may be a list of envs: then as many episodes run together, one batched policy call
    per step (``behaviour.act_batch``, e.g. ``AgentPolicy``), each the episode it is alone.
    Returns the undiscounted returns and each episode's sum of |actions| (a fingerprint of
    the trajectory: a deployed policy must reproduce both)."""
    envs = list(env) if isinstance(env, (list, tuple)) else [env]
    returns, action_sums = [], []
    with tqdm(total=episodes, desc=desc, unit="episode", disable=None if progress else True) as bar:
        for start in range(first, first + episodes, len(envs)):
            seeds = [np.random.SeedSequence([seed, stream, i]) for i in range(start, min(start + len(envs), first + episodes))]
            eps = run_episodes(envs, behaviour, seeds) if len(envs) > 1 else [run_episode(envs[0], behaviour, seeds[0])]
            for ep in eps:
                returns.append(float(ep["reward"][1:].sum()))
                action_sums.append(float(np.abs(ep["action"][1:].astype(np.float64)).sum()))
            bar.update(len(eps))
    return returns, action_sums


def policy_returns(policy_path: str, env_name: str, env_kwargs: dict, episodes: int, seed: int,
                   progress: bool = True, desc: str = "evaluate", envs: int = 1, stream: int = EVAL_STREAM,
                   first: int = 0) -> tuple[list[float], list[float]]:
    """``run_policy`` for the agent checkpoint at ``policy_path`` (sampled actions), ``envs``
    episodes at a time (the same episodes whatever the number), from ``stream`` (default: the
    final evaluation's test episodes)."""
    from redraw.agent.agent import AgentPolicy, load_agent
    from redraw.envs import make_env
    from redraw.perf import pick_device

    made = []
    try:
        for _ in range(max(1, min(envs, episodes))):
            made.append(make_env(env_name, seed=seed + 3, **env_kwargs))
        obs_spec = {k: list(v[0]) for k, v in made[0].observation_spec().items()}
        agent = load_agent(policy_path, expect={"obs_spec": obs_spec, "action_size": made[0].action_size},
                           device=pick_device())
        agent.seed(seed)
        return run_policy(made, AgentPolicy(agent, sample=True), episodes, seed, progress, desc, stream, first)
    finally:
        for env in made:
            env.close()


class _EpisodeRows:
    """One episode's rows as they come (row 0: the reset's observation, a zero action)."""

    def __init__(self, obs: dict, action_size: int):
        self.rows = {k: [v] for k, v in obs.items()}
        self.actions = [np.zeros(action_size, np.float32)]
        self.rewards, self.terminals = [0.0], [False]

    def add(self, obs: dict, action, reward: float, terminal: bool) -> None:
        for k, v in obs.items():
            self.rows[k].append(v)
        self.actions.append(np.asarray(action, np.float32))
        self.rewards.append(reward)
        self.terminals.append(terminal)

    def finish(self) -> Episode:
        n = len(self.rewards)
        episode = {k: np.stack(v) for k, v in self.rows.items()}
        episode["action"] = np.stack(self.actions).astype(np.float32)
        episode["reward"] = np.asarray(self.rewards, np.float32)
        episode["is_first"] = np.arange(n) == 0
        episode["is_last"] = np.arange(n) == n - 1
        episode["is_terminal"] = np.asarray(self.terminals, bool)
        return episode


# -- worker processes ---------------------------------------------------------------------------
_WORKER: dict = {}


def _init_worker(cfg: CollectConfig, tmp_dir: str, pooled: bool = False) -> None:
    if not pooled:
        return _start_worker(cfg, tmp_dir)
    try:
        _start_worker(cfg, tmp_dir)
    except Exception as exc:  # noqa: BLE001 - a pool's initializer that raises is restarted for ever:
        _WORKER["error"] = exc  # the first episode raises it in the parent instead


def _start_worker(cfg: CollectConfig, tmp_dir: str) -> None:
    from redraw.envs import make_env

    if cfg.behaviour.kind == "policy":
        import torch

        # acting at batch 1: a second thread only waits for a core (the workers already use every
        # core; in one process another may hold it: 43 ms instead of 1.2 ms per step)
        torch.set_num_threads(1)

    env = make_env(cfg.env, seed=cfg.seed, **cfg.env_kwargs())
    _WORKER.update(
        env=env,
        behaviour=make_behaviour(cfg.behaviour, env.action_low, env.action_high, env=env),
        cfg=cfg,
        tmp_dir=tmp_dir,
    )


def _collect_one(index: int) -> tuple[int, int, float]:
    if "error" in _WORKER:
        raise _WORKER["error"]
    cfg: CollectConfig = _WORKER["cfg"]
    episode = run_episode(_WORKER["env"], _WORKER["behaviour"], episode_seed(cfg.seed, cfg.stream, index))
    save_episode(Path(_WORKER["tmp_dir"]) / episode_name(index), episode, compress=cfg.compress)
    return index, len(episode["reward"]) - 1, float(episode["reward"][1:].sum())


def _close_worker() -> None:
    env = _WORKER.pop("env", None)
    if env is not None:
        env.close()


def collect(cfg: CollectConfig, progress: bool = True) -> DatasetMeta:
    """Collect ``cfg.n_episodes()`` episodes into ``cfg.out_dir``; returns its metadata."""
    from redraw.envs import make_env

    from redraw.envs import get_spec

    get_spec(cfg.env, cfg.pairs)  # fail fast, before touching anything, on a bad env ...
    n = cfg.n_episodes()  # ... size ...
    make_behaviour(cfg.behaviour, np.zeros(1), np.ones(1))  # ... or behaviour
    out = Path(cfg.out_dir)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out}: output directory exists and is not empty; remove it or choose another")
    with make_env(cfg.env, seed=cfg.seed, **cfg.env_kwargs()) as env:
        if cfg.behaviour.kind == "policy":
            make_behaviour(cfg.behaviour, env.action_low, env.action_high, env=env)  # loads and checks it
        meta = DatasetMeta(
            env=cfg.env,
            obs_mode=cfg.obs_mode,
            control_hz=env.control_hz,
            action_size=env.action_size,
            action_low=env.action_low.tolist(),
            action_high=env.action_high.tolist(),
            observations={k: {"shape": list(s), "dtype": d} for k, (s, d) in env.observation_spec().items()},
            behaviour=describe(cfg.behaviour),
            action_repeat=cfg.action_repeat,
            source="simulator",
            seed=cfg.seed,
            extra={
                "episode_steps": cfg.episode_steps,
                "redraw_version": __version__,
                **({"render": env.render_settings} if cfg.obs_mode == "pixels" else {}),
            },
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    start, steps = time.perf_counter(), 0
    bar = tqdm(total=n, unit="ep", desc=f"collect {cfg.env} ({cfg.obs_mode})", disable=None if progress else True)  # None: only on a terminal
    try:
        workers = max(1, min(cfg.workers, n))
        if workers == 1:
            _init_worker(cfg, str(tmp))
            try:
                results = map(_collect_one, range(n))
                for _, s, _ in results:
                    steps += s
                    bar.update(1)
                    bar.set_postfix(steps_per_s=f"{steps / (time.perf_counter() - start):.0f}")
            finally:
                _close_worker()
        else:
            # spawn: every worker owns a fresh GL context; forking one is unsafe
            ctx = mp.get_context("spawn")
            with ctx.Pool(workers, initializer=_init_worker, initargs=(cfg, str(tmp), True)) as pool:
                for _, s, _ in pool.imap_unordered(_collect_one, range(n)):
                    steps += s
                    bar.update(1)
                    bar.set_postfix(steps_per_s=f"{steps / (time.perf_counter() - start):.0f}")
        write_metadata(tmp, meta)
        if out.exists():
            out.rmdir()  # empty, checked above
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        bar.close()
    return meta
