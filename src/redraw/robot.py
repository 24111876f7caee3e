"""What the rounds loop needs from a robot, and the robots that give it (docs/rounds.md).

A robot takes a ``Deployment`` (a registered policy version, a number of episodes, the round) and
hands back its logs in a format the project imports: a folder of ROS 2 bags, a LeRobot dataset or
HDF5 files (read with a mapping config, docs/import.md), or an episode-schema data set. Where it
knows them, it also gives the episodes' returns (``returns.json`` beside the logs). It writes the
logs folder whole or not at all: a folder that exists is complete, so a loop that was stopped
never takes half a log for a round's data.

* ``SimRobot``: the target simulator standing in for the robot. It loads the registered policy as
  ``redraw deploy`` does, runs it one observation at a time, and logs what a robot's recorder
  would: one MCAP (or sqlite3) bag per episode, observations logged with a sensor's jitter and
  transport latency, each command logged after the observation it was computed from, the reward
  beside the observation. Its logs take the import path a real robot's take, with the mapping
  config ``standin_mapping`` writes.
* ``DirectoryRobot``: a real robot run by an operator. The loop writes ``INBOX/round-NNN/REQUEST.json``
  (which model, how many episodes, the ``redraw deploy`` line) and waits, up to a timeout, for
  the operator to drop the logs there and create ``DONE`` (empty, or ``{"returns": [...]}``).
* ``CommandRobot``: a command template the loop runs (``{model}``, ``{episodes}``, ``{out}``,
  ``{round}``, ``{seed}``), which must leave the logs in ``{out}`` before the timeout.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from redraw.data.importer import stage_atomically
from redraw.data.schema import DataError

RETURNS_FILE = "returns.json"  #: beside the logs: the episodes' returns, where the robot knows them
REQUEST_FILE, DONE_FILE = "REQUEST.json", "DONE"  #: a watched directory's request and the operator's marker
#: the seed stream of the stand-in's logged episodes: apart from the data sets' (0-2), the final
#: evaluation's (4242), the learning curve's (4343) and redraw.experiments.onpolicy_round's (4444)
LOG_STREAM = 4545
#: the stand-in's topics (std_msgs/Float64MultiArray unless said): what its mapping config reads
TOPICS = {"state": "/robot/state", "velocity": "/robot/velocity", "image": "/camera/image_raw",
          "action": "/robot/command", "reward": "/robot/reward"}
T0 = 1_700_000_000 * 10**9  #: the stand-in's first episode starts here (ns since the epoch)


class NoLogs(RuntimeError):
    """The robot gave no logs: nothing within the timeout, a failed command, an empty drop."""


@dataclass
class Deployment:
    """One round's request to the robot."""

    model_uri: str  #: the pinned version, ``models:/NAME/VERSION``
    name: str  #: the registered model
    version: str
    alias: str  #: the alias it was deployed as (champion or challenger)
    episodes: int
    round: int
    seed: int  #: params ``seed``: the stand-in's episodes are (seed, LOG_STREAM, round, i)


@dataclass
class RobotLogs:
    path: Path  #: the logs folder (complete)
    returns: list[float] | None  #: the episodes' returns, where the robot gave them


class Robot(Protocol):
    """Run ``deployment`` and leave its logs in ``out`` (which does not exist yet), whole or not at all."""

    def run(self, deployment: Deployment, out: Path) -> RobotLogs: ...


def read_returns(path: Path) -> list[float] | None:
    """The returns of ``path`` (``returns.json`` or a DONE file): ``{"returns": [...]}`` or a list;
    None when the file is absent or empty. A file that says something else names itself and the key."""
    if not path.is_file() or not path.read_text().strip():
        return None
    try:
        raw = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(path, "returns", f"not JSON ({exc}); write {{\"returns\": [r1, r2, ...]}} or nothing") from None
    values = raw.get("returns") if isinstance(raw, dict) else raw
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                              for v in values):
        raise DataError(path, "returns", f"expected a list of numbers, got {values!r}")
    return [float(v) for v in values]


# -- the stand-in ---------------------------------------------------------------------------------
@dataclass
class Timing:
    """When the stand-in's recorder logs each message of a control step, in milliseconds: a
    sensor's capture jitter and transport latency, then the controller's wake-up and compute
    time before its command is logged (so every command follows the observation it acted on)."""

    capture_jitter: float = 0.5  #: std of a capture time around its period
    transport: tuple[float, float] = (0.3, 2.0)  #: capture -> logged (uniform)
    wake: tuple[float, float] = (0.2, 1.5)  #: observation logged -> controller wakes (uniform)
    compute: tuple[float, float] = (0.5, 2.5)  #: controller wakes -> command logged (uniform)


class _Recorded:
    """A behaviour that keeps every command it sends."""

    def __init__(self, inner):
        self.inner, self.sent = inner, []

    def reset(self, rng=None) -> None:
        self.sent = []
        self.inner.reset(rng)

    def act(self, obs: dict) -> np.ndarray:
        action = np.asarray(self.inner.act(obs), np.float32).copy()
        self.sent.append(action)
        return action


def episode_messages(episode: dict, commands: list[np.ndarray], hz: float, rng: np.random.Generator,
                     t0: int, timing: Timing, store) -> list[tuple[int, str, object]]:
    """The messages a robot's recorder logs for one episode: observation row k (and the reward on
    arriving there) when it is received, command k (computed from observation k; ``commands`` has
    one per row, the last one sent after the final observation) after it."""
    types = store.types
    Arr, Lay, F64 = types["std_msgs/msg/Float64MultiArray"], types["std_msgs/msg/MultiArrayLayout"], \
        types["std_msgs/msg/Float64"]
    Img, Header, Time = (types["sensor_msgs/msg/Image"], types["std_msgs/msg/Header"],
                         types["builtin_interfaces/msg/Time"])

    def array(values):
        return Arr(layout=Lay(dim=[], data_offset=0), data=np.asarray(values, np.float64).ravel())

    ms, period = 1_000_000, 1e9 / hz
    rows = len(episode["reward"])
    capture = t0 + np.round(np.arange(rows) * period + rng.normal(0.0, timing.capture_jitter * ms, rows))
    received = capture + np.round(rng.uniform(*timing.transport, rows) * ms)
    sent = received + np.round((rng.uniform(*timing.wake, rows) + rng.uniform(*timing.compute, rows)) * ms)
    msgs = []
    for k in range(rows):
        at = int(received[k])
        for key in ("state", "velocity"):
            if key in episode:
                msgs.append((at, TOPICS[key], array(episode[key][k])))
        if "image" in episode:
            img = np.ascontiguousarray(episode["image"][k], np.uint8)
            stamp = int(capture[k])
            msgs.append((at, TOPICS["image"], Img(
                header=Header(stamp=Time(sec=stamp // 10**9, nanosec=stamp % 10**9), frame_id="camera"),
                height=img.shape[0], width=img.shape[1], encoding="rgb8", is_bigendian=0, step=img.shape[1] * 3,
                data=img.ravel())))
        if k:
            msgs.append((at + 20_000, TOPICS["reward"], F64(data=float(episode["reward"][k]))))
        msgs.append((int(sent[k]), TOPICS["action"], array(commands[k])))
    return msgs


def record_bags(env, behaviour, seeds: list[np.random.SeedSequence], out: Path, timing: Timing | None = None,
                storage: str = "mcap", log_seed: int = 0, t0: int = T0) -> list[float]:
    """Run ``behaviour`` in ``env`` for one episode per seed (seeded as ``run_episode`` seeds the
    evaluation's) and log each as a ROS 2 bag ``out/episode-NNN``; returns the episodes' returns.
    ``log_seed`` seeds the timing jitter."""
    from rosbags.typesys import Stores, get_typestore

    from redraw.data.collect import run_episode
    from redraw.data.importers.rosbag import write_bag

    store = get_typestore(Stores.ROS2_HUMBLE)
    timing = timing or Timing()
    recorded = _Recorded(behaviour)
    returns, start = [], t0
    rng = np.random.default_rng(log_seed)
    for i, seed in enumerate(seeds):
        episode = run_episode(env, recorded, seed)
        # the controller keeps commanding until it is stopped: one command after the last observation
        recorded.act({k: episode[k][-1] for k in env.observation_spec()})
        write_bag(out / f"episode-{i:03d}", episode_messages(episode, recorded.sent, env.control_hz, rng, start,
                                                             timing, store), storage, store)
        returns.append(float(np.sum(episode["reward"][1:], dtype=np.float64)))
        start += int((len(episode["reward"]) + 250) * 1e9 / env.control_hz)  # ~10 s between episodes at 25 Hz
    return returns


def standin_mapping(env_name: str, obs_mode: str, control_hz: float, image_size: int, min_length: int,
                    paths: list[str] | None = None) -> dict:
    """The mapping config (docs/import.md) that reads the stand-in's bags."""
    if obs_mode == "pixels":
        observations = {"image": {"topic": TOPICS["image"]}, "velocity": {"topic": TOPICS["velocity"], "field": "data"}}
    else:
        observations = {"state": {"topic": TOPICS["state"], "field": "data"}}
    return {"version": 1, "source": {"format": "rosbag", "paths": paths or ["."]},
            "target": {"env": env_name, "obs_mode": obs_mode, "control_hz": float(control_hz),
                       "image_size": int(image_size)},
            "observations": observations,
            "action": {"topic": TOPICS["action"], "field": "data"},
            "reward": {"topic": TOPICS["reward"], "field": "data"},
            "episodes": {"split": "source", "min_length": int(min_length)},
            "behaviour": "deployed policy (robot stand-in: the target simulator)",
            "notes": "written by redraw.robot.standin_mapping"}


class SimRobot:
    """The target simulator standing in for the robot (module docstring). ``expert``: a checkpoint
    that acts instead of the deployed policy (the control that spends the episodes on more expert data)."""

    kind = "sim"

    def __init__(self, storage: str = "mcap", timing: Timing | None = None, expert: str | None = None):
        if storage not in ("mcap", "sqlite3"):
            raise ValueError(f"stand-in storage {storage!r}: mcap or sqlite3")
        self.storage, self.timing, self.expert = storage, timing or Timing(), expert

    def run(self, deployment: Deployment, out: Path) -> RobotLogs:
        from redraw.deploy import open_policy

        behaviour, env, _ = open_policy(deployment.model_uri, deployment.seed)
        try:
            if self.expert:
                from redraw.data.behaviours import BehaviourConfig, make_behaviour

                behaviour = make_behaviour(BehaviourConfig(kind="policy", checkpoint=self.expert), env.action_low,
                                           env.action_high, env=env)
            seeds = [np.random.SeedSequence([deployment.seed, LOG_STREAM, deployment.round, i])
                     for i in range(deployment.episodes)]
            box = {}

            def fill(tmp: Path) -> None:
                box["returns"] = record_bags(env, behaviour, seeds, tmp, self.timing, self.storage,
                                             log_seed=deployment.seed * 1000 + deployment.round)
                (tmp / RETURNS_FILE).write_text(json.dumps({"returns": box["returns"]}) + "\n")

            stage_atomically(out, fill)
        finally:
            env.close()
        return RobotLogs(out, box["returns"])


# -- a real robot -----------------------------------------------------------------------------------
def _copy_logs(drop: Path, out: Path, skip: tuple[str, ...]) -> None:
    def fill(tmp: Path) -> None:
        for item in sorted(drop.iterdir()):
            if item.name in skip or item.name.startswith("."):
                continue
            (shutil.copytree if item.is_dir() else shutil.copy2)(item, tmp / item.name)
        if not any(tmp.iterdir()):
            raise NoLogs(f"{drop}: {DONE_FILE} is there but no logs are")

    stage_atomically(out, fill)


class DirectoryRobot:
    """A watched directory: the loop asks in ``INBOX/round-NNN/REQUEST.json`` and waits up to
    ``timeout`` seconds for the operator's logs and ``DONE`` there (module docstring)."""

    kind = "dir"

    def __init__(self, inbox: str | Path, timeout: float, poll: float = 2.0):
        self.inbox, self.timeout, self.poll = Path(inbox), float(timeout), float(poll)

    def drop(self, round_: int) -> Path:
        return self.inbox / f"round-{round_:03d}"

    def run(self, deployment: Deployment, out: Path) -> RobotLogs:
        from redraw.tracking import write_json

        drop = self.drop(deployment.round)
        drop.mkdir(parents=True, exist_ok=True)
        done = drop / DONE_FILE
        if not done.exists():
            write_json(drop / REQUEST_FILE, {
                "round": deployment.round, "model_uri": deployment.model_uri, "registered_model": deployment.name,
                "version": deployment.version, "alias": deployment.alias, "episodes": deployment.episodes,
                "run": f"redraw deploy --model {deployment.model_uri} --episodes {deployment.episodes}",
                "then": f"put the logs of the {deployment.episodes} episodes in this folder, then create {DONE_FILE} "
                        "here (empty, or {\"returns\": [...]} with each episode's return)"})
            print(f"round {deployment.round}: waiting up to {self.timeout:g} s for the logs of {deployment.model_uri} "
                  f"({deployment.episodes} episodes) in {drop} and {done}", flush=True)
        deadline = time.monotonic() + self.timeout
        while not done.exists():
            if time.monotonic() >= deadline:
                raise NoLogs(f"round {deployment.round}: no logs within the timeout of {self.timeout:g} s: {done} does "
                             f"not exist. Run {deployment.model_uri} on the robot ({drop / REQUEST_FILE}), drop the "
                             f"logs in {drop}, create {done}, and start the loop again")
            time.sleep(min(self.poll, max(0.0, deadline - time.monotonic())))
        returns = read_returns(done)
        _copy_logs(drop, out, (REQUEST_FILE, DONE_FILE))
        if returns is not None:
            (out / RETURNS_FILE).write_text(json.dumps({"returns": returns}) + "\n")
        return RobotLogs(out, returns)


class CommandRobot:
    """A command the loop runs (through the shell) for each round, e.g. one that deploys the
    policy on the robot and copies its bags; its placeholders are filled in and quoted."""

    kind = "cmd"
    FIELDS = ("model", "episodes", "out", "round", "seed", "version")

    def __init__(self, template: str, timeout: float):
        self.template, self.timeout = template, float(timeout)
        self.command(Deployment("models:/x/1", "x", "1", "champion", 1, 1, 0), Path("out"))  # bad templates fail now

    def command(self, deployment: Deployment, out: Path) -> str:
        values = {"model": deployment.model_uri, "episodes": deployment.episodes, "out": str(out),
                  "round": deployment.round, "seed": deployment.seed, "version": deployment.version}
        try:
            return self.template.format(**{k: shlex.quote(str(v)) for k, v in values.items()})
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"robot command {self.template!r}: bad placeholder {exc} (known: "
                             f"{', '.join('{' + f + '}' for f in self.FIELDS)})") from None

    def run(self, deployment: Deployment, out: Path) -> RobotLogs:
        def fill(tmp: Path) -> None:
            cmd = self.command(deployment, tmp)
            # its own process group: a timeout stops the command and everything it started
            proc = subprocess.Popen(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                    start_new_session=True)
            try:
                out, _ = proc.communicate(timeout=self.timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGTERM)
                try:
                    proc.communicate(timeout=10)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.communicate()
                raise NoLogs(f"round {deployment.round}: no logs within the timeout of {self.timeout:g} s: the robot "
                             f"command `{cmd}` was still running (stopped)") from None
            if proc.returncode:
                raise NoLogs(f"round {deployment.round}: the robot command `{cmd}` failed (exit {proc.returncode}):\n"
                             f"{out[-2000:]}")
            if not [p for p in tmp.iterdir() if p.name != RETURNS_FILE]:
                raise NoLogs(f"round {deployment.round}: the robot command `{cmd}` left no logs in {{out}}")

        stage_atomically(out, fill)
        return RobotLogs(out, read_returns(out / RETURNS_FILE))


def make_robot(spec: str, timeout: float, **sim) -> Robot:
    """``sim`` (or ``sim:sqlite3``), ``dir:INBOX`` or ``cmd:TEMPLATE``."""
    kind, _, rest = spec.partition(":")
    if kind == "sim":
        return SimRobot(storage=rest or "mcap", **sim)
    if kind == "dir" and rest:
        return DirectoryRobot(rest, timeout)
    if kind == "cmd" and rest:
        return CommandRobot(rest, timeout)
    raise ValueError(f"robot {spec!r}: sim, sim:sqlite3, dir:INBOX (a folder the operator drops logs in) or "
                     "cmd:TEMPLATE (a command that leaves the logs in {out})")
