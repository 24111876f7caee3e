"""The deployable policy, the MLflow registry, and the robot stand-in.

* ``log_policy``: an MLflow pyfunc model that bundles what acting needs (encoder, posterior,
  prior + residual for the latent chain, actor: the agent checkpoint and this package's code),
  with a tensor signature and an input example, CPU torch pinned, and a ``torch.export``
  program of the same step (``policy.pt2``; TorchScript's successor, which PyTorch 2.13
  deprecates) for on-robot runtimes: ``torch.export.load`` in Python, AOTInductor for C++.
* One call = one observation: inputs are the observation keys plus ``latent``,
  ``prev_action``, ``is_first``, ``uniform`` and ``noise`` (see ``redraw.agent.policy``);
  outputs ``action`` and the next ``latent``.
* Registry: ``register`` (new version, tags, alias ``challenger``), ``promote`` (gated move of
  alias ``champion``), ``rollback``.
* ``deploy_returns``: load a policy by URI in this process and run it in a simulator with the
  evaluate stage's seeds, so the returns match ``reports/evaluate/<method>.json``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import mlflow.pyfunc

CHALLENGER, CHAMPION = "challenger", "champion"
STEP_INPUTS = ("latent", "prev_action", "is_first", "uniform", "noise")


class DeployError(ValueError):
    """A model, registry or request that cannot be used; the message says which field and why."""


def registered_name(source: str, target: str) -> str:
    """The registry holds one model per env pair."""
    return f"{source}-to-{target}"


def _step_shapes(step) -> dict[str, tuple[int, ...]]:
    return {"latent": (step.latent_size,), "prev_action": (step.action_size,), "is_first": (),
            "uniform": (step.S,), "noise": (step.action_size,)}


def policy_signature(agent):
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    from redraw.agent.policy import PolicyStep

    step = PolicyStep(agent)
    inputs = [TensorSpec(np.dtype(dtype), (-1, *shape), key) for key, (shape, dtype) in agent.obs_spec.items()]
    inputs += [TensorSpec(np.dtype(np.float32), (-1, *shape), key) for key, shape in _step_shapes(step).items()]
    outputs = [TensorSpec(np.dtype(np.float32), (-1, agent.action_size), "action"),
               TensorSpec(np.dtype(np.float32), (-1, step.latent_size), "latent")]
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))


def input_example(agent) -> dict[str, np.ndarray]:
    """An episode's first call: zero observation, zero state, is_first = 1, median uniforms."""
    from redraw.agent.policy import PolicyStep

    step = PolicyStep(agent)
    example = {k: np.zeros((1, *shape), dtype) for k, (shape, dtype) in agent.obs_spec.items()}
    example.update({k: np.zeros((1, *shape), np.float32) for k, shape in _step_shapes(step).items()})
    example["is_first"][:] = 1.0
    example["uniform"][:] = 0.5
    return example


def _step_tensors(step, obs_spec: dict, model_input: dict[str, Any]) -> list:
    """The model input as the step's positional tensors, checked key by key."""
    import torch

    shapes = {**{k: tuple(s) for k, (s, _) in obs_spec.items()}, **_step_shapes(step)}
    missing = [k for k in shapes if k not in model_input]
    if missing:
        raise DeployError(f"policy input is missing {', '.join(missing)} (expects {', '.join(shapes)})")
    out = []
    for key, shape in shapes.items():
        value = np.asarray(model_input[key])
        if value.shape[1:] != shape:
            raise DeployError(f"policy input {key!r} has per-row shape {value.shape[1:]}, expected {shape}")
        out.append(torch.as_tensor(value, dtype=torch.uint8 if obs_spec.get(key, ((), ""))[1] == "uint8"
                                   else torch.float32))
    return out


class RedrawPolicy(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: ``predict({obs keys, latent, prev_action, is_first, uniform, noise})``."""

    def load_context(self, context) -> None:
        import torch

        from redraw.agent.agent import load_agent
        from redraw.agent.policy import PolicyStep

        # one step at batch 1: a second torch thread only waits for a core, and where another
        # process holds one it waits long (43 ms instead of 1.2 ms per step beside a training)
        torch.set_num_threads(1)
        self.agent = load_agent(context.artifacts["agent"], device="cpu")
        self.step = PolicyStep(self.agent).eval()

    def predict(self, context, model_input, params=None):
        import torch

        if not isinstance(model_input, dict):
            raise DeployError(f"policy input must be named tensors (a dict), got {type(model_input).__name__}")
        args = _step_tensors(self.step, self.agent.obs_spec, model_input)
        with torch.no_grad():
            action, latent = self.step(*args)
        return {"action": action.numpy(), "latent": latent.numpy()}


def export_program(agent, path: str | Path) -> Path:
    """Export the policy step (batch of one) with ``torch.export`` to ``path`` (.pt2); load it
    with ``torch.export.load(path).module()`` and call it with the pyfunc's inputs in order:
    the observation keys, then latent, prev_action, is_first, uniform, noise."""
    import torch

    from redraw.agent.policy import PolicyStep

    step = PolicyStep(agent).eval()
    args = tuple(_step_tensors(step, agent.obs_spec, input_example(agent)))
    with torch.no_grad():
        program = torch.export.export(step, args)
    path = Path(path)
    torch.export.save(program, str(path))
    return path


def pip_requirements() -> list[str]:
    import mlflow as _mlflow
    import torch

    return ["--extra-index-url https://download.pytorch.org/whl/cpu", f"torch=={torch.__version__.split('+')[0]}",
            f"numpy=={np.__version__}", f"mlflow=={_mlflow.__version__}"]


def log_policy(agent_path: str | Path, metadata: dict[str, Any]) -> str:
    """Log the policy at ``agent_path`` as a pyfunc model in the active MLflow run; returns its URI."""
    from redraw.agent.agent import load_agent

    agent = load_agent(agent_path, device="cpu")
    code = Path(__file__).resolve().parent  # this package, so the model loads without an install
    with tempfile.TemporaryDirectory() as tmp:
        program = export_program(agent, Path(tmp) / "policy.pt2")
        info = mlflow.pyfunc.log_model(
            name="policy", python_model=RedrawPolicy(), artifacts={"agent": str(agent_path), "program": str(program)},
            code_paths=[str(code)], signature=policy_signature(agent), input_example=input_example(agent),
            pip_requirements=pip_requirements(), metadata=metadata)
    return info.model_uri


# -- registry ---------------------------------------------------------------------------------------
def _client():
    from mlflow import MlflowClient

    from redraw.tracking import mlflow_setup

    mlflow_setup()
    return MlflowClient()


def _version_by_alias(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def register(model_uri: str, name: str, tags: dict[str, str], description: str = "") -> str:
    """A new version of ``name`` from ``model_uri`` with ``tags``; alias ``challenger`` moves to it."""
    client = _client()
    mv = mlflow.register_model(model_uri, name, tags=tags)
    if description:
        client.update_model_version(name, mv.version, description=description)
    client.set_registered_model_alias(name, CHALLENGER, mv.version)
    return str(mv.version)


def _return(mv, tag: str = "target_return") -> float:
    try:
        return float(mv.tags[tag])
    except (KeyError, ValueError):
        raise DeployError(f"model version {mv.name} v{mv.version} has no numeric {tag} tag") from None


def promote(name: str, margin: float = 0.0, tag: str = "target_return", version: str | None = None) -> tuple[bool, str]:
    """Move ``champion`` to the challenger (or to ``version``) if its return (the model version's
    tag ``tag``: the evaluation's ``target_return``, or ``robot_return``, the robot's logged return
    that ``redraw rounds`` records) beats the champion's by more than ``margin`` (or there is no
    champion). Returns (promoted, why)."""
    client = _client()
    challenger = client.get_model_version(name, version) if version else _version_by_alias(client, name, CHALLENGER)
    if challenger is None:
        raise DeployError(f"registered model {name!r} has no {CHALLENGER!r} version; run `dvc repro register`")
    champion = _version_by_alias(client, name, CHAMPION)
    what = tag.replace("_", " ")
    new = _return(challenger, tag)
    if champion is not None and champion.version == challenger.version:
        return False, f"{name} v{challenger.version} is already the champion"
    if champion is not None:
        old = _return(champion, tag)
        if not new > old + margin:
            return False, (f"refused: challenger v{challenger.version} {what} {new:.2f} does not beat champion "
                           f"v{champion.version} ({old:.2f}) by more than the margin {margin:g}")
    history = json.loads(client.get_registered_model(name).tags.get("champion_history", "[]"))
    if champion is not None:
        history.append(champion.version)
    client.set_registered_model_tag(name, "champion_history", json.dumps(history))
    client.set_registered_model_alias(name, CHAMPION, challenger.version)
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    before = f"v{champion.version} ({_return(champion, tag):.2f})" if champion is not None else "none"
    why = f"promoted {name} v{challenger.version} ({what} {new:.2f}) over {before}, margin {margin:g}"
    client.set_model_version_tag(name, challenger.version, "promoted_at", stamp)
    client.set_model_version_tag(name, challenger.version, "promotion", why)
    client.update_model_version(name, challenger.version,
                                description=f"{challenger.description or ''}\n[{stamp}] {why}".strip())
    return True, why


def rollback(name: str) -> str:
    """Give ``champion`` back to the version that held it before the last promotion."""
    client = _client()
    history = json.loads(client.get_registered_model(name).tags.get("champion_history", "[]"))
    if not history:
        raise DeployError(f"registered model {name!r} has no earlier champion to roll back to")
    previous = history.pop()
    current = _version_by_alias(client, name, CHAMPION)
    client.set_registered_model_alias(name, CHAMPION, previous)
    client.set_registered_model_tag(name, "champion_history", json.dumps(history))
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())
    why = f"rolled back {name} champion from v{current.version if current else '?'} to v{previous}"
    client.set_model_version_tag(name, previous, "rolled_back_at", stamp)
    return why


# -- the robot stand-in -----------------------------------------------------------------------------
class PyfuncBehaviour:
    """A loaded pyfunc policy as a collection behaviour, with the randomness stream that
    ``AgentPolicy`` draws for the same episode (uniforms, then noise, per step, from the
    generator the episode's ``rng`` seeds; without one, a stream seeded once by ``seed``)."""

    def __init__(self, model, shapes: dict[str, tuple[int, ...]], seed: int):
        import torch

        self.model, self.shapes = model, shapes
        self.generator = torch.Generator().manual_seed(seed)

    def reset(self, rng=None) -> None:
        from redraw.agent.policy import episode_generator

        if rng is not None:
            self.generator = episode_generator(rng)
        self.latent = np.zeros((1, *self.shapes["latent"]), np.float32)
        self.prev_action = np.zeros((1, *self.shapes["prev_action"]), np.float32)
        self.first = True

    def act(self, obs: dict) -> np.ndarray:
        import torch

        uniform = torch.rand((1, *self.shapes["uniform"]), generator=self.generator).numpy()
        noise = torch.randn((1, *self.shapes["noise"]), generator=self.generator).numpy()
        inputs = {k: np.asarray(obs[k])[None] for k in obs}
        inputs.update(latent=self.latent, prev_action=self.prev_action,
                      is_first=np.array([float(self.first)], np.float32), uniform=uniform, noise=noise)
        out = self.model.predict(inputs)
        self.latent, self.prev_action, self.first = out["latent"], out["action"], False
        return out["action"][0]


def check_signature(model, env) -> dict[str, tuple[int, ...]]:
    """The model's input shapes; refuses a model whose observation inputs differ from ``env``'s."""
    inputs = {spec.name: tuple(spec.shape[1:]) for spec in model.metadata.get_input_schema().inputs}
    for key, (shape, _) in env.observation_spec().items():
        if key not in inputs:
            raise DeployError(f"model has no input {key!r} for the env's observation {key} {tuple(shape)}; "
                              f"its inputs: {', '.join(inputs)}")
        if tuple(inputs[key]) != tuple(shape):
            raise DeployError(f"observation {key!r}: the env gives shape {tuple(shape)}, the model expects "
                              f"{tuple(inputs[key])}")
    extra = set(inputs) - set(env.observation_spec()) - set(STEP_INPUTS)
    if extra:
        raise DeployError(f"model expects observation(s) {', '.join(sorted(extra))} that the env does not give")
    if inputs.get("prev_action") != (env.action_size,):
        raise DeployError(f"action size: the env has {env.action_size}, the model {inputs.get('prev_action')}")
    return inputs


def open_policy(model_uri: str, seed: int, env_name: str | None = None):
    """The registered policy at ``model_uri`` as a behaviour, and the env it was trained for (or
    ``env_name``), its inputs checked against that env: (behaviour, env, env's name); the caller
    closes the env."""
    from redraw.envs import make_env

    try:
        model = mlflow.pyfunc.load_model(model_uri)
    except Exception as exc:  # noqa: BLE001 - the registry or the URI: say which
        raise DeployError(f"cannot load {model_uri}: {type(exc).__name__}: {exc}") from None
    meta = model.metadata.metadata or {}
    env_name = env_name or meta.get("env_target")
    if not env_name:
        raise DeployError(f"{model_uri} does not name its env (metadata env_target); pass --env")
    env = make_env(env_name, seed=seed + 3, **meta.get("env_kwargs", {}))
    try:
        return PyfuncBehaviour(model, check_signature(model, env), seed), env, env_name
    except BaseException:
        env.close()
        raise


def deploy_returns(model_uri: str, env_name: str | None = None, episodes: int = 10, seed: int = 0,
                   progress: bool = True) -> dict[str, Any]:
    """Load the policy at ``model_uri`` and run it in ``env_name`` (default: the target it was
    trained for) with the evaluate stage's seeds; returns the returns and their summary."""
    from redraw.data.collect import run_policy
    from redraw.stats import summarise
    from redraw.tracking import mlflow_setup

    mlflow_setup()
    behaviour, env, env_name = open_policy(model_uri, seed, env_name)
    try:
        returns, action_sums = run_policy(env, behaviour, episodes, seed, progress, desc=f"deploy {env_name}")
    finally:
        env.close()
    return {"model": model_uri, "env": env_name, "returns": returns, "action_sums": action_sums, **summarise(returns)}
