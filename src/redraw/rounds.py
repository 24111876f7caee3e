"""Adapt in rounds: deploy, log, calibrate again, redeploy (``redraw rounds``, ``flows/rounds.py``; docs/rounds.md).

In a pipeline directory whose pipeline has run (``dvc repro``: a registered model exists), each of
k rounds does, one step after another:

1. ``deploy``: pin the registered model's champion (or challenger) version;
2. ``collect``: the robot (``redraw.robot``) runs it for N episodes and hands back its logs;
3. ``import``: the logs through the import path, with the mapping config, into
   ``rounds/round-NNN/data/logs``, validated with the target-data contract (Great Expectations);
   logs of another robot or pair are refused naming the key;
4. ``merge``: with the earlier rounds' logs and the first data set, as ``keep`` says, into
   ``rounds/round-NNN/data/target``, validated again with the whole contract;
5. ``track``: ``dvc add rounds/round-NNN/data`` (the round's data version); params.yaml's
   ``target_data`` points at it;
6. ``train``: the pipeline's ``validate_target``, ``calibrate@M``, ``train_policy@M`` and
   ``evaluate@M`` (DVC; a stopped training resumes from its checkpoint);
7. ``register``: the ``register`` stage (a new version, alias challenger);
8. ``promote``: the gate of ``redraw promote``.

Every step's output is written whole or not at all, and a step whose output exists is not done
again; ``rounds/round-NNN/state.json`` (the last step done) is written atomically after each step,
``rounds/manifest.json`` holds the loop's settings, its first data set and its MLflow run. A loop
that was stopped resumes at the step it stopped in: no round's data are lost or counted twice.
Each round is an MLflow run nested under the loop's, with its data version, metrics and versions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from redraw.config import ConfigError, get

ROUNDS = Path("rounds")
MANIFEST = ROUNDS / "manifest.json"
STANDIN_MAPPING = ROUNDS / "standin-mapping.yaml"
LOCK = ROUNDS / ".lock"
STEPS = ("deploy", "collect", "import", "merge", "track", "train", "register", "promote")
#: settings that decide a loop's data: a loop keeps them (a restart that asks for others is refused)
FIXED = ("method", "episodes", "keep", "base_episodes", "expert")
KEEP_HELP = ("all (the first data set and every round's logs), newest:N (the newest N rounds' logs only) or "
             "first+newest:N (the first data set and the newest N rounds' logs)")


class RoundError(RuntimeError):
    """A round that cannot go on; the message names the file or setting."""


class RoundRejected(RoundError):
    """A round's logs (or their merge) failed the data contract; ``report`` lists every failed check."""

    def __init__(self, report: str, result):
        super().__init__(report)
        self.report, self.result = report, result


@dataclass
class RoundsConfig:
    rounds: int = 1  #: rounds wanted in all (done ones are skipped)
    episodes: int = 20  #: robot episodes per round
    robot: str = "sim"  #: sim, sim:sqlite3, dir:INBOX or cmd:TEMPLATE (redraw.robot.make_robot)
    timeout: float = 3600.0  #: seconds to wait for a real robot's logs
    mapping: str = ""  #: mapping config of the robot's logs ('' : the stand-in's, or episode-schema logs)
    method: str = ""  #: the adapted method ('' : params register.method)
    deploy: str = "champion"  #: champion | challenger
    keep: str = "all"  #: KEEP_HELP
    base_episodes: int = 0  #: the first data set's first N episodes (0: all)
    margin: float | None = None  #: the promotion's margin (None: params promote.margin)
    #: what the gate compares: ``evaluate`` (the new policy's evaluate stage in env.target) or
    #: ``logged`` (the deployed challenger's return on the robot, as the robot or operator gave it)
    gate: str = "evaluate"
    jobs: int = 1  #: pipeline stages side by side
    params: str = "params.yaml"
    expert: str = ""  #: stand-in only: a checkpoint that acts instead of the deployed policy (a control)


def parse_keep(text: str) -> tuple[bool, int | None]:
    """``keep`` -> (the first data set is kept, the newest N rounds' logs or None for all)."""
    head, _, n = str(text).partition(":")
    if text == "all":
        return True, None
    if head in ("newest", "first+newest") and n.isdigit() and int(n) >= 1:
        return head == "first+newest", int(n)
    raise ConfigError(f"rounds: keep {text!r} is not {KEEP_HELP}")


def kept_parts(n: int, keep: str, base: str, base_episodes: int = 0) -> list[tuple[str, int | None]]:
    """The data sets round ``n`` calibrates on, oldest first (the calibration's target_transitions
    keeps the newest): (directory, first N episodes or None for all)."""
    first, newest = parse_keep(keep)
    logs = [str(ROUNDS / f"round-{i:03d}" / "data" / "logs") for i in range(1, n + 1)]
    if newest is not None:
        logs = logs[-newest:]
    return ([(base, base_episodes or None)] if first else []) + [(p, None) for p in logs]


def check_config(cfg: RoundsConfig) -> None:
    for key, least in (("rounds", 1), ("episodes", 1), ("jobs", 1), ("base_episodes", 0)):
        value = getattr(cfg, key)
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"rounds: {key} must be a whole number of at least {least}, got {value!r}")
    if cfg.deploy not in ("champion", "challenger"):
        raise ConfigError(f"rounds: deploy {cfg.deploy!r} is not champion or challenger")
    if cfg.gate not in ("evaluate", "logged"):
        raise ConfigError(f"rounds: gate {cfg.gate!r} is not evaluate or logged")
    if cfg.gate == "logged" and cfg.deploy != "challenger":
        raise ConfigError("rounds: gate logged compares the deployed challenger's logged return with the champion's: "
                          "it needs deploy challenger")
    if not cfg.timeout > 0:
        raise ConfigError(f"rounds: timeout must be positive, got {cfg.timeout!r}")
    if cfg.expert and not cfg.robot.startswith("sim"):
        raise ConfigError("rounds: expert acts in the stand-in only (robot sim)")
    parse_keep(cfg.keep)


def _stamp() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime())


def _call(name: str, fn: Callable[[], object]):
    return fn()


class Rounds:
    """The loop in ``root`` (module docstring). ``run`` calls ``round_runner(n, fn)`` for each
    round and ``step_runner(name, fn)`` for each step (by default: ``fn()``; the Prefect flow makes
    them subflows and tasks), so the CLI and the flow run this one implementation."""

    def __init__(self, cfg: RoundsConfig, root: str | os.PathLike = ".", robot=None):
        check_config(cfg)
        self.cfg, self.root, self._robot = cfg, Path(root).resolve(), robot
        self.manifest: dict = {}

    # -- files -----------------------------------------------------------------------------------
    @staticmethod
    def round_dir(n: int) -> Path:
        return ROUNDS / f"round-{n:03d}"

    def state_file(self, n: int) -> Path:
        return self.round_dir(n) / "state.json"

    def load_state(self, n: int) -> dict | None:
        path = self.state_file(n)
        return json.loads(path.read_text()) if path.is_file() else None

    def save_state(self, n: int, state: dict) -> None:
        from redraw.tracking import write_json

        state["updated"] = _stamp()
        write_json(self.state_file(n), state)

    @staticmethod
    def finished(state: dict | None) -> bool:
        return bool(state) and state.get("step") == STEPS[-1]

    # -- the registry and MLflow -----------------------------------------------------------------
    def client(self):
        from mlflow import MlflowClient

        from redraw.tracking import mlflow_setup

        mlflow_setup()
        return MlflowClient()

    def version_by_alias(self, alias: str):
        from redraw.deploy import _version_by_alias

        return _version_by_alias(self.client(), self.manifest["name"], alias)

    def _set_status(self, run_id: str | None, status: str) -> None:
        if run_id:
            client = self.client()
            if status == "RUNNING":
                client.update_run(run_id, status="RUNNING")
            else:
                client.set_terminated(run_id, status)

    # -- the loop --------------------------------------------------------------------------------
    def open(self) -> dict:
        """Read (or start) the loop: its manifest, the stand-in's mapping, a registered model
        with a champion to deploy. Refuses settings that differ from the loop's (``FIXED``)."""
        with contextlib.chdir(self.root):
            ROUNDS.mkdir(exist_ok=True)
            return self._open()

    def _open(self) -> dict:
        from redraw.data.episodes import dataset_fingerprint, list_episodes
        from redraw.data.schema import read_metadata
        from redraw.deploy import registered_name
        from redraw.stages import stage_params
        from redraw.tracking import write_json

        cfg = self.cfg
        params = stage_params(cfg.params)
        method = cfg.method or str(get(params, "register.method", cfg.params))
        from redraw.methods import calibrated

        if method not in calibrated():
            raise ConfigError(f"rounds: method {method!r} does not adapt to target data (choose from "
                              f"{', '.join(calibrated())})")
        if cfg.mapping and not Path(cfg.mapping).is_file():
            raise ConfigError(f"rounds: mapping config {cfg.mapping}: no such file")
        settings = {"method": method, "episodes": cfg.episodes, "keep": cfg.keep, "base_episodes": cfg.base_episodes,
                    "expert": cfg.expert}
        if MANIFEST.is_file():
            manifest = json.loads(MANIFEST.read_text())
            for key in FIXED:
                if manifest["settings"].get(key) != settings[key]:
                    raise ConfigError(f"{MANIFEST}: this loop's {key} is {manifest['settings'].get(key)!r}, this run "
                                      f"asks for {settings[key]!r}. A loop keeps the settings its data were made "
                                      f"with: run it as it was, or start another loop in another pipeline directory")
            self.manifest = manifest
        else:
            base = str(get(params, "target_data", cfg.params))
            read_metadata(base)  # a data set, or DataError naming its metadata.json
            if cfg.base_episodes > len(list_episodes(base)):
                raise ConfigError(f"rounds: base_episodes {cfg.base_episodes}: the first data set {base} holds "
                                  f"{len(list_episodes(base))} episodes")
            if method != get(params, "register.method", cfg.params):
                from redraw.config import set_params

                set_params({"register.method": method}, cfg.params, source="redraw rounds --method")
            source, target = get(params, "env.source", cfg.params), get(params, "env.target", cfg.params)
            self.manifest = {"id": uuid.uuid4().hex[:12], "created": _stamp(), "settings": settings, "base": base,
                             "base_fingerprint": dataset_fingerprint(base), "name": registered_name(source, target),
                             "source": source, "target": target, "seed": int(get(params, "seed", cfg.params)),
                             "preset": str(params.get("preset", ""))}
            self._ensure_registered()
            self.manifest["run_id"] = self._parent_run()
            write_json(MANIFEST, self.manifest)
        if cfg.robot.startswith("sim") and not cfg.mapping:
            self._write_standin_mapping(params)
        if cfg.deploy == "champion" and self.version_by_alias("champion") is None:
            from redraw.deploy import promote

            promoted, why = promote(self.manifest["name"], self.margin())  # no champion: the first is not gated
            print(f"rounds: {why}", flush=True)
        return self.manifest

    def margin(self) -> float:
        from redraw.config import load_params

        if self.cfg.margin is not None:
            return float(self.cfg.margin)
        return float(get(load_params(self.cfg.params), "promote.margin", self.cfg.params))

    def _ensure_registered(self) -> None:
        """The pipeline's registered model; where the store has none (e.g. a copied work
        directory without its MLflow store), the register stage registers register.method's policy."""
        if self.version_by_alias("challenger") is None and self.version_by_alias("champion") is None:
            from redraw.stages import register, stage_params

            print(f"rounds: {self.manifest['name']} is not registered here; registering the evaluated policy",
                  flush=True)
            register.run(stage_params(self.cfg.params), self.cfg.params)

    def _parent_run(self) -> str:
        import mlflow

        client = self.client()
        experiment = mlflow.get_experiment_by_name("redraw").experiment_id
        m = self.manifest
        run = client.create_run(experiment, run_name=f"rounds {m['settings']['method']} {m['target']}", tags={
            "redraw.kind": "rounds", "redraw.rounds_id": m["id"], "method": m["settings"]["method"],
            "env_target": m["target"], "registered_model": m["name"], "preset": m["preset"]})
        for key, value in {**m["settings"], "base": m["base"], "robot": self.cfg.robot}.items():
            client.log_param(run.info.run_id, key, str(value))
        return run.info.run_id

    def _write_standin_mapping(self, params: dict) -> None:
        import yaml

        from redraw.data.importers.convert import env_facts
        from redraw.envs.pair import pairs_of
        from redraw.robot import standin_mapping

        env = params["env"]
        dims, timestep = env_facts(env["target"], env["obs_mode"], int(env["image_size"]), pairs_of(params))
        hz = 1.0 / (timestep * int(env["action_repeat"]))
        mapping = standin_mapping(env["target"], env["obs_mode"], hz, int(env["image_size"]),
                                  int(get(params, "validate.min_episode_length", self.cfg.params)))
        text = yaml.safe_dump(mapping, sort_keys=False)
        if not STANDIN_MAPPING.is_file() or STANDIN_MAPPING.read_text() != text:
            tmp = STANDIN_MAPPING.with_name(f".{STANDIN_MAPPING.name}.tmp")
            tmp.write_text(text)
            os.replace(tmp, STANDIN_MAPPING)

    @property
    def robot(self):
        if self._robot is None:
            from redraw.robot import make_robot

            extra = {"expert": self.cfg.expert} if self.cfg.expert else {}
            self._robot = make_robot(self.cfg.robot, self.cfg.timeout, **extra)
        return self._robot

    def run(self, round_runner: Callable | None = None, step_runner: Callable | None = None) -> list[dict]:
        """Rounds 1 .. ``rounds``, each finished one skipped; returns their states."""
        from filelock import FileLock, Timeout

        round_runner = round_runner or (lambda n, fn: fn())
        with contextlib.chdir(self.root):
            ROUNDS.mkdir(exist_ok=True)
            try:
                lock = FileLock(str(LOCK), timeout=0)
                lock.acquire()
            except Timeout:
                raise RoundError(f"{self.root / LOCK}: another `redraw rounds` runs in this directory") from None
            try:
                self._open()
                states = []
                for n in range(1, self.cfg.rounds + 1):
                    state = self.load_state(n)
                    if self.finished(state):
                        states.append(state)
                        continue
                    states.append(round_runner(n, lambda n=n: self.run_round(n, step_runner)))
                self._set_status(self.manifest.get("run_id"), "FINISHED")
                return states
            finally:
                lock.release()

    def run_round(self, n: int, step_runner: Callable | None = None) -> dict:
        """Round ``n`` from the step after the last one done."""
        step_runner = step_runner or _call
        with contextlib.chdir(self.root):
            state = self.load_state(n)
            if state is None:
                state = {"round": n, "step": None, "started": _stamp(), "robot": self.cfg.robot}
                state["run_id"] = self._round_run(n)
                self.save_state(n, state)
            self._set_status(state["run_id"], "RUNNING")
            self._set_status(self.manifest.get("run_id"), "RUNNING")
            done = STEPS.index(state["step"]) + 1 if state.get("step") else 0
            try:
                for name in STEPS[done:]:
                    step_runner(name, lambda name=name: getattr(self, f"step_{name}")(n, state))
                    state["step"] = name
                    self.save_state(n, state)
                    self._track(n, state)
                    self.save_state(n, state)
            except BaseException as exc:
                state["failure"] = f"{type(exc).__name__}: {exc}"[:2000]
                self.save_state(n, state)
                status = "KILLED" if isinstance(exc, (KeyboardInterrupt, SystemExit)) else "FAILED"
                try:
                    self.client().set_tag(state["run_id"], "redraw.failure", state["failure"][:5000])
                    self._set_status(state["run_id"], status)
                    self._set_status(self.manifest.get("run_id"), status)
                except Exception:  # noqa: BLE001 - the round's own error is the one to show
                    pass
                raise
            state.pop("failure", None)
            self.save_state(n, state)
            self._set_status(state["run_id"], "FINISHED")
            return state

    def _round_run(self, n: int) -> str:
        import mlflow

        client = self.client()
        experiment = mlflow.get_experiment_by_name("redraw").experiment_id
        m = self.manifest
        run = client.create_run(experiment, run_name=f"round {n}", tags={
            "mlflow.parentRunId": m["run_id"], "redraw.kind": "round", "redraw.rounds_id": m["id"],
            "redraw.round": str(n), "method": m["settings"]["method"], "env_target": m["target"]})
        for key, value in {"round": n, **m["settings"], "robot": self.cfg.robot,
                           "mapping": self.mapping_path() or "episode-schema logs"}.items():
            client.log_param(run.info.run_id, key, str(value))
        return run.info.run_id

    def _track(self, n: int, state: dict) -> None:
        """What the round knows so far on its MLflow run (and its curve on the loop's run)."""
        client, run = self.client(), state["run_id"]
        tags, metrics = {}, {}
        if "deployed" in state:
            tags.update({"model.deployed_version": state["deployed"]["version"],
                         "model.deployed_alias": state["deployed"]["alias"]})
        if state.get("returns"):
            import numpy as np

            metrics.update({"robot/return_mean": float(np.mean(state["returns"])),
                            "robot/episodes": len(state["returns"])})
        for key in ("logs", "data"):
            for k, v in (state.get(key) or {}).items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    metrics[f"{key}/{k}"] = v
        data = state.get("data") or {}
        for key in ("path", "dvc_md5", "fingerprint"):
            if data.get(key):
                tags[f"data.{key}"] = str(data[key])
        for k, v in (state.get("evaluation") or {}).items():
            if isinstance(v, (int, float)):
                metrics[f"eval/{k}"] = v
        if "registered" in state:
            tags["model.registered_version"] = state["registered"]["version"]
            metrics["register/version"] = int(state["registered"]["version"])
        if "promotion" in state:
            tags.update({"model.champion_version": state["promotion"]["champion"],
                         "promotion": state["promotion"]["why"][:5000]})
            metrics["promote/promoted"] = int(state["promotion"]["promoted"])
        for k, v in tags.items():
            client.set_tag(run, k, v)
        logged = state.setdefault("tracked", [])  # each metric once, however often the round resumes
        for k, v in metrics.items():
            if k in logged:
                continue
            client.log_metric(run, k, float(v), step=n)
            if k in ("robot/return_mean", "eval/return_mean", "promote/promoted"):
                client.log_metric(self.manifest["run_id"], k, float(v), step=n)
            logged.append(k)

    # -- the steps -------------------------------------------------------------------------------
    def step_deploy(self, n: int, state: dict) -> None:
        alias, name = self.cfg.deploy, self.manifest["name"]
        mv = self.version_by_alias(alias)
        if mv is None:
            raise RoundError(f"registered model {name!r} has no {alias!r} version: run the pipeline (`dvc repro`, "
                             f"which registers a challenger) or `redraw promote`")
        state["deployed"] = {"alias": alias, "version": str(mv.version), "uri": f"models:/{name}/{mv.version}",
                             "target_return": mv.tags.get("target_return")}
        print(f"round {n}: deploy {state['deployed']['uri']} ({alias})", flush=True)

    def step_collect(self, n: int, state: dict) -> None:
        from redraw.robot import RETURNS_FILE, Deployment, read_returns

        out = self.round_dir(n) / "data" / "bags"
        if out.is_dir():  # complete (a robot writes it whole): a stopped round's logs, not asked for again
            returns = read_returns(out / RETURNS_FILE)
        else:
            d = state["deployed"]
            deployment = Deployment(d["uri"], self.manifest["name"], d["version"], d["alias"],
                                    self.manifest["settings"]["episodes"], n, self.manifest["seed"])
            returns = self.robot.run(deployment, out).returns
        state["logs_path"], state["returns"] = str(out), returns
        said = f", return mean {sum(returns) / len(returns):.1f}" if returns else ""
        print(f"round {n}: collect: logs in {out}{said}", flush=True)

    def mapping_path(self) -> str | None:
        if self.cfg.mapping:
            return self.cfg.mapping
        return str(STANDIN_MAPPING) if self.cfg.robot.startswith("sim") else None

    def contract(self, logs: bool = False):
        """The target-data contract of params.yaml; for one round's logs, at least one episode
        instead of the whole data set's min_transitions (the merge is checked with all of it)."""
        from redraw.config import load_params
        from redraw.stages.validate import validation_config

        cfg = validation_config(load_params(self.cfg.params), self.cfg.params)
        return replace(cfg, min_transitions=cfg.min_episode_length) if logs else cfg

    def step_import(self, n: int, state: dict) -> None:
        from redraw.config import load_params
        from redraw.data.episodes import dataset_stats
        from redraw.data.importer import ImportRejected, import_dataset, import_logs
        from redraw.data.schema import METADATA_FILE

        logs, dest = Path(state["logs_path"]), self.round_dir(n) / "data" / "logs"
        if not (dest / METADATA_FILE).is_file():
            mapping = self.mapping_path()
            try:
                if mapping:
                    from redraw.data.importers.config import load_config

                    cfg = load_config(mapping)
                    cfg.source.paths = [str(logs.resolve())]
                    import_logs(cfg, dest, self.contract(logs=True), progress=False,
                                params=load_params(self.cfg.params), params_path=self.cfg.params)
                elif (logs / METADATA_FILE).is_file():
                    import_dataset(logs, dest, self.contract(logs=True))
                else:
                    raise RoundError(f"round {n}: {logs} holds no episode-schema data set (metadata.json) and no "
                                     "mapping config says how to read it: pass --mapping FILE (docs/import.md)")
            except ImportRejected as exc:
                self._rejected(n, exc.result, f"the logs of round {n}")
            try:
                self.check_fits(dest)
            except BaseException:
                shutil.rmtree(dest, ignore_errors=True)
                raise
        state["logs"] = {k: v for k, v in dataset_stats(dest).items() if k in ("episodes", "transitions",
                                                                                 "return_mean")}
        if state.get("returns"):  # validated logs: their return is the deployed version's on the robot
            mean = sum(state["returns"]) / len(state["returns"])
            client, version = self.client(), state["deployed"]["version"]
            client.set_model_version_tag(self.manifest["name"], version, "robot_return", f"{mean:.4f}")
            client.set_model_version_tag(self.manifest["name"], version, "robot_episodes", str(len(state["returns"])))
        print(f"round {n}: import: {state['logs']['episodes']} episodes, {state['logs']['transitions']} steps "
              f"in {dest}", flush=True)

    #: what logs must share with the loop's first data set (another robot or pair differs here)
    FIT = ("env", "obs_mode", "control_hz", "action_size", "observations")

    def check_fits(self, logs: Path) -> None:
        from dataclasses import asdict as fields

        from redraw.data.schema import METADATA_FILE, DataError, read_metadata

        base = self.manifest["base"]
        mine, theirs = fields(read_metadata(logs)), fields(read_metadata(base))
        for key in self.FIT:
            if mine[key] != theirs[key]:
                raise DataError(logs / METADATA_FILE, key, f"{mine[key]!r}, but the loop's first data set {base} has "
                                f"{theirs[key]!r}: logs of another robot or pair are refused")

    def _rejected(self, n: int, result, what: str):
        from redraw.tracking import write_json

        payload = result.to_dict()
        write_json(self.round_dir(n) / "validation.json", payload)
        lines = [f"  - {f}" for f in result.failures[:20]]
        more = f"\n  (+{len(result.failures) - 20} more)" if len(result.failures) > 20 else ""
        raise RoundRejected(f"round {n}: {what} REJECTED by the data contract, {len(result.failures)} failed "
                            f"check(s) (report: {self.round_dir(n) / 'validation.json'}):\n" + "\n".join(lines) + more
                            + "\nNothing was merged, tracked, trained or promoted. Fix the logs (or the mapping "
                            f"config) and remove {self.round_dir(n)} to run the round again.", result)

    def step_merge(self, n: int, state: dict) -> None:
        from redraw.data.episodes import dataset_fingerprint, dataset_stats
        from redraw.data.importer import ImportRejected, merge_datasets
        from redraw.data.schema import METADATA_FILE

        m = self.manifest
        dest = self.round_dir(n) / "data" / "target"
        parts = kept_parts(n, m["settings"]["keep"], m["base"], m["settings"]["base_episodes"])
        if not (dest / METADATA_FILE).is_file():
            if parts[0][0] == m["base"] and dataset_fingerprint(m["base"]) != m["base_fingerprint"]:
                raise RoundError(f"round {n}: the loop's first data set {m['base']} changed since the loop started "
                                 f"(fingerprint in {MANIFEST}: {m['base_fingerprint'][:12]}...); put it back, or start "
                                 "another loop in another pipeline directory")
            try:
                merge_datasets(parts, dest, self.contract())
            except ImportRejected as exc:
                self._rejected(n, exc.result, f"the data of round {n} ({', '.join(p for p, _ in parts)})")
        state["data"] = {"path": str(dest), "parts": [f"{p}:{c}" if c else p for p, c in parts],
                         **{k: v for k, v in dataset_stats(dest).items() if k in ("episodes", "transitions")}}
        print(f"round {n}: merge: {state['data']['episodes']} episodes from {len(parts)} data set(s) in {dest}",
              flush=True)

    def step_track(self, n: int, state: dict) -> None:
        from redraw.config import set_params
        from redraw.data.episodes import dataset_fingerprint

        data = self.round_dir(n) / "data"
        if Path(".dvc").is_dir():
            import yaml
            from dvc.repo import Repo

            with Repo(".") as repo:
                repo.add(str(data))
            dvc_file = data.with_name("data.dvc")
            state["data"]["dvc_md5"] = yaml.safe_load(dvc_file.read_text())["outs"][0]["md5"]
            state["data"]["dvc_file"] = str(dvc_file)
        state["data"]["fingerprint"] = dataset_fingerprint(state["data"]["path"])
        set_params({"target_data": state["data"]["path"], "target_transitions": 0}, self.cfg.params,
                   source="redraw rounds")
        print(f"round {n}: track: {data} (dvc md5 {state['data'].get('dvc_md5', 'n/a: not a DVC repository')}); "
              f"{self.cfg.params} target_data: {state['data']['path']}", flush=True)

    def _stages(self, n: int, targets: list[str]) -> None:
        from redraw import scheduler

        tags = os.environ.get("REDRAW_RUN_TAGS")
        os.environ["REDRAW_RUN_TAGS"] = json.dumps({**(json.loads(tags) if tags else {}), "redraw.rounds_id":
                                                    self.manifest["id"], "redraw.round": str(n)})
        try:
            scheduler.schedule(".", self.cfg.jobs, str(self.round_dir(n) / "stage-logs"), targets=targets, single=True)
        finally:
            if tags is None:
                os.environ.pop("REDRAW_RUN_TAGS", None)
            else:
                os.environ["REDRAW_RUN_TAGS"] = tags

    def step_train(self, n: int, state: dict) -> None:
        method = self.manifest["settings"]["method"]
        self._stages(n, ["validate_target", f"calibrate@{method}", f"train_policy@{method}", f"evaluate@{method}"])
        ev = json.loads(Path(f"reports/evaluate/{method}.json").read_text())
        state["evaluation"] = {"method": method, "env": ev["env"], "episodes": ev["episodes"],
                               "return_mean": ev["return_mean"], "return_ci_low": ev["return_ci_low"],
                               "return_ci_high": ev["return_ci_high"]}
        print(f"round {n}: train: evaluate@{method} return {ev['return_mean']:.1f} "
              f"[{ev['return_ci_low']:.1f}, {ev['return_ci_high']:.1f}] over {ev['episodes']} episodes", flush=True)

    def step_register(self, n: int, state: dict) -> None:
        self._stages(n, ["register"])
        reg = json.loads(Path("reports/register.json").read_text())
        mv = self.client().get_model_version(reg["name"], reg["version"])
        if mv.tags.get("data_hash") != state["data"]["fingerprint"]:
            raise RoundError(f"round {n}: reports/register.json names {reg['name']} v{reg['version']}, trained on "
                             f"data {mv.tags.get('data_hash')}, not on this round's {state['data']['path']} "
                             f"({state['data']['fingerprint']})")
        state["registered"] = {"version": str(reg["version"]), "uri": f"models:/{reg['name']}/{reg['version']}",
                               "target_return": reg["target_return"]}
        print(f"round {n}: register: {state['registered']['uri']} (challenger)", flush=True)

    def step_promote(self, n: int, state: dict) -> None:
        from redraw.deploy import DeployError, promote

        if self.cfg.gate == "evaluate":
            promoted, why = promote(self.manifest["name"], self.margin())
        elif not state.get("returns"):
            promoted, why = False, (f"not promoted: gate logged, but the robot gave no returns for "
                                    f"v{state['deployed']['version']} ({self.round_dir(n) / 'data/bags'})")
        else:
            try:
                promoted, why = promote(self.manifest["name"], self.margin(), "robot_return",
                                        state["deployed"]["version"])
            except DeployError as exc:
                raise RoundError(f"round {n}: {exc}: the champion's return on the robot is not known; run a round "
                                 "with --deploy champion to log it") from None
        champion = self.version_by_alias("champion")
        state["promotion"] = {"promoted": promoted, "why": why, "champion": str(champion.version) if champion else ""}
        print(f"round {n}: promote: {why}", flush=True)


def summary(state: dict) -> str:
    """One line per round for the terminal and the Prefect artifact."""
    d, ev, p = state.get("deployed", {}), state.get("evaluation", {}), state.get("promotion", {})
    logged = (f"logged return {sum(state['returns']) / len(state['returns']):.1f}" if state.get("returns")
              else "no logged return")
    return (f"round {state['round']}: deployed v{d.get('version', '?')} ({d.get('alias', '?')}), {logged}; data "
            f"{state.get('data', {}).get('path', '?')} ({state.get('data', {}).get('episodes', '?')} episodes, dvc md5 "
            f"{state.get('data', {}).get('dvc_md5', 'n/a')}); evaluate {ev.get('return_mean', float('nan')):.1f}; "
            f"registered v{state.get('registered', {}).get('version', '?')}; {p.get('why', 'not promoted')}")


# -- work directories (redraw.experiments.rounds and .onpolicy_round) -------------------------------
#: what a copy of a work directory leaves out: long-adaptation runs, logs, half-made copies
COPY_SKIP = ("adaptation_length", "logs", "*.log", ".*.partial")


def check_workdir(workdir: Path, method: str) -> None:
    """A finished work dir: METHOD's policy trained and evaluated (ValueError names what is missing)."""
    for rel in ("params.yaml", "dvc.yaml", f"models/policy/{method}/agent.pt", f"reports/evaluate/{method}.json",
                "data/target/metadata.json"):
        if not (workdir / rel).exists():
            raise ValueError(f"{workdir / rel}: missing; run the quality benchmark for {method} in this work dir first")


def copy_workdir(workdir: Path, dest: Path, skip: tuple[str, ...] = COPY_SKIP) -> None:
    """``workdir`` copied to ``dest`` whole or not at all, without what ``skip`` names; nothing
    is done when ``dest`` exists."""
    if dest.exists():
        return
    tmp = dest.with_name(f".{dest.name}.partial")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(workdir, tmp, symlinks=True, ignore=shutil.ignore_patterns(*skip))
    os.replace(tmp, dest)


# -- command line ---------------------------------------------------------------------------------
def config_from_args(args) -> RoundsConfig:
    return RoundsConfig(**{k: getattr(args, k) for k in RoundsConfig.__dataclass_fields__})


def add_arguments(p) -> None:
    d = RoundsConfig()
    p.add_argument("--rounds", type=int, default=d.rounds,
                   help=f"rounds in all, done ones skipped (default {d.rounds})")
    p.add_argument("--episodes", type=int, default=d.episodes, help=f"robot episodes per round (default {d.episodes})")
    p.add_argument("--robot", default=d.robot,
                   help="sim: the target simulator stands in for the robot and logs MCAP bags (sim:sqlite3: .db3); "
                   "dir:INBOX: a real robot, its logs dropped by an operator in INBOX/round-NNN with a DONE file; "
                   "cmd:TEMPLATE: a command that leaves the logs in {out} ({model}, {episodes}, {round}, {seed}, "
                   "{version} filled in) (default: sim)")
    p.add_argument("--timeout", type=float, default=d.timeout,
                   help=f"seconds to wait for a real robot's logs (default {d.timeout:g})")
    p.add_argument("--mapping", default=d.mapping, metavar="FILE",
                   help="mapping config of the robot's logs (docs/import.md; default: the stand-in's, "
                   "rounds/standin-mapping.yaml, or logs that are episode-schema data sets)")
    p.add_argument("--method", default=d.method, help="the adapted method (default: params register.method)")
    p.add_argument("--deploy", choices=("champion", "challenger"), default=d.deploy,
                   help="which registered version the robot runs (default: champion)")
    p.add_argument("--keep", default=d.keep, help=f"the data each round calibrates on: {KEEP_HELP} (default: all)")
    p.add_argument("--base-episodes", type=int, default=d.base_episodes,
                   help="only the first N episodes of the first data set (default 0: all)")
    p.add_argument("--margin", type=float, default=None, help="the promotion's margin (default: params promote.margin)")
    p.add_argument("--gate", choices=("evaluate", "logged"), default=d.gate,
                   help="what the promotion compares: evaluate (the new policy's evaluate stage in env.target; "
                   "default) or logged (with --deploy challenger: the deployed challenger's logged return on the "
                   "robot against the champion's)")
    p.add_argument("--jobs", type=int, default=d.jobs, help=f"pipeline stages side by side (default {d.jobs})")
    p.add_argument("--params", default=d.params, help="params file (default: params.yaml)")
    p.add_argument("--expert", default=d.expert, metavar="CHECKPOINT",
                   help="stand-in only: this checkpoint acts instead of the deployed policy (the control that "
                   "spends the episodes on more expert data)")


#: what a round's failure raises, each naming its file and key: ConfigError, DataError and DeployError
#: are ValueErrors; RoundError, NoLogs and a failed stage RuntimeErrors
ERRORS = (ValueError, RuntimeError, OSError)


def _cmd_rounds(args) -> int:
    try:
        states = Rounds(config_from_args(args)).run()
    except RoundRejected as exc:
        print(f"rounds: {exc}", file=sys.stderr)
        return 1
    except ERRORS as exc:
        print(f"rounds: error: {exc}", file=sys.stderr)
        return 2
    for state in states:
        print(summary(state))
    return 0


def add_parser(sub) -> None:
    """``redraw rounds``."""
    p = sub.add_parser("rounds", help="adapt in rounds: deploy, log, import, calibrate, train, evaluate, promote",
                       description="Run k rounds in this pipeline directory (after `dvc repro`): deploy the registered "
                       "champion (or challenger) on the robot, collect its logs, import them with the mapping config, "
                       "validate them, merge them with the earlier rounds' data (rounds/round-NNN/data, `dvc add`-ed), "
                       "calibrate, train and evaluate the method's policy, register it and apply the gated promotion. "
                       "Each round is an MLflow run nested under the loop's; a stopped loop resumes at the step it "
                       "stopped in. Exit status 1: a round's logs failed validation; 2: another error. "
                       "docs/rounds.md; the same as a Prefect flow: python -m flows.rounds.")
    add_arguments(p)
    p.set_defaults(func=_cmd_rounds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="redraw rounds")
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(["rounds", *(argv or [])])
    return args.func(args)


