"""dm_control tasks and their perturbed targets, registered by name (see ``registry``)."""

from redraw.envs.registry import ENVS, PAIRS, EnvSpec, get_spec, source_of, target_of
from redraw.envs.dmc import DMCEnv, make_env

__all__ = ["ENVS", "PAIRS", "EnvSpec", "get_spec", "source_of", "target_of", "DMCEnv", "make_env"]
