"""Tiny robot logs written locally (no downloads) with known generating signals.

Every stream is a function of time, so a test can compute what the resampled episode must hold:
``pos(t, j)``, ``vel(t, j)`` for joint ``j``, ``cmd(t)`` for the command, and images whose red
channel is a constant that encodes the frame index (``frame_code``) over a fixed checkerboard
(so no frame is blank to the validation).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import yaml

ENV = "pendulum-swingup-reversed"  # proprio state: 3 dims; pixels velocity: 1 dim; action: 1


def pos(t, j=0):
    return np.sin(2 * np.pi * 0.5 * np.asarray(t) + j)


def vel(t, j=0):
    return np.cos(2 * np.pi * 0.5 * np.asarray(t) + j) * (1.0 + j)


def cmd(t):
    return 0.5 * np.sin(2 * np.pi * 0.3 * np.asarray(t))


def frame_code(i):
    return (np.asarray(i) * 7) % 200 + 20


def decode_code(images: np.ndarray) -> np.ndarray:
    """Frame index codes back from images (the red channel's mean)."""
    return np.round(images[..., 0].reshape(len(images), -1).mean(axis=1)).astype(int)


def image(i, h=48, w=64):
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = frame_code(i)
    yy, xx = np.mgrid[:h, :w]
    img[..., 1] = np.where(((yy // 4) + (xx // 4)) % 2 == 0, 200, 40)
    img[..., 2] = 90
    return img


def jpeg(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def write_config(path: Path, cfg: dict) -> Path:
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


# -- HDF5 ---------------------------------------------------------------------------------------
def write_aloha(path: Path, n: int = 120, rate: float = 50.0, compress: bool = False) -> Path:
    import h5py

    t = np.arange(n) / rate
    with h5py.File(path, "w") as f:
        f.attrs["sim"] = False
        f.attrs["compress"] = compress
        obs = f.create_group("observations")
        obs["qpos"] = np.stack([pos(t, j) for j in range(14)], axis=1)
        obs["qvel"] = np.stack([vel(t, j) for j in range(14)], axis=1)
        obs["effort"] = np.zeros((n, 14))
        frames = [image(i) for i in range(n)]
        if compress:
            enc = [np.frombuffer(jpeg(im), np.uint8) for im in frames]
            pad = max(len(e) for e in enc)
            arr = np.zeros((n, pad), np.uint8)
            for i, e in enumerate(enc):
                arr[i, : len(e)] = e
            obs.create_dataset("images/cam_high", data=arr)
        else:
            obs.create_dataset("images/cam_high", data=np.stack(frames))
        f["action"] = np.stack([cmd(t)] + [np.zeros(n)] * 13, axis=1)
    return path


def write_robomimic(path: Path, lengths=(60, 50, 70), rate: float = 20.0) -> Path:
    import h5py

    with h5py.File(path, "w") as f:
        data = f.create_group("data")
        for d, n in zip((0, 10, 2), lengths):  # out of numeric-name order on purpose
            t = np.arange(n) / rate + d
            g = data.create_group(f"demo_{d}")
            g.attrs["num_samples"] = n
            g["obs/robot0_joint_vel"] = np.stack([vel(t, j) for j in range(7)], axis=1)
            g["obs/agentview_image"] = np.stack([image(i + 1000 * d, 84, 84) for i in range(n)])
            g["actions"] = np.stack([cmd(t)] + [np.zeros(n)] * 6, axis=1)
            g["rewards"] = (np.arange(n) % 5 == 0).astype(np.float64)
            g["dones"] = np.zeros(n)
    return path


# -- ROS 2 bags ----------------------------------------------------------------------------------
BAG_SECONDS = 3.2
HEADER_LAG_NS = 2_000_000  # header stamps are 2 ms before the log time (sensor latency)


def joint_times():
    """~100 Hz joint states with a deterministic +-1 ms jitter, starting 5 ms in (ns)."""
    n = int(BAG_SECONDS * 100)
    jitter = ((np.arange(n) * 7) % 3 - 1) * 1_000_000
    return 5_000_000 + np.arange(n) * 10_000_000 + jitter


def camera_times():
    return 11_000_000 + np.round(np.arange(int(BAG_SECONDS * 30)) * 1e9 / 30).astype(np.int64)


def command_times():
    """25 Hz: one command per agent step of the env (0.02 s x action repeat 2)."""
    return np.arange(int(BAG_SECONDS * 25)) * 40_000_000


def write_bag(path: Path, storage: str = "sqlite3", t0: int = 1_700_000_000 * 10**9, backwards: bool = False,
              phase: float = 0.0) -> Path:
    """joint states ~100 Hz (name, position, velocity; header stamped), raw rgb8 images with padded
    rows and JPEG images ~30 Hz, geometry_msgs/Twist commands 25 Hz (linear.x = cmd(t)); the
    signals are those of t + ``phase`` seconds (t: time in the bag)."""
    from rosbags.typesys import Stores, get_typestore

    from redraw.data.importers.rosbag import write_bag as write_messages

    ts = get_typestore(Stores.ROS2_HUMBLE)
    T = ts.types
    JS, Img, CImg = T["sensor_msgs/msg/JointState"], T["sensor_msgs/msg/Image"], T["sensor_msgs/msg/CompressedImage"]
    Twist, V3, H, Time = (T["geometry_msgs/msg/Twist"], T["geometry_msgs/msg/Vector3"], T["std_msgs/msg/Header"],
                          T["builtin_interfaces/msg/Time"])

    def header(ns):
        return H(stamp=Time(sec=int(ns // 10**9), nanosec=int(ns % 10**9)), frame_id="")

    msgs = []
    for i, tn in enumerate(joint_times()):
        s = tn / 1e9 + phase
        m = JS(header=header(t0 + tn - HEADER_LAG_NS), name=["hinge", "elbow"],
               position=np.array([pos(s, 0), pos(s, 1)]), velocity=np.array([vel(s, 0), vel(s, 1)]),
               effort=np.zeros(0))
        msgs.append((tn, "/joint_states", m, JS))
    for i, tn in enumerate(camera_times()):
        img = image(i)
        h, w = img.shape[:2]
        step = w * 3 + 8  # padded rows
        data = np.zeros((h, step), np.uint8)
        data[:, : w * 3] = img.reshape(h, w * 3)
        msgs.append((tn, "/camera/image_raw", Img(header=header(t0 + tn), height=h, width=w, encoding="rgb8",
                                                   is_bigendian=0, step=step, data=data.ravel()), Img))
        msgs.append((tn + 1000, "/camera/compressed", CImg(header=header(t0 + tn), format="jpeg",
                                                           data=np.frombuffer(jpeg(img), np.uint8)), CImg))
    for tn in command_times():
        c = Twist(linear=V3(x=float(cmd(tn / 1e9 + phase)), y=0.0, z=0.0), angular=V3(x=0.0, y=0.0, z=0.0))
        msgs.append((tn, "/cmd_vel", c, Twist))
    msgs.sort(key=lambda m: m[0])
    if backwards:  # a header stamp that goes back in time
        k = next(i for i, m in enumerate(msgs) if m[1] == "/joint_states" and m[0] > 10**9)
        msgs[k][2].header.stamp.sec -= 1
    return write_messages(path, [(t0 + tn, topic, m) for tn, topic, m, _ in msgs], storage, ts)


def write_controller_bag(path: Path, storage: str = "sqlite3", seconds: float = 8.0, seed: int = 0,
                         t0: int = 1_700_000_000 * 10**9) -> dict:
    """A robot run logged as it happens, with what the controller really acted on kept beside it.

    * ``/pendulum/observation`` (std_msgs/Float64MultiArray, no header): [cos q, sin q, dq] at
      50 Hz, published every 20 ms with 1 ms jitter and logged 0.1-0.6 ms later, about 2 ms
      before every other controller wake-up;
    * ``/joint_states`` (one joint, ``hinge``, with header) at 50 Hz beside it;
    * a camera at 25 Hz, capture times jittered by 3 ms (header stamp = capture), each frame
      logged 8-14 ms after capture as ``/camera/image_raw`` (rgb8), about 4 ms before a wake-up,
      and 2 ms later as ``/camera/compressed`` (JPEG): many frames arrive just after the
      controller has read, so the controller acts on some frames twice and skips others;
    * ``/cmd`` (std_msgs/Float64) at 25 Hz from a timer-driven controller: at each wake-up (every
      40 ms, 0.3 ms jitter) it reads the newest observation and frame received, and publishes its
      command 10-60 us later.

    Returns the ground truth (times in ns from ``t0``): ``wake`` and ``cmd_log``/``cmd`` per
    control step, ``obs_log``/``obs`` per observation sample, ``img_log[topic]`` per frame.
    """
    from rosbags.typesys import Stores, get_typestore

    from redraw.data.importers.rosbag import write_bag as write_messages

    rng = np.random.default_rng(seed)
    ms = 1_000_000
    n_obs, n_img, n_cmd = int(seconds * 50), int(seconds * 25), int(seconds * 25)
    obs_pub = (17_650_000 + np.arange(n_obs) * 20 * ms + rng.normal(0, 1 * ms, n_obs)).astype(np.int64)
    obs_log = obs_pub + rng.integers(100_000, 600_000, n_obs)
    q, dq = pos(obs_pub / 1e9), vel(obs_pub / 1e9)
    obs = np.stack([np.cos(q), np.sin(q), dq], axis=1)
    capture = (25 * ms + np.arange(n_img) * 40 * ms + rng.normal(0, 3 * ms, n_img)).astype(np.int64)
    raw_log = capture + rng.integers(8 * ms, 14 * ms, n_img)
    img_log = {"/camera/image_raw": raw_log, "/camera/compressed": raw_log + 2 * ms}
    wake = (40 * ms + np.arange(n_cmd) * 40 * ms + rng.normal(0, 0.3 * ms, n_cmd)).astype(np.int64)
    cmd_log = wake + rng.integers(10_000, 60_000, n_cmd)
    command = cmd(cmd_log / 1e9)

    ts = get_typestore(Stores.ROS2_HUMBLE)
    T = ts.types
    JS, Img, CImg = T["sensor_msgs/msg/JointState"], T["sensor_msgs/msg/Image"], T["sensor_msgs/msg/CompressedImage"]
    Arr, Lay, F64 = T["std_msgs/msg/Float64MultiArray"], T["std_msgs/msg/MultiArrayLayout"], T["std_msgs/msg/Float64"]
    H, Time = T["std_msgs/msg/Header"], T["builtin_interfaces/msg/Time"]

    def header(ns):
        ns = int(t0 + ns)
        return H(stamp=Time(sec=ns // 10**9, nanosec=ns % 10**9), frame_id="")

    msgs = []
    for i in range(n_obs):
        msgs.append((obs_log[i], "/pendulum/observation", Arr(layout=Lay(dim=[], data_offset=0), data=obs[i]), Arr))
        msgs.append((obs_log[i] + 50_000, "/joint_states", JS(header=header(obs_pub[i]), name=["hinge"],
                     position=q[i : i + 1].copy(), velocity=dq[i : i + 1].copy(), effort=np.zeros(0)), JS))
    for j in range(n_img):
        img = image(j)
        h, w = img.shape[:2]
        msgs.append((raw_log[j], "/camera/image_raw", Img(header=header(capture[j]), height=h, width=w,
                     encoding="rgb8", is_bigendian=0, step=w * 3, data=img.ravel()), Img))
        msgs.append((raw_log[j] + 2 * ms, "/camera/compressed", CImg(header=header(capture[j]), format="jpeg",
                     data=np.frombuffer(jpeg(img), np.uint8)), CImg))
    for k in range(n_cmd):
        msgs.append((cmd_log[k], "/cmd", F64(data=float(command[k])), F64))
    msgs.sort(key=lambda m: m[0])
    write_messages(path, [(t0 + tn, topic, m) for tn, topic, m, _ in msgs], storage, ts)
    return {"wake": wake, "cmd_log": cmd_log, "cmd": command, "obs_log": obs_log, "obs": obs, "img_log": img_log}


# -- LeRobot ---------------------------------------------------------------------------------------
def lerobot_signals(ep: int, n: int, fps: float):
    """Per-row state (3), action (2: cmd, -cmd) and frame codes of episode ``ep``."""
    t = np.arange(n) / fps + 10 * ep
    state = np.stack([pos(t, 0), pos(t, 1), vel(t, 0)], axis=1).astype(np.float32)
    action = np.stack([cmd(t), -cmd(t)], axis=1).astype(np.float32)
    return t, state, action, [image(i + 100 * ep) for i in range(n)]


def write_video(path: Path, frames: list[np.ndarray], fps: int) -> None:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"crf": "8", "g": "10"})
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for img in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_lerobot(root: Path, version: str = "v3.0", lengths=(60, 46), fps: int = 50, inline: bool = False) -> Path:
    """A tiny LeRobot dataset: v3.0 (one parquet + one two-episode mp4) or v2.1 (a file per
    episode); ``inline`` stores the images as PNG bytes in the parquet instead of video."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cam = "observation.images.top"
    features = {
        "observation.state": {"dtype": "float32", "shape": [3], "names": ["hinge", "elbow", "hinge_vel"]},
        "action": {"dtype": "float32", "shape": [2], "names": {"motors": ["thrust", "brake"]}},
        cam: {"dtype": "image" if inline else "video", "shape": [48, 64, 3], "names": ["height", "width", "channels"]},
        "timestamp": {"dtype": "float32", "shape": [1], "names": None},
        "frame_index": {"dtype": "int64", "shape": [1], "names": None},
        "episode_index": {"dtype": "int64", "shape": [1], "names": None},
        "index": {"dtype": "int64", "shape": [1], "names": None},
        "task_index": {"dtype": "int64", "shape": [1], "names": None},
    }
    info = {"codebase_version": version, "robot_type": "test", "fps": fps, "total_episodes": len(lengths),
            "total_frames": int(sum(lengths)), "chunks_size": 1000, "features": features}
    if version == "v3.0":
        info["data_path"] = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
        info["video_path"] = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    else:
        info["data_path"] = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
        info["video_path"] = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
    tables, all_frames, ep_rows, start = [], [], [], 0
    for ep, n in enumerate(lengths):
        t, state, action, frames = lerobot_signals(ep, n, fps)
        cols = {"observation.state": pa.array(list(state), pa.list_(pa.float32())),
                "action": pa.array(list(action), pa.list_(pa.float32())),
                "timestamp": pa.array(np.arange(n, dtype=np.float32) / fps),
                "frame_index": pa.array(np.arange(n)), "episode_index": pa.array(np.full(n, ep)),
                "index": pa.array(start + np.arange(n)), "task_index": pa.array(np.zeros(n, np.int64))}
        if inline:
            from PIL import Image
            import io

            def png(img):
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="PNG")
                return {"bytes": buf.getvalue(), "path": None}
            cols[cam] = pa.array([png(f) for f in frames], pa.struct([("bytes", pa.binary()), ("path", pa.string())]))
        tables.append(pa.table(cols))
        ep_rows.append({"episode_index": ep, "length": n, "data/chunk_index": 0, "data/file_index": 0,
                        "dataset_from_index": start, "dataset_to_index": start + n,
                        f"videos/{cam}/chunk_index": 0, f"videos/{cam}/file_index": 0,
                        f"videos/{cam}/from_timestamp": len(all_frames) / fps,
                        f"videos/{cam}/to_timestamp": (len(all_frames) + n) / fps})
        all_frames += frames
        start += n
        if version != "v3.0":
            path = root / info["data_path"].format(episode_chunk=0, episode_index=ep)
            path.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(tables[-1], path)
            if not inline:
                write_video(root / info["video_path"].format(episode_chunk=0, video_key=cam, episode_index=ep),
                            frames, fps)
    if version == "v3.0":
        path = root / info["data_path"].format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.concat_tables(tables), path)
        if not inline:
            write_video(root / info["video_path"].format(video_key=cam, chunk_index=0, file_index=0), all_frames, fps)
        meta = root / "meta" / "episodes" / "chunk-000" / "file-000.parquet"
        meta.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(ep_rows), meta)
    else:
        (root / "meta").mkdir(parents=True, exist_ok=True)
        (root / "meta" / "episodes.jsonl").write_text(
            "".join(json.dumps({"episode_index": ep, "length": n, "tasks": ["test"]}) + "\n"
                    for ep, n in enumerate(lengths)))
    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "meta" / "info.json").write_text(json.dumps(info, indent=2))
    return root
