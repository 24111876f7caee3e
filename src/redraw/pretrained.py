"""Shipped pretrained models: the source pretrainings and target experts in ``pretrained/``.

A pair and seed costs several core-hours when every experiment pretrains from scratch, and run
directories do not outlive a machine; the repository does. So the models every experiment starts
from are made once, by the commands below, and shipped in ``pretrained/`` (weights only, half
precision where an evaluation shows no loss), each described by one record of
``pretrained/manifest.json``: pair, role, seed, preset and params, code commit, steps, wall time and
machine, the final evaluation's return with its 95% interval and episode count, and sha256.

Roles:

* ``source``: the DRAW source pretraining (world model + actor-critic) with Plan2Explore, as the
  paper does; what ReDRAW, draw_finetune and no_adapt start from.
* ``rssm``: the DreamerV3 RSSM source pretraining that dreamer_finetune starts from.
* ``expert``: the controller that collects the paper's target data and whose return is the
  oracle's reference. For a target that only negates the actions, the source policy with its
  actions negated is exact (the target with -a is the source with a) and costs no training: its
  record points at the source file and holds no weights of its own.

    redraw pretrained build PAIR --role source --seed K   # train (resumable) and ship one entry
    redraw pretrained list                                 # what is shipped, with its verdicts
    redraw pretrained verify                               # sha256 and loading of every entry

Builds run in a work directory of their own (``--workdir``, default
``$XDG_STATE_HOME/redraw/pretrained/<pair>/<role>-<seed>``), resumable from the training's
checkpoints; nothing in ``pretrained/`` is written until a build has finished and been evaluated,
and an existing entry is never overwritten (``--replace`` to replace it on purpose).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: the folder and its manifest, relative to the pipeline directory
SHIPPED = Path("pretrained")
MANIFEST = SHIPPED / "manifest.json"
ROLES = ("source", "rssm", "expert")
#: the training stage (python -m redraw.stages.pretrain flags) behind each trained role
STAGE_FLAGS = {"source": [], "rssm": ["--rssm"]}
STAGE_OUT = {"source": "models/pretrain", "rssm": "models/pretrain_rssm"}
STAGE_CURVE = {"source": "reports/pretrain_curve.json", "rssm": "reports/pretrain_rssm_curve.json"}
DEFAULT_PRESET = "bench"
MAX_BYTES = 60 * 1024 * 1024  #: the whole folder's budget


class PretrainedError(ValueError):
    """A shipped model that is missing, altered or does not fit the run (the message names the
    file and the key)."""


def default_workdir(pair: str, role: str, seed: int) -> Path:
    base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local/state")
    return base / "redraw/pretrained" / pair / f"{role}-{seed}"


def entry_name(pair: str, role: str, seed: int) -> str:
    """``<pair>/<role>-<seed>``: the name ``pretrain.from`` and the manifest use."""
    return f"{pair}/{role}-{seed}"


def _source_of(pair: str, pairs_file: Path) -> str:
    from redraw.envs import load_pairs

    return load_pairs(pairs_file).source_of(pair)


def prepare_workdir(workdir: Path, pair: str, seed: int, preset: str, overrides: dict | None = None) -> Path:
    """A pipeline directory for one build: this checkout's params.yaml with ``preset``, the pair
    and the seed applied, and the env-pair file. A kept work dir is resumed as it is, unless its
    params would differ: then it is refused (its checkpoints belong to other settings)."""
    from redraw.config import apply_preset, load_params, set_params

    workdir.mkdir(parents=True, exist_ok=True)
    staging = workdir / ".params.yaml.new"
    shutil.copy(ROOT / "params.yaml", staging)
    pairs_name = load_params(ROOT / "params.yaml")["env"]["pairs"]
    shutil.copy(ROOT / pairs_name, workdir / Path(pairs_name).name)
    apply_preset(preset, staging, root=ROOT)
    source = _source_of(pair, workdir / Path(pairs_name).name)
    set_params({"seed": int(seed), "env.source": source, "env.target": pair,
                "env.pairs": Path(pairs_name).name, **(overrides or {})}, staging)
    current = workdir / "params.yaml"
    from redraw.agent.configs import NOT_SHAPING

    def shaping(path: Path) -> dict:  # what shapes the training: more steps go on from its checkpoint
        params = load_params(path)
        out = {k: params.get(k) for k in ("seed", "env", "collect_source", "model", "actor_critic", "perf")}
        out["pretrain"] = {k: v for k, v in (params.get("pretrain") or {}).items() if k not in NOT_SHAPING}
        out["perf"] = {k: v for k, v in (out["perf"] or {}).items() if k != "cache_dir"}  # where kernels are kept
        return out

    if current.is_file() and shaping(current) != shaping(staging):
        staging.unlink()
        raise PretrainedError(f"{workdir}: holds a build with other params ({current}); "
                              "remove the work dir or pass another --workdir")
    os.replace(staging, current)
    return workdir


def _run(cmd: list[str], workdir: Path, log: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.setdefault("MUJOCO_GL", "egl")
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(cmd)}\n")
        fh.flush()
        proc = subprocess.run(cmd, cwd=workdir, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise PretrainedError(f"{' '.join(cmd[2:])} failed in {workdir} (exit {proc.returncode}); see {log}")


def train(pair: str, role: str, seed: int, preset: str = DEFAULT_PRESET, workdir: Path | None = None,
          overrides: dict | None = None) -> Path:
    """Collect the source data and run the role's training in its work dir (resuming its
    checkpoint); returns the work dir, which then holds ``models/...`` and the learning curve."""
    from redraw.config import load_params

    if role not in STAGE_FLAGS:
        raise PretrainedError(f"role {role!r} is not trained; trained roles: {', '.join(STAGE_FLAGS)}")
    workdir = prepare_workdir(Path(workdir or default_workdir(pair, role, seed)), pair, seed, preset, overrides)
    log = workdir / "build.log"
    py = sys.executable
    if not (workdir / "data/source/metadata.json").is_file():
        _run([py, "-m", "redraw.stages.collect", "source"], workdir, log)
    curve = workdir / STAGE_CURVE[role]
    steps = int(load_params(workdir / "params.yaml")["pretrain"]["steps"])
    if not curve.is_file() or not json.loads(curve.read_text()) or json.loads(curve.read_text())[-1]["step"] < steps:
        _run([py, "-m", "redraw.stages.pretrain", "--no-progress", *STAGE_FLAGS[role]], workdir, log)
    return workdir


def sha256(path: Path) -> str:
    from redraw.checkpoint import file_hash

    return file_hash(path)


def machine() -> str:
    """The CPU model and its widest product instructions, as a record's ``machine``."""
    name, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("", platform.machine(), platform.processor()):
                name = line.split(":", 1)[1].strip()
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    kind = "AMX" if "amx_bf16" in flags else "AVX512" if "avx512f" in flags else "AVX2" if "avx2" in flags else "other"
    return f"{name}, {os.cpu_count()} cores, {kind}"


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _now() -> float:
    return time.time()


# --- the manifest ------------------------------------------------------------------------------

def load_manifest(root: Path = Path(".")) -> list[dict]:
    path = Path(root) / MANIFEST
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PretrainedError(f"{path}: not valid JSON ({exc})") from None
    records = data.get("models") if isinstance(data, dict) else None
    if not isinstance(records, list):
        raise PretrainedError(f"{path}: expected an object with a list 'models'")
    return records


def write_manifest(records: list[dict], root: Path = Path(".")) -> Path:
    path = Path(root) / MANIFEST
    path.parent.mkdir(parents=True, exist_ok=True)
    records = sorted(records, key=lambda r: (r["pair"], ROLES.index(r["role"]), r["seed"]))
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps({"models": records}, indent=1) + "\n")
    os.replace(tmp, path)
    return path


def find(name: str, root: Path = Path("."), key: str = "pretrained") -> dict:
    """The manifest record named ``name`` (``<pair>/<role>-<seed>``); ``key``: the params key that
    named it, for the error."""
    for record in load_manifest(root):
        if record["name"] == name:
            return record
    known = ", ".join(r["name"] for r in load_manifest(root)) or "none"
    raise PretrainedError(f"{key}: {name!r} is not in {Path(root) / MANIFEST} (shipped: {known})")


def checked_file(record: dict, root: Path = Path("."), key: str = "pretrained") -> Path:
    """The record's weights file, refused where it is missing or its sha256 differs from the manifest's."""
    path = Path(root) / SHIPPED / record["file"]
    if not path.is_file():
        raise PretrainedError(f"{key}: {record['name']}: file {path} is missing ({Path(root) / MANIFEST} lists it)")
    digest = sha256(path)
    if digest != record["sha256"]:
        raise PretrainedError(f"{key}: {record['name']}: {path} has sha256 {digest[:12]}..., "
                              f"{Path(root) / MANIFEST} records {record['sha256'][:12]}... (field sha256); "
                              "the file was altered or is another model")
    return path


# --- export: weights only, half precision where the evaluation shows no loss ---------------------

def weights_only(state: dict, half: bool) -> dict:
    """What a shipped file keeps of a training checkpoint's agent state: the weights (fp16 with
    ``half``), the return normaliser and the update count; no optimizer state."""
    model = {k: (v.half() if half and v.is_floating_point() else v).contiguous() for k, v in state["model"].items()}
    return {"model": model, "retnorm": state["retnorm"], "updates": state["updates"]}


def _evaluate(path: Path, env_name: str, env_kwargs: dict, episodes: int, seed: int) -> list[float]:
    from redraw.data.collect import policy_returns

    returns, _ = policy_returns(str(path), env_name, env_kwargs, episodes, seed, progress=True,
                                desc=f"verdict {path.name}", envs=min(episodes, 10), stream=VERDICT_STREAM)
    return returns


#: the seed stream of a shipped model's verdict episodes: neither a training's evaluations (99)
#: nor the evaluate stage's test episodes (4242)
VERDICT_STREAM = 5151


def _summary(returns: list[float]) -> dict:
    from redraw.stats import summarise

    s = summarise(returns)
    return {"return_mean": round(s["return_mean"], 2), "return_ci95": [round(s["return_ci_low"], 2),
            round(s["return_ci_high"], 2)], "episodes": len(returns), "returns": [round(r, 2) for r in returns]}


def _params_record(params: dict) -> dict:
    keep = ("preset", "seed", "env", "model", "actor_critic", "pretrain", "perf")
    return {k: params[k] for k in keep if k in params}


#: every finished build's record, shipped or not (one that did not learn is reported, not shipped)
RUNS = Path("benchmarks/results/pretrained_runs.json")
RUN_KEY = ("pair", "role", "seed", "preset", "exploration", "steps")


def export(workdir: Path, pair: str, role: str, seed: int, root: Path = Path("."), replace: bool = False,
           episodes: int = 20, ship_unlearnt: bool = False) -> list[dict]:
    """Ship a finished build of ``workdir``: weights only, fp16 where its verdict episodes score
    within the fp32 weights' 95% interval, and a manifest record; for a source pretraining of a
    target that only reverses the actions, also that target's expert (the negated source policy).
    Every build is recorded in ``RUNS``; one that did not learn its task is not shipped (unless
    ``ship_unlearnt``): PretrainedError says so. Refuses to overwrite a shipped entry unless ``replace``."""
    import tempfile

    from redraw.checkpoint import load_checkpoint, save_checkpoint
    from redraw.config import get, load_params
    from redraw.envs import load_pairs
    from redraw.envs.pair import env_settings
    from redraw.results_records import learned_threshold

    workdir = Path(workdir)
    params = load_params(workdir / "params.yaml")
    ckpt = workdir / STAGE_OUT[role] / "agent.pt"
    curve_file = workdir / STAGE_CURVE[role]
    if not ckpt.is_file() or not curve_file.is_file():
        raise PretrainedError(f"{workdir}: no finished {role} training ({ckpt}); run `redraw pretrained build` first")
    name = entry_name(pair, role, seed)
    records = load_manifest(root)
    if any(r["name"] == name for r in records) and not replace:
        raise PretrainedError(f"{name} is already shipped ({Path(root) / MANIFEST}); pass --replace to replace it")
    blob = load_checkpoint(ckpt, map_location="cpu")
    identity, state = blob["identity"], blob["agent"]
    env_kwargs = env_settings(params, str(workdir / "params.yaml"))
    env_kwargs["pairs"] = str(workdir / Path(env_kwargs["pairs"]).name)
    source_env = get(params, "env.source")
    registry = load_pairs(env_kwargs["pairs"])
    metrics = json.loads((workdir / ("reports/pretrain.json" if role == "source" else "reports/pretrain_rssm.json"))
                         .read_text())
    curve = json.loads(curve_file.read_text())
    threshold = learned_threshold(source_env, registry)
    with tempfile.TemporaryDirectory() as tmp:
        candidates = {}
        for half in (False, True):
            path = Path(tmp) / f"{'fp16' if half else 'fp32'}.pt"
            save_checkpoint(path, {"agent": weights_only(state, half)}, identity)
            candidates[half] = (path, _evaluate(path, source_env, env_kwargs, episodes, int(seed)))
            if not half:
                fp32 = _summary(candidates[False][1])
                learned = None if threshold is None else bool(fp32["return_mean"] >= threshold)
                run = {"pair": pair, "role": role, "seed": int(seed), "preset": params.get("preset"),
                       "env": source_env, "exploration": identity.get("exploration", "task"),
                       "steps": metrics.get("train/steps"), "updates": metrics.get("train/updates"),
                       "wall_seconds": metrics.get("train/seconds"), "machine": machine(), "commit": _commit(),
                       "eval": fp32, "threshold": threshold, "learned": learned,
                       "curve": [[c["step"], c["eval_return"]] for c in curve], "params": _params_record(params)}
                from redraw.results_records import merge_keyed

                merge_keyed(Path(root) / RUNS, {"runs": (RUN_KEY, [run])})
                if learned is False and not ship_unlearnt:
                    raise PretrainedError(
                        f"{name} did not learn its task: {fp32['return_mean']:.1f} over {episodes} verdict episodes, "
                        f"threshold {threshold} (learning curve: "
                        f"{', '.join(f'{c[0]}: {c[1]:.0f}' for c in run['curve'])}); recorded in {RUNS}, not "
                        f"shipped. More steps go on from its checkpoint: --set pretrain.steps=N")
        fp16 = _summary(candidates[True][1])
        half = fp16["return_mean"] >= fp32["return_ci95"][0]
        chosen, verdict = candidates[half][0], (fp16 if half else fp32)
        out = Path(root) / SHIPPED / pair / f"{role}-{seed}.pt"
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out.with_name(f".{out.name}.tmp")
        shutil.copy(chosen, tmp_out)
        os.replace(tmp_out, out)
    record = {
        "name": name, "pair": pair, "role": role, "seed": int(seed), "env": source_env,
        "world_model": identity["world_model"], "exploration": identity.get("exploration", "task"),
        "file": f"{pair}/{role}-{seed}.pt", "dtype": "float16" if half else "float32",
        "bytes": out.stat().st_size, "sha256": sha256(out),
        "preset": params.get("preset"), "params": _params_record(params), "commit": _commit(),
        "steps": metrics.get("train/steps"), "updates": metrics.get("train/updates"),
        "wall_seconds": metrics.get("train/seconds"), "machine": machine(),
        "eval": {**verdict, "stream": VERDICT_STREAM, "env": source_env},
        "eval_fp32": fp32, "threshold": threshold,
        "learned": None if threshold is None else bool(verdict["return_mean"] >= threshold),
        "curve": [[c["step"], c["eval_return"]] for c in curve],
    }
    new = [record]
    target = registry.get(pair)
    if role == "source" and target.is_target and [p.KIND for p in target.perturbations] == ["reverse_actions"]:
        new.append(negated_expert(record, pair, params, env_kwargs, episodes, root))
    names = {r["name"] for r in new}
    write_manifest([r for r in records if r["name"] not in names] + new, root)
    return new


def negated_expert(source: dict, pair: str, params: dict, env_kwargs: dict, episodes: int,
                   root: Path = Path(".")) -> dict:
    """The expert of a target that only reverses the actions: the shipped source policy with its
    actions negated, evaluated in the target on the source's verdict episodes."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = install_expert(source, Path(tmp) / "agent.pt", root)
        returns = _evaluate(path, pair, env_kwargs, episodes, int(source["seed"]))
    verdict = _summary(returns)
    name = entry_name(pair, "expert", source["seed"])
    return {
        "name": name, "pair": pair, "role": "expert", "seed": source["seed"], "env": pair,
        "kind": "negated_source", "from": source["name"], "file": source["file"], "dtype": source["dtype"],
        "bytes": 0, "sha256": source["sha256"], "preset": source["preset"], "params": source["params"],
        "commit": _commit(), "steps": 0, "updates": source["updates"], "wall_seconds": 0.0,
        "machine": machine(), "eval": {**verdict, "stream": VERDICT_STREAM, "env": pair},
        "threshold": source["threshold"],
        "learned": None if source["threshold"] is None else bool(verdict["return_mean"] >= source["threshold"]),
    }


# --- install: a shipped model as a pipeline stage's output ------------------------------------

def install_expert(source: dict, out: Path, root: Path = Path("."), key: str = "pretrained.expert") -> Path:
    from redraw.checkpoint import load_checkpoint, save_checkpoint

    blob = load_checkpoint(checked_file(source, root, key), map_location="cpu")
    return save_checkpoint(out, {"agent": blob["agent"]}, {**blob["identity"], "action_sign": -1.0})


def expected_identity(params: dict, role: str, path: str = "params.yaml") -> dict:
    """What a shipped model's identity must hold for this run's params: the env it was trained
    in, the observation mode, the world model and the sizes (model, actor_critic)."""
    from dataclasses import asdict

    from redraw.agent.configs import configs_from_params
    from redraw.config import get

    agent_cfg, _ = configs_from_params(params, path, "rssm" if role == "rssm" else "draw")
    return {"env": get(params, "env.source", path), "obs_mode": get(params, "env.obs_mode", path),
            "world_model": agent_cfg.world_model, "model": asdict(agent_cfg.wm), "actor_critic": asdict(agent_cfg.ac)}


def _first_difference(shipped, wanted, prefix: str) -> str | None:
    if isinstance(wanted, dict) and isinstance(shipped, dict):
        for k in wanted:
            if k not in shipped and prefix:  # a setting newer than the shipped model: its default
                continue
            diff = _first_difference(shipped.get(k), wanted[k], f"{prefix}.{k}" if prefix else k)
            if diff:
                return diff
        return None
    return None if shipped == wanted else f"{prefix}: shipped {shipped!r}, params {wanted!r}"


def install(name: str, role: str, params: dict, out: Path, path: str = "params.yaml",
            root: Path = Path(".")) -> dict:
    """Write the shipped model ``name`` as a training stage's ``agent.pt`` at ``out`` after checking
    its sha256 and that it fits this run's params (refused naming the key otherwise); returns its
    manifest record. ``role``: source, rssm or expert."""
    from redraw.checkpoint import load_checkpoint, save_checkpoint

    key = f"pretrained.{role}"
    record = find(name, root, f"{path}: {key}")
    if record["role"] != role:
        raise PretrainedError(f"{path}: {key}: {name} is a {record['role']} model, not a {role} one")
    from redraw.config import get

    target = get(params, "env.target", path)
    if record["pair"] != target:
        raise PretrainedError(f"{path}: {key}: {name} was made for the pair {record['pair']}, env.target is {target}")
    src = find(record["from"], root, f"{path}: {key}") if record.get("kind") == "negated_source" else record
    blob = load_checkpoint(checked_file(src, root, f"{path}: {key}"), map_location="cpu")
    wanted = expected_identity(params, "rssm" if role == "rssm" else "source", path)
    diff = _first_difference(blob["identity"], wanted, "")
    if diff:
        raise PretrainedError(f"{path}: {key}: {name} does not fit this run's params ({diff}); "
                              f"use the preset it was made with ({record.get('preset')}) or another model")
    identity = dict(blob["identity"])
    if record.get("kind") == "negated_source":
        identity["action_sign"] = -1.0
    save_checkpoint(out, {"agent": blob["agent"]}, identity)
    return record


def selected(params: dict, role: str) -> str:
    """The shipped model params.yaml's ``pretrained.<role>`` names ('' : train from scratch)."""
    return str((params.get("pretrained") or {}).get(role) or "")


def install_stage(name: str, role: str, params: dict, path: str, out_dir: Path, metrics_path: str,
                  curve_path: str) -> dict:
    """A training stage (pretrain, pretrain_rssm, oracle) that starts from a shipped model: its
    ``agent.pt``, metrics and learning curve, from the shipped file and its manifest record."""
    from redraw.plots import learning_curve
    from redraw.tracking import StageRun, write_json, write_metrics

    record = install(name, role, params, Path(out_dir) / "agent.pt", path)
    curve = [{"step": s, "eval_return": r} for s, r in record.get("curve") or []]
    if not curve:  # an expert without a curve of its own: its verdict
        curve = [{"step": record["steps"], "eval_return": record["eval"]["return_mean"]}]
    write_json(curve_path, curve)
    figures = Path(curve_path).with_suffix("")
    figures = figures.with_name(figures.name.replace("_curve", "_figures"))
    learning_curve(curve, figures / "learning_curve.png", f"{Path(out_dir).name}: shipped {name}")
    metrics = {"eval/return": record["eval"]["return_mean"], "eval/return_ci_low": record["eval"]["return_ci95"][0],
               "eval/return_ci_high": record["eval"]["return_ci95"][1], "eval/episodes": record["eval"]["episodes"],
               "train/steps": record["steps"], "train/updates": record["updates"],
               "train/seconds": record["wall_seconds"], "train/shipped": 1}
    write_metrics(metrics_path, metrics)
    stage = {"models/pretrain": "pretrain", "models/oracle": "oracle", "models/pretrain_rssm": "pretrain_rssm"}.get(
        Path(out_dir).as_posix(), Path(out_dir).name)
    tracker = StageRun(stage, params, tags={"pretrained": name, "pretrained_sha256": record["sha256"]})
    tracker.log_metrics(metrics, step=int(record["updates"] or 0))
    tracker.end()
    print(f"{stage}: installed the shipped {name} ({record['dtype']}, eval {record['eval']['return_mean']:.1f} "
          f"over {record['eval']['episodes']} episodes) instead of training")
    return metrics


# --- verify and list ------------------------------------------------------------------------------

def verify(root: Path = Path(".")) -> list[str]:
    """Every manifest record: its file present with the recorded sha256, and loadable into the
    current code (an agent built from its identity takes its weights, strictly). Returns one line
    per record; raises PretrainedError at the first failure."""
    from redraw.agent.agent import load_agent

    lines, total = [], 0
    for record in load_manifest(root):
        for field in ("name", "pair", "role", "seed", "file", "sha256", "eval"):
            if field not in record:
                raise PretrainedError(f"{Path(root) / MANIFEST}: record {record.get('name', '?')} lacks '{field}'")
        src = find(record["from"], root) if record.get("kind") == "negated_source" else record
        path = checked_file(src, root, record["name"])
        try:
            load_agent(path, device="cpu")
        except (RuntimeError, KeyError, ValueError) as exc:
            raise PretrainedError(f"{path}: does not load into the current code ({exc})") from None
        total += record.get("bytes", 0)
        lines.append(f"ok  {record['name']}  sha256 {record['sha256'][:12]}  loads")
    if total > MAX_BYTES:
        raise PretrainedError(f"{Path(root) / SHIPPED}: {total / 2**20:.1f} MB shipped, over the {MAX_BYTES // 2**20} MB budget")
    return lines


def listing(root: Path = Path(".")) -> list[str]:
    rows = []
    for r in load_manifest(root):
        e = r["eval"]
        verdict = {True: "learnt", False: "NOT learnt", None: "no threshold"}[r.get("learned")]
        rows.append(f"{r['name']:<40} {r.get('world_model', ''):<5} {r.get('dtype', ''):<8} "
                    f"{e['return_mean']:7.1f} [{e['return_ci95'][0]:.1f}, {e['return_ci95'][1]:.1f}] "
                    f"n={e['episodes']:<3} threshold {r.get('threshold')}: {verdict}")
    return rows


TABLE_BEGIN = "<!-- begin: redraw pretrained list --markdown -->"
TABLE_END = "<!-- end: redraw pretrained list --markdown -->"


def markdown(root: Path = Path(".")) -> str:
    """The manifest as a markdown table (docs/pretrained.md holds it between TABLE_BEGIN/END)."""
    rows = ["| model | world model | exploration | preset | steps | wall time | machine | verdict return (95% CI, "
            "episodes) | threshold | learnt | size |", "|---|---|---|---|---:|---:|---|---|---:|---|---:|"]
    for r in load_manifest(root):
        e = r["eval"]
        kind = f"negated {r['from']}" if r.get("kind") == "negated_source" else r.get("exploration", "")
        wall = f"{r['wall_seconds'] / 60:.0f} min" if r.get("wall_seconds") else "-"
        size = f"{r['bytes'] / 2**20:.1f} MB {r['dtype']}" if r.get("bytes") else "(the source's file)"
        rows.append(f"| {r['name']} | {r.get('world_model', 'draw')} | {kind} | {r.get('preset')} | "
                    f"{r.get('steps') or 0:,} | {wall} | {r.get('machine', '')} | {e['return_mean']:.1f} "
                    f"[{e['return_ci95'][0]:.1f}, {e['return_ci95'][1]:.1f}], {e['episodes']} | {r.get('threshold')} | "
                    f"{'yes' if r.get('learned') else 'no'} | {size} |")
    return "\n".join(rows)


RUNS_BEGIN = "<!-- begin: redraw pretrained list --runs --markdown -->"
RUNS_END = "<!-- end: redraw pretrained list --runs --markdown -->"


def load_runs(root: Path = Path(".")) -> list[dict]:
    """Every build's record (``RUNS``), learnt or not, in the order they were recorded."""
    path = Path(root) / RUNS
    return json.loads(path.read_text()).get("runs", []) if path.is_file() else []


def runs_markdown(root: Path = Path(".")) -> str:
    """Every build as a markdown table: its verdict and learning curve, shipped or not."""
    shipped = {r["name"] for r in load_manifest(root)}
    rows = ["| pair | role | seed | exploration | preset | steps | wall time | machine | eval return at steps | "
            "verdict return (95% CI, episodes) | threshold | learnt | shipped |",
            "|---|---|---:|---|---|---:|---:|---|---|---|---:|---|---|"]
    for r in load_runs(root):
        e = r["eval"]
        curve = ", ".join(f"{ret:.0f}@{step // 1000}k" for step, ret in r.get("curve", []))
        ships = entry_name(r["pair"], r["role"], r["seed"]) in shipped and r.get("learned")
        rows.append(f"| {r['pair']} | {r['role']} | {r['seed']} | {r.get('exploration', '')} | {r.get('preset')} | "
                    f"{r.get('steps') or 0:,} | {r.get('wall_seconds', 0) / 60:.0f} min | {r.get('machine', '')} | "
                    f"{curve} | {e['return_mean']:.1f} [{e['return_ci95'][0]:.1f}, {e['return_ci95'][1]:.1f}], "
                    f"{e['episodes']} | {r.get('threshold')} | {'yes' if r.get('learned') else 'no'} | "
                    f"{'yes' if ships else 'no'} |")
    return "\n".join(rows)


#: the generated tables of docs/pretrained.md: (begin marker, end marker, what goes between)
DOC_TABLES = ((TABLE_BEGIN, TABLE_END, markdown), (RUNS_BEGIN, RUNS_END, runs_markdown))


def refresh_docs(root: Path = Path(".")) -> None:
    """Write the manifest's table and the builds' table into docs/pretrained.md between their markers."""
    doc = Path(root) / "docs/pretrained.md"
    if not doc.is_file():
        return
    text = doc.read_text()
    for begin, end, table in DOC_TABLES:
        if begin in text and end in text:
            head, rest = text.split(begin, 1)
            text = f"{head}{begin}\n{table(root)}\n{end}{rest.split(end, 1)[1]}"
    doc.write_text(text)


def build(pair: str, role: str, seed: int, preset: str = DEFAULT_PRESET, workdir: Path | None = None,
          root: Path = Path("."), replace: bool = False, episodes: int = 20, overrides: dict | None = None,
          ship_unlearnt: bool = False) -> list[dict]:
    """Train (or resume) and ship one entry; its manifest records."""
    name = entry_name(pair, role, seed)
    if not replace and any(r["name"] == name for r in load_manifest(root)):
        raise PretrainedError(f"{name} is already shipped ({Path(root) / MANIFEST}); pass --replace to replace it")
    workdir = train(pair, role, seed, preset, workdir, overrides)
    try:
        return export(workdir, pair, role, seed, root, replace, episodes, ship_unlearnt)
    finally:  # a build that did not learn is recorded too, so it is a row of the builds' table
        refresh_docs(root)


def add_parser(sub) -> None:
    """``redraw pretrained ...``: build, list and verify the shipped models."""
    p = sub.add_parser("pretrained", help="build, list and verify the shipped pretrained models (pretrained/)",
                       description="The models every experiment starts from, shipped in pretrained/ with a "
                       "manifest (pretrained/manifest.json). params.yaml's pretrained.source / .rssm / .expert "
                       "name the ones a pipeline run starts from instead of training.")
    psub = p.add_subparsers(dest="pretrained_command", required=True, metavar="ACTION")
    q = psub.add_parser("build", help="train (resumably) and ship one model",
                        description="Collect the source data and train ROLE for PAIR with SEED in a work dir of its "
                        "own (resumed from its checkpoints when it was stopped), evaluate it on verdict episodes of "
                        "its own (fp32 and fp16 weights; fp16 is shipped where it scores within fp32's 95% "
                        "interval), and add it to pretrained/. A source model of a target that only reverses the "
                        "actions also ships that target's expert: the source policy with negated actions.")
    q.add_argument("pair", help="the target env (env.target), e.g. reacher-easy-reversed")
    q.add_argument("--role", choices=tuple(STAGE_FLAGS), default="source",
                   help="source: DRAW with Plan2Explore; rssm: DreamerV3's RSSM (dreamer_finetune)")
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--preset", default=DEFAULT_PRESET, help=f"sizes and schedule (default: {DEFAULT_PRESET})")
    q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a params.yaml key on top of the preset (repeatable)")
    q.add_argument("--workdir", type=Path, help="the build's directory (default: "
                   "$XDG_STATE_HOME/redraw/pretrained/PAIR/ROLE-SEED)")
    q.add_argument("--episodes", type=int, default=20, help="verdict episodes (default: 20)")
    q.add_argument("--replace", action="store_true", help="replace an entry that is already shipped")
    q.add_argument("--ship-unlearnt", action="store_true",
                   help="ship it even if it did not learn its task (its record says so; for debugging the "
                   "pipeline, never for results: methods starting from it are void)")
    q.set_defaults(func=_guarded(_cmd_build))
    q = psub.add_parser("list", help="the shipped models with their verdicts")
    q.add_argument("--markdown", action="store_true", help="as the markdown table of docs/pretrained.md")
    q.add_argument("--runs", action="store_true",
                   help="every build instead, learnt or not, with its learning curve (%s)" % RUNS)
    q.set_defaults(func=_guarded(_cmd_list))
    q = psub.add_parser("verify", help="check every shipped file's sha256 and that it loads into this code")
    q.set_defaults(func=_guarded(lambda args: _print(verify())))


def _cmd_list(args) -> int:
    if args.runs:
        return _print([runs_markdown()] if args.markdown else [
            f"{r['pair']} {r['role']}-{r['seed']} ({r.get('preset')}, {r.get('exploration')}, {r.get('steps') or 0:,} "
            f"steps): "
            f"{r['eval']['return_mean']:.1f} [{r['eval']['return_ci95'][0]:.1f}, {r['eval']['return_ci95'][1]:.1f}] "
            f"n={r['eval']['episodes']}, threshold {r.get('threshold')}: "
            f"{'learnt' if r.get('learned') else 'NOT learnt'}" for r in load_runs()])
    return _print([markdown()] if args.markdown else listing())


def _guarded(fn):
    def run(args) -> int:
        from redraw.config import ConfigError

        try:
            return fn(args)
        except (PretrainedError, ConfigError) as exc:
            print(f"redraw pretrained: {exc}", file=sys.stderr)
            return 2
    return run


def _print(lines: list[str]) -> int:
    print("\n".join(lines) if lines else "nothing shipped yet (pretrained/manifest.json lists no model)")
    return 0


def _cmd_build(args) -> int:
    import yaml

    overrides = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            raise PretrainedError(f"--set {item!r}: expected KEY=VALUE")
        overrides[key] = yaml.safe_load(value)
    for record in build(args.pair, args.role, args.seed, args.preset, args.workdir, replace=args.replace,
                        episodes=args.episodes, overrides=overrides, ship_unlearnt=args.ship_unlearnt):
        print(f"shipped {record['name']}: {record['eval']['return_mean']:.1f} over {record['eval']['episodes']} "
              f"episodes ({'learnt' if record['learned'] else 'NOT learnt'}; threshold {record['threshold']})")
    return 0
