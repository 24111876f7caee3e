"""Source simulators and their perturbed targets, by name, from an env-pair file (see ``registry``)."""

from redraw.envs.dmc import DMCEnv, make_env
from redraw.envs.perturbations import EnvFileError
from redraw.envs.registry import EnvSpec, Registry, get_spec, load_pairs, source_of, target_of

__all__ = ["ENVS", "PAIRS", "EnvSpec", "EnvFileError", "Registry", "get_spec", "load_pairs", "source_of",
           "target_of", "DMCEnv", "make_env"]


def __getattr__(name: str):
    if name in ("ENVS", "PAIRS"):  # the default env-pair file's, read when first used
        from redraw.envs import registry

        return getattr(registry, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
