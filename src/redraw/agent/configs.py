"""An agent's settings from params.yaml: its world model (section ``model``), its actor-critic
(``actor_critic``) and section ``pretrain``, whose world model, exploration, precision and DreamerV3
settings shape the agent and whose schedule the pretraining stage runs. The pretraining builds its
agent from them, and a shipped model is checked against them (``redraw.pretrained``)."""

from __future__ import annotations

from dataclasses import dataclass, replace

from redraw.agent.actor_critic import ActorCriticConfig
from redraw.agent.agent import AgentConfig
from redraw.config import section
from redraw.models.draw import WorldModelConfig
from redraw.perf import pick_device, resolve_bf16


@dataclass
class PretrainConfig:
    """Online pretraining schedule (section ``pretrain`` of params.yaml)."""

    world_model: str = "draw"  #: draw (ReDRAW) | rssm (DreamerV3, for the finetune baseline)
    exploration: str = "task"  #: task (act with the task actor) | plan2explore (paper's pretraining)
    steps: int = 20000  #: agent steps to take in the source env (on top of the collected data)
    train_ratio: float = 0.5  #: world-model updates per agent step (paper: 0.5)
    envs: int = 1  #: environments stepped together, one batched policy call per step (paper: 4)
    batch_size: int = 16
    batch_length: int = 64
    imag_starts: int = 0  #: imagination start states per update (0: all batch_size*batch_length)
    #: bfloat16 autocast for forward passes: true, false, or auto (where the machine has native
    #: bf16 products: AMX / AVX512-BF16 CPUs, bf16 GPUs; ``perf.native_bf16``)
    bf16: bool | str = "auto"
    eval_every: int = 5000  #: agent steps between evaluations on the source task
    eval_episodes: int = 5  #: episodes per evaluation, new ones at each point
    #: episodes of the last evaluation, the one the "learnt its task" verdict reads (0: eval_episodes)
    final_eval_episodes: int = 0
    checkpoint_every: int = 500  #: updates between checkpoints
    log_every: int = 100  #: updates between metric records
    #: stage pretrain_rssm (the DreamerV3 baseline) takes DreamerV3's settings in place of DRAW's:
    rssm_horizon: int = 15  #: imagination horizon
    rssm_latent_vars: int = 32  #: categorical variables (DreamerV3: 32 at every model size)
    rssm_latent_classes: int = 32  #: classes per variable (DreamerV3: 32)
    rssm_dyn_scale: float = 0.5  #: dyn KL weight (DreamerV3: 0.5; free bits: model.free_bits)
    rssm_rep_scale: float = 0.1  #: rep KL weight (DreamerV3: 0.1)
    rssm_actor_grad: str = "backprop"  #: DreamerV3 for continuous actions (reinforce: as DRAW's actor)
    imag_clip: bool = False  #: experimental: clip imagined actions before REINFORCE (pre-40dcb3b; docs/investigations.md §1.5)


#: ``pretrain`` keys left out of a run's identity: the same training up to any step whatever they
#: are (evaluations act with generators of their own, checkpoints resume bit for bit), so a run
#: given more ``steps`` goes on from its checkpoint instead of starting again
NOT_SHAPING = ("steps", "eval_every", "eval_episodes", "final_eval_episodes", "checkpoint_every", "log_every")


def configs_from_params(params: dict, path: str = "params.yaml", world_model: str | None = None):
    """Agent and schedule configs; ``world_model`` overrides ``pretrain.world_model``. The RSSM
    (the DreamerV3 baseline) takes DreamerV3's settings from ``pretrain.rssm_*``: horizon, latent
    shape, dyn/rep weights and actor gradient; the sizes and the rest come from ``model``."""
    wm = section(params, "model", WorldModelConfig, path)
    ac = section(params, "actor_critic", ActorCriticConfig, path)
    pre = section(params, "pretrain", PretrainConfig, path)
    if world_model is not None:
        pre.world_model = world_model
    # resolved here: a run's identity (and its checkpoint) records the precision it trained in
    pre.bf16 = resolve_bf16(pre.bf16, pick_device(), f"{path}: pretrain.bf16")
    if pre.world_model == "rssm":
        ac.horizon, ac.actor_grad = pre.rssm_horizon, pre.rssm_actor_grad
        wm = replace(wm, latent_vars=pre.rssm_latent_vars, latent_classes=pre.rssm_latent_classes,
                     dyn_scale=pre.rssm_dyn_scale, rep_scale=pre.rssm_rep_scale)
    agent = AgentConfig(world_model=pre.world_model, wm=wm, ac=ac, bf16=pre.bf16, imag_starts=pre.imag_starts,
                        exploration=pre.exploration, imag_clip=pre.imag_clip)
    return agent, pre
