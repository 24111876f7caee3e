"""The agent: a DRAW world model and an actor-critic trained in its imagination."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from redraw.agent.actor_critic import ActorCritic, ActorCriticConfig, ImaginationPolicy
from redraw.agent.optim import LazyAdam
from redraw.models.draw import DRAW, WorldModelConfig
from redraw.models.rssm import RSSM

WORLD_MODELS = {"draw": DRAW, "rssm": RSSM}


@dataclass
class AgentConfig:
    world_model: str = "draw"  #: draw | rssm (DreamerV3)
    wm: WorldModelConfig = field(default_factory=WorldModelConfig)
    ac: ActorCriticConfig = field(default_factory=ActorCriticConfig)
    #: bfloat16 autocast for the forward passes; None: where the device has native bf16 products
    #: (``perf.native_bf16``: AMX / AVX512-BF16 CPUs, bf16 GPUs), fp32 elsewhere
    bf16: bool | None = None
    imag_starts: int = 0  #: imagination start states per update (0: every posterior state)
    exploration: str = "task"  #: task (act with the task actor) | plan2explore
    disagreement_heads: int = 8  #: plan2explore ensemble size
    #: clip the task actor's imagined samples before REINFORCE scores them: biased (see
    #: ``Actor.act``), the behaviour before commit 40dcb3b, with which online pretraining learnt the
    #: swing-up on the cpu preset where the unbiased update has not so far (docs/investigations.md §1.5)
    imag_clip: bool = False
    compile: bool = False  #: torch.compile the update's hot paths (params.yaml perf.compile)


class Agent(nn.Module):
    def __init__(self, obs_spec: dict, action_size: int, cfg: AgentConfig, device: str | torch.device = "cpu"):
        super().__init__()
        self.cfg, self.obs_spec, self.action_size = cfg, dict(obs_spec), action_size
        self.device = torch.device(device)
        if cfg.world_model not in WORLD_MODELS:
            raise ValueError(f"unknown world model {cfg.world_model!r}; choose one of {', '.join(WORLD_MODELS)}")
        if cfg.ac.actor_grad == "backprop" and cfg.world_model != "rssm":  # DRAW imagines without a graph
            raise ValueError(f"actor_grad 'backprop' needs the rssm world model, this agent has {cfg.world_model}")
        self.wm = WORLD_MODELS[cfg.world_model](obs_spec, action_size, cfg.wm)
        self.ac = ActorCritic(self.wm.feat_dim, action_size, cfg.ac)
        if cfg.exploration not in ("task", "plan2explore"):
            raise ValueError(f"unknown exploration {cfg.exploration!r}; choose task or plan2explore")
        self.explorer: ActorCritic | None = None
        if cfg.exploration == "plan2explore":
            from redraw.agent.plan2explore import Disagreement

            # disagreement rewards are small: the explorer's returns have their own, lower floor
            self.explorer = ActorCritic(self.wm.feat_dim, action_size,
                                        replace(cfg.ac, retnorm_floor=cfg.ac.explore_retnorm_floor))
            self.disagreement = Disagreement(self.wm.feat_dim, action_size, self.wm.embed_dim,
                                             heads=cfg.disagreement_heads, units=cfg.ac.units, layers=cfg.ac.layers)
        self.to(self.device)
        from redraw.perf import native_bf16

        self.bf16 = native_bf16(self.device) if cfg.bf16 is None else bool(cfg.bf16)  #: autocast on or off
        self.wm_adam = LazyAdam(self.wm, cfg.wm.lr, cfg.wm.eps)  # made on first use: acting needs none
        self.generator = torch.Generator(device=self.device)
        self.updates = 0
        #: ``agent.pessimism.PessimismConfig``: penalise imagination where the residual ensemble
        #: disagrees (the policy stage of redraw_pessimistic sets it; not saved with the agent)
        self.pessimism = None
        #: weight of behaviour cloning of the data's actions in the policy stage (train_policy.bc_weight;
        #: 0: none, the paper's); not saved with the agent
        self.bc_weight = 0.0
        self.fused_adam = False  #: Adam's fused kernel (perf.fused_adam, set by use_perf)
        #: -1: the actions handed to the env are the negation of the policy's own, which its
        #: state keeps (a shipped expert for a target that reverses the actions: the source
        #: policy, exact there; ``redraw.pretrained``); saved in the checkpoint's identity
        self.action_sign = 1.0
        self.use_compile(cfg.compile)

    def use_compile(self, enabled: bool) -> None:
        """Run the update's hot paths compiled (torch.compile) or eagerly; the same numbers up to
        float rounding, and the same random stream either way."""
        self.cfg.compile = enabled
        for part in (self.wm, self.ac, self.explorer, getattr(self, "disagreement", None)):
            if part is not None:
                part.use_compile(enabled)

    def use_perf(self, perf) -> None:
        """This process's speed settings (``perf.PerfConfig``): compiled regions, the fused prior
        chain and Adam's fused kernel."""
        self.use_compile(perf.compile)
        if hasattr(self.wm, "fused_chain"):
            self.wm.fused_chain = perf.fused_chain
        self.fused_adam = perf.fused_adam
        self._apply_fused_adam()

    @property
    def wm_opt(self) -> torch.optim.Optimizer:
        return self.wm_adam.get()

    def _adams(self) -> dict[str, LazyAdam]:
        adams = {"world model": self.wm_adam, "actor": self.ac.actor_adam, "critic": self.ac.critic_adam}
        if self.explorer is not None:
            adams.update({"explorer actor": self.explorer.actor_adam, "explorer critic": self.explorer.critic_adam,
                          "disagreement": self.disagreement.adam})
        return adams

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """Every optimizer of the agent by name: the world model's, the actor-critic's, Plan2Explore's
        (made here if they were not yet)."""
        return {name: adam.get() for name, adam in self._adams().items()}

    def _apply_fused_adam(self) -> None:
        for adam in self._adams().values():
            adam.set_fused(self.fused_adam)

    def seed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    @property
    def precision(self) -> str:
        """What the forward passes run in: ``bf16 autocast`` or ``fp32``."""
        return "bf16 autocast" if self.bf16 else "fp32"

    def _autocast(self):
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with self._autocast():
            loss, metrics, out = self.wm.loss(batch, generator=self.generator)
        if not torch.isfinite(loss):  # bad inputs or weights: report it before any update spreads it
            self.updates += 1
            return {"loss/wm": float("nan"), **{k: float(v) for k, v in metrics.items()}}
        self.wm_opt.zero_grad(set_to_none=True)
        loss.backward()
        metrics["grad/wm"] = nn.utils.clip_grad_norm_(self.wm.parameters(), self.cfg.wm.grad_clip)
        self.wm_opt.step()
        metrics["loss/wm"] = loss.detach()

        self._behaviour_update(out, batch, metrics)
        self.updates += 1
        return {k: float(v) for k, v in metrics.items()}

    def policy_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One actor-critic update in imagination with the world model frozen: imagination starts
        from the posterior states of ``batch`` (target data, in the policy stage) and rewards
        come from the world model's reward head."""
        batch = {k: v.to(self.device, non_blocking=True) for k, v in batch.items()}
        with torch.no_grad(), self._autocast():
            out = self.wm.observe({k: batch[k] for k in self.obs_spec}, batch["action"], batch["is_first"],
                                  generator=self.generator)
        metrics: dict[str, torch.Tensor] = {}
        clone = None
        if self.bc_weight:
            # the posterior state at t and the action taken from it (recorded at t + 1; the action of a
            # step that starts an episode is a placeholder)
            clone = (self.bc_weight, out["feat"][:, :-1].detach(), batch["action"][:, 1:],
                     ~batch["is_first"][:, 1:].bool())
        self._behaviour_update(out, batch, metrics, explore=False, clone=clone)
        self.updates += 1
        return {k: float(v) for k, v in metrics.items()}

    def _behaviour_update(self, out: dict, batch: dict, metrics: dict, explore: bool = True,
                          clone: tuple | None = None) -> None:
        # imagination from every posterior state of the batch (or a random subset)
        states = type(out["states"])(*(x.detach().flatten(0, 1) for x in out["states"]))
        if self.cfg.imag_starts and self.cfg.imag_starts < len(states[0]):
            idx = torch.randperm(len(states[0]), generator=self.generator, device=self.device)[: self.cfg.imag_starts]
            states = type(states)(*(x[idx] for x in states))
        with self._autocast():
            traj = self.wm.imagine(ImaginationPolicy(self.ac.actor, self.action_size, clip=self.cfg.imag_clip),
                                   states, self.cfg.ac.horizon, generator=self.generator)
            if self.pessimism is not None:  # redraw_pessimistic's policy stage (agent.pessimism)
                from redraw.agent.pessimism import pessimistic

                traj, extra = pessimistic(traj, self.wm, self.pessimism, start=states, generator=self.generator)
                metrics.update(extra)
            metrics.update(self.ac.update(traj, clone))
            if explore and self.explorer is not None:
                # Plan2Explore: the ensemble learns feat_t, a_{t+1} -> embed_{t+1}; the explorer is
                # rewarded by its disagreement alone (extrinsic weight 0)
                feat = out["feat"].detach()
                metrics.update(self.disagreement.update(feat[:, :-1], batch["action"][:, 1:], out["embed"][:, 1:]))
                traj = self.wm.imagine(ImaginationPolicy(self.explorer.actor, self.action_size),
                                       states, self.cfg.ac.horizon, generator=self.generator)
                traj["reward"] = self.disagreement.reward(traj["feat"][:-1], traj["action"].clamp(-1, 1))
                metrics.update({k.replace("/", "/explore_", 1): v for k, v in self.explorer.update(traj).items()})

    def attach_residual(self, cfg) -> None:
        """Give the DRAW world model a fresh latent residual (``models.residual.ResidualConfig``)."""
        from redraw.models.residual import LatentResidual

        if not isinstance(self.wm, DRAW):
            raise ValueError(f"the latent residual needs a DRAW world model, this agent has {self.cfg.world_model}")
        self.residual_cfg = cfg
        self.wm.residual = LatentResidual(self.wm.cfg.latent_vars, self.wm.cfg.latent_classes, self.action_size,
                                          cfg).to(self.device)

    def reset_actor_critic(self) -> None:
        """A freshly initialised actor-critic (ReDRAW's policy stage); the world model is kept."""
        self.ac = ActorCritic(self.wm.feat_dim, self.action_size, self.cfg.ac).to(self.device)
        self.ac.use_compile(self.cfg.compile)
        self._apply_fused_adam()

    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray], state=None, sample: bool = True, explore: bool = False,
            generator: torch.Generator | None = None):
        """One action for one observation. ``state`` is what the previous call returned (None at
        an episode start); returns ``(action, state)``. Runs ``PolicyStep`` (the deployable
        policy) in fp32 with its randomness drawn from ``generator`` (default: the agent's)."""
        actions, state = self.act_batch({k: np.asarray(v)[None] for k, v in obs.items()}, state, sample, explore,
                                        [self.generator if generator is None else generator])
        return actions[0], state

    @torch.no_grad()
    def act_batch(self, obs: dict[str, np.ndarray], state=None, sample: bool = True, explore: bool = False,
                  generators: list[torch.Generator] | None = None):
        """One action each for N observations (arrays [N, ...]) in one policy call: ``act`` for N
        episodes at once. Row i's randomness comes from ``generators[i]``, drawn as ``act`` draws
        it, and its products are computed as a batch of one computes them (``policy.RowByRow``),
        so each row's actions are, bit for bit, those it would get acting alone."""
        import contextlib

        from redraw.agent.policy import PolicyStep, RowByRow

        step = PolicyStep(self, explore=explore)  # cheap: it only refers to the agent's modules
        x = [torch.as_tensor(np.asarray(obs[k]), device=self.device) for k in self.obs_spec]
        n = x[0].shape[0]
        if state is None:
            latent = torch.zeros(n, step.latent_size, device=self.device)
            prev_action = torch.zeros(n, self.action_size, device=self.device)
        else:
            latent, prev_action = state
        first = torch.full((n,), float(state is None), device=self.device)
        generators = generators or [self.generator] * n
        draws = [(torch.rand((1, step.S), generator=g, device=self.device),
                  torch.randn((1, self.action_size), generator=g, device=self.device)) for g in generators]
        uniform, noise = torch.cat([u for u, _ in draws]), torch.cat([e for _, e in draws])
        if not sample:
            noise = torch.zeros_like(noise)
        with RowByRow(n) if n > 1 else contextlib.nullcontext():
            action, latent = step(*x, latent, prev_action, first, uniform, noise)
        out = action if self.action_sign == 1.0 else action * self.action_sign
        return out.cpu().numpy(), (latent, action)

    def checkpoint_state(self) -> dict:
        return {
            "model": self.state_dict(),
            "wm_opt": self.wm_adam.state_dict(),
            "actor_opt": self.ac.actor_adam.state_dict(),
            "critic_opt": self.ac.critic_adam.state_dict(),
            "retnorm": self.ac.retnorm.state_dict(),
            "generator": self.generator.get_state(),
            "generator_device": self.device.type,
            "updates": self.updates,
            **({"explorer_actor_opt": self.explorer.actor_adam.state_dict(),
                "explorer_critic_opt": self.explorer.critic_adam.state_dict(),
                "explorer_retnorm": self.explorer.retnorm.state_dict(),
                "disagreement_opt": self.disagreement.adam.state_dict()} if self.explorer is not None else {}),
        }

    def load_checkpoint_state(self, state: dict) -> None:
        self.load_state_dict(state["model"])
        if "wm_opt" not in state:  # weights only (a shipped model, redraw.pretrained): fresh optimizers
            self.updates = int(state.get("updates", 0))
            if "retnorm" in state:
                self.ac.retnorm.load_state_dict(state["retnorm"])
            return
        # optimizer states wait for their optimizers, which an agent that only acts never makes
        self.wm_adam.load_state_dict(state["wm_opt"])
        self.ac.actor_adam.load_state_dict(state["actor_opt"])
        self.ac.critic_adam.load_state_dict(state["critic_opt"])
        self.ac.retnorm.load_state_dict(state["retnorm"])
        # a generator's state is device-specific (a CUDA one is a seed and an offset): it resumes on
        # the kind of device that saved it; elsewhere (a GPU-trained policy deployed on a CPU) the
        # generator keeps its seed. A loaded state may have been mapped to the device: set_state
        # wants it on the CPU.
        if state.get("generator_device", "cpu") == self.device.type:
            self.generator.set_state(state["generator"].cpu())
        self.updates = int(state["updates"])
        if self.explorer is not None and "explorer_actor_opt" in state:
            self.explorer.actor_adam.load_state_dict(state["explorer_actor_opt"])
            self.explorer.critic_adam.load_state_dict(state["explorer_critic_opt"])
            self.explorer.retnorm.load_state_dict(state["explorer_retnorm"])
            self.disagreement.adam.load_state_dict(state["disagreement_opt"])


class AgentPolicy:
    """An agent as a collection behaviour (``reset(rng)`` / ``act(obs)``, see data.behaviours).
    Each episode acts with a generator seeded from the episode's ``rng`` (without one: the
    agent's own generator), so its actions depend on its seed alone."""

    def __init__(self, agent: Agent, sample: bool = True, explore: bool = False):
        self.agent, self.sample, self.explore, self.state = agent, sample, explore, None
        self.generators: list[torch.Generator | None] = [None]

    def reset(self, rng=None) -> None:
        self.reset_batch([rng])

    def act(self, obs: dict) -> np.ndarray:
        return self.act_batch([obs])[0]

    def reset_batch(self, rngs: list) -> None:
        """Start len(rngs) episodes acted together (``act_batch``), each with its own generator."""
        from redraw.agent.policy import episode_generator

        self.state = None
        self.generators = [None if rng is None else episode_generator(rng, self.agent.device) for rng in rngs]

    def act_batch(self, obs: list[dict], rows: list[int] | None = None) -> list[np.ndarray]:
        """One action for each episode in ``rows`` (default: all, in order), from its observation
        in ``obs``, in one policy call; the other episodes' states are kept as they are."""
        rows = list(range(len(self.generators))) if rows is None else rows
        gens = [self.generators[i] for i in rows]
        gens = None if any(g is None for g in gens) else gens  # None: the agent's own generator
        batch = {k: np.stack([o[k] for o in obs]) for k in obs[0]}
        if self.state is None or len(rows) == len(self.generators):
            actions, self.state = self.agent.act_batch(batch, self.state, self.sample, self.explore, gens)
        else:  # some episodes ended: step the others, keep every row of the state
            idx = torch.as_tensor(rows)
            latent, prev = self.state
            actions, (lat, act) = self.agent.act_batch(batch, (latent[idx], prev[idx]), self.sample, self.explore, gens)
            latent, prev = latent.clone(), prev.clone()
            latent[idx], prev[idx] = lat, act
            self.state = (latent, prev)
        return list(actions)


def load_agent(path, expect: dict | None = None, device: str | torch.device = "cpu",
               bf16: bool | None = None) -> Agent:
    """Rebuild an agent from a training stage's ``agent.pt``; ``expect`` (e.g. the obs spec of
    the env it will act in) must match the stored identity on the keys it names. ``bf16``: its
    training precision (None: bf16 autocast where ``device`` multiplies bf16 natively)."""
    from redraw.checkpoint import load_checkpoint
    from redraw.config import section

    blob = load_checkpoint(path, expect=expect, map_location=device, subset=True)
    ident = blob["identity"]
    cfg = AgentConfig(world_model=ident["world_model"], exploration=ident.get("exploration", "task"),
                      wm=section(ident, "model", WorldModelConfig, path),
                      ac=section(ident, "actor_critic", ActorCriticConfig, path), bf16=bf16)
    obs_spec = {k: (tuple(shape), "uint8" if len(shape) == 3 else "float32") for k, shape in ident["obs_spec"].items()}
    agent = Agent(obs_spec, int(ident["action_size"]), cfg, device=device)
    if ident.get("residual") is not None:
        from redraw.models.residual import ResidualConfig

        agent.attach_residual(section(ident, "residual", ResidualConfig, path))
    agent.load_checkpoint_state(blob["agent"])
    agent.action_sign = float(ident.get("action_sign", 1.0))
    return agent
