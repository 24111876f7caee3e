"""Image decoding and shaping: raw ROS images (with padded rows), compressed bytes, crop, resize.

Every image leaves here as uint8 RGB of the target size. Resizing uses Pillow's area-averaging
filter (``Image.BOX`` when shrinking, bilinear when enlarging); nothing is interpolated in time.
"""

from __future__ import annotations

import io

import numpy as np

from redraw.data.schema import DataError

#: ROS sensor_msgs/Image encodings: channels and the permutation to RGB
_ENCODINGS = {"rgb8": (3, [0, 1, 2]), "bgr8": (3, [2, 1, 0]), "rgba8": (4, [0, 1, 2]), "bgra8": (4, [2, 1, 0]),
              "mono8": (1, [0, 0, 0]), "8uc1": (1, [0, 0, 0]), "8uc3": (3, [0, 1, 2])}


def decode_ros_image(msg, file: str, key: str, where: str) -> np.ndarray:
    """sensor_msgs/Image -> HxWx3 uint8 RGB; honours ``step`` (rows may be padded)."""
    enc = str(msg.encoding).lower()
    if enc not in _ENCODINGS:
        raise DataError(file, key, f"topic {where!r}: image encoding {msg.encoding!r} is not supported "
                        f"(supported: {', '.join(_ENCODINGS)})")
    ch, perm = _ENCODINGS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, np.uint8)
    if step < w * ch or data.size < h * step:
        raise DataError(file, key, f"topic {where!r}: image data of {data.size} bytes does not hold {h} rows of "
                        f"step {step} for width {w} x {ch} channels")
    rows = data[: h * step].reshape(h, step)[:, : w * ch].reshape(h, w, ch)
    return np.ascontiguousarray(rows[..., perm])


def decode_bytes(data, file: str, key: str, where: str) -> np.ndarray:
    """Compressed image bytes (JPEG, PNG, ...) -> HxWx3 uint8 RGB."""
    from PIL import Image, UnidentifiedImageError

    raw = bytes(data) if isinstance(data, (bytes, bytearray, memoryview)) else np.asarray(data, np.uint8).tobytes()
    try:
        with Image.open(io.BytesIO(raw)) as img:
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(file, key, f"{where!r}: cannot decode compressed image ({exc})") from None


def to_rgb(arr: np.ndarray, file: str, key: str, where: str) -> np.ndarray:
    """An array image (HxW, HxWx1, HxWx3, HxWx4 or CxHxW) -> HxWx3 uint8."""
    arr = np.asarray(arr)
    if arr.dtype != np.uint8:
        raise DataError(file, key, f"{where!r}: image dtype {arr.dtype} (expected uint8)")
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 3, 4):
        arr = arr.transpose(1, 2, 0)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3 or arr.shape[2] not in (1, 3, 4):
        raise DataError(file, key, f"{where!r}: image shape {arr.shape} is not HxW, HxWxC or CxHxW")
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    return arr[..., :3]


class Shaper:
    """crop -> colour order -> resize to ``size`` x ``size``, for one image stream."""

    def __init__(self, size: int, crop: list[int] | None, colour: str, file: str, key: str, where: str):
        self.size, self.crop, self.bgr = size, crop, colour == "bgr"
        self.file, self.key, self.where = file, key, where

    def __call__(self, img: np.ndarray) -> np.ndarray:
        from PIL import Image

        if self.crop is not None:
            top, left, h, w = self.crop
            if top + h > img.shape[0] or left + w > img.shape[1]:
                raise DataError(self.file, f"{self.key}.crop", f"{self.where!r}: crop {self.crop} does not fit "
                                f"the {img.shape[0]}x{img.shape[1]} image")
            img = img[top : top + h, left : left + w]
        if self.bgr:
            img = img[..., ::-1]
        if img.shape[:2] != (self.size, self.size):
            shrink = img.shape[0] >= self.size and img.shape[1] >= self.size
            pil = Image.fromarray(np.ascontiguousarray(img))
            img = np.asarray(pil.resize((self.size, self.size), Image.BOX if shrink else Image.BILINEAR))
        return np.ascontiguousarray(img, dtype=np.uint8)
