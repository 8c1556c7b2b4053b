"""The random-access image source both dataset formats give, and its per-image metadata.

An `ImageSource` holds what is cheap (names, labels [N, 25], normalised metadata) in
memory and reads the encoded image i through a format-specific `read_bytes(i)`; decoding
and validation happen in `__getitem__`, so a reader opens in milliseconds and the input
pipeline decodes in its worker threads (PIL releases the GIL while decoding).

Per-image metadata (`META_FIELDS`), with the value an image without it gets:

    identity         int    -1 (unknown)     the avatar an image belongs to
    seed             int    -1 (unknown)     the generator seed that made it
    yaw, pitch       float  from the label   degrees, geometric (cameras.angles_from_pose
                                              about the world origin), float32 precision
    prompt, negative_prompt, style, view     str  ""
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import io
import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import PIL.Image

from styleavatar_jax import cameras

LABEL_DIM = 25
INT_FIELDS = ("identity", "seed")
FLOAT_FIELDS = ("yaw", "pitch")
STR_FIELDS = ("prompt", "negative_prompt", "style", "view")
META_FIELDS = INT_FIELDS + FLOAT_FIELDS + STR_FIELDS
IMAGE_FORMATS = ("PNG", "JPEG")


def angles_degrees(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """labels [N, 25] -> geometric yaw [N], pitch [N] (float32 degrees) of their cam2world."""
    cam2world, _ = cameras.split_label(np.asarray(labels, np.float32))
    yaw, pitch, _ = cameras.angles_from_pose(cam2world)
    return np.degrees(np.asarray(yaw)).astype(np.float32), np.degrees(np.asarray(pitch)).astype(
        np.float32
    )


# EG3D dataset_preprocessing/mirror_dataset.py flip_yaw negates pose entries (0,1), (0,2),
# (0,3), (1,0), (2,0) of the flattened 4x4 (cameras.mirror_pose, S·M·S, also negates
# (3,0), which is 0 in a cam2world). An elementwise sign: numpy, no accelerator.
_MIRROR_SIGN = np.ones(LABEL_DIM, np.float32)
_MIRROR_SIGN[[1, 2, 3, 4, 8]] = -1.0


def mirror_labels(labels: np.ndarray) -> np.ndarray:
    """labels [..., 25] -> float32 labels of the horizontally flipped images, as EG3D."""
    return np.asarray(labels, np.float32) * _MIRROR_SIGN


def check_label(value: Any, where: str) -> np.ndarray:
    """A JSON label (25 finite numbers) -> float32 [25]; ValueError naming `where` otherwise."""
    ok = isinstance(value, list | tuple) and all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in value
    )
    if not ok or len(value) != LABEL_DIM:
        got = f"{len(value)} values" if isinstance(value, list | tuple) else repr(value)[:60]
        raise ValueError(f"{where}: label must be {LABEL_DIM} numbers, got {got}")
    label = np.asarray(value, np.float32)
    if not np.all(np.isfinite(label)):
        raise ValueError(f"{where}: label has non-finite values {value}")
    return label


def normalize_meta(
    meta: Mapping[str, Any] | None, label_angles: tuple[float, float], where: str
) -> dict:
    """Raw per-image metadata (JSON or tfds record) -> every META_FIELDS key, typed.

    Missing yaw/pitch are `label_angles` (degrees, from `angles_degrees` of the label);
    floats are rounded to float32 so that metadata survives EG3D -> tfds -> EG3D unchanged.
    """
    meta = dict(meta or {})
    unknown = sorted(set(meta) - set(META_FIELDS))
    if unknown:
        raise ValueError(f"{where}: unknown meta keys {unknown}; allowed: {list(META_FIELDS)}")
    out: dict[str, Any] = {}
    for key in INT_FIELDS:
        value = meta.get(key, -1)
        if not isinstance(value, int | np.integer) or isinstance(value, bool):
            raise ValueError(f"{where}: meta {key!r} must be an integer, got {value!r}")
        out[key] = int(value)
    meta = dict(zip(FLOAT_FIELDS, map(float, label_angles), strict=True)) | meta
    for key in FLOAT_FIELDS:
        value = meta[key]
        if not isinstance(value, int | float | np.floating) or isinstance(value, bool):
            raise ValueError(f"{where}: meta {key!r} must be a number (degrees), got {value!r}")
        if not math.isfinite(value):
            raise ValueError(f"{where}: meta {key!r} is not finite: {value!r}")
        out[key] = float(np.float32(value))
    for key in STR_FIELDS:
        value = meta.get(key, "")
        if not isinstance(value, str):
            raise ValueError(f"{where}: meta {key!r} must be a string, got {value!r}")
        out[key] = value
    return out


def image_info(data: bytes, where: str) -> tuple[str, int]:
    """Encoded image -> (format 'PNG'|'JPEG', side) from its header; ValueError unless it is
    a square 8-bit RGB PNG or JPEG."""
    try:
        img = PIL.Image.open(io.BytesIO(data))
    except PIL.UnidentifiedImageError:
        raise ValueError(f"{where}: not a readable PNG or JPEG image (damaged, or another "
                         "format); replace it or remove it from the dataset") from None  # fmt: skip
    except OSError as e:
        raise ValueError(f"{where}: not a readable image ({e})") from None
    if img.format not in IMAGE_FORMATS:
        raise ValueError(f"{where}: is {img.format}, expected one of {IMAGE_FORMATS}")
    if img.mode != "RGB":
        raise ValueError(
            f"{where}: image mode is {img.mode!r}, expected 'RGB' (3 channels, 8 bits); "
            "convert grayscale/RGBA images to RGB before writing the dataset"
        )
    if img.width != img.height:
        raise ValueError(f"{where}: image is {img.width}x{img.height}, expected a square image")
    return img.format, img.width


def decode_rgb(data: bytes, where: str, resolution: int) -> np.ndarray:
    """Encoded PNG/JPEG -> uint8 [resolution, resolution, 3]; ValueError naming `where`."""
    _, side = image_info(data, where)
    if side != resolution:
        raise ValueError(
            f"{where}: image is {side}x{side}, expected {resolution}x{resolution} "
            "like the rest of the dataset"
        )
    try:
        with PIL.Image.open(io.BytesIO(data)) as img:
            return np.asarray(img)
    except OSError as e:  # truncated or corrupt data: the header was fine
        raise ValueError(f"{where}: image data is corrupt ({e}); replace the file or remove "
                         "it from the dataset") from None  # fmt: skip


def encode_rgb(image: np.ndarray, fmt: str = "PNG", quality: int = 95) -> bytes:
    """uint8 [H, W, 3] -> PNG or JPEG bytes (quality 1-95 for JPEG, ignored for PNG)."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    fmt = fmt.upper()
    if fmt not in IMAGE_FORMATS:
        raise ValueError(f"image format must be one of {IMAGE_FORMATS}, got {fmt!r}")
    buf = io.BytesIO()
    if fmt == "JPEG":
        PIL.Image.fromarray(image).save(buf, format="JPEG", quality=quality)
    else:
        PIL.Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


@dataclasses.dataclass(frozen=True, eq=False)
class ImageSource:
    """N labelled square RGB images; `source[i]` decodes image i.

    source[i] -> dict(image=uint8 [H, W, 3], label=float32 [25], index=i, name=str,
                      identity, seed, yaw, pitch (degrees), prompt, negative_prompt, style, view)
    """

    path: str  # where it was opened from, for messages
    names: tuple[str, ...]  # [N] relative path (EG3D) or stored name (tfds) of each image
    labels: np.ndarray  # float32 [N, 25]
    meta: tuple[dict, ...]  # [N] normalize_meta dicts
    resolution: int
    read_bytes: Callable[[int], bytes]  # i -> encoded image i; safe to call from threads
    close_fn: Callable[[], None] = lambda: None

    def __post_init__(self):
        n = len(self.names)
        if n == 0:
            raise ValueError(f"{self.path}: the dataset is empty")
        if self.labels.shape != (n, LABEL_DIM) or len(self.meta) != n:
            raise ValueError(
                f"{self.path}: {n} names but labels {self.labels.shape}, {len(self.meta)} meta"
            )

    def __len__(self) -> int:
        return len(self.names)

    def where(self, i: int) -> str:
        return f"{self.path}: entry {i} ({self.names[i]})"

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"{self.path}: index {i} out of range [0, {len(self)})")
        image = decode_rgb(self.read_bytes(i), self.where(i), self.resolution)
        return (
            dict(image=image, label=self.labels[i].copy(), index=i, name=self.names[i])
            | self.meta[i]
        )

    def close(self) -> None:
        self.close_fn()

    def __enter__(self) -> ImageSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def check_images(source: ImageSource, indices=None, workers: int = 8) -> int:
    """Decode images `indices` (default: all) -> how many; the first damaged one (in index
    order) -> ValueError naming it. Decodes in chunks, so a damaged image stops the check
    without decoding the rest."""
    indices = np.arange(len(source)) if indices is None else np.asarray(indices)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        for chunk in np.array_split(indices, max(1, len(indices) // 256)):
            for _ in pool.map(lambda i: source[int(i)], chunk):
                pass
    return len(indices)


def spread(n: int, count: int) -> np.ndarray:
    """min(count, n) indices spread evenly over [0, n), first and last included."""
    return np.unique(np.linspace(0, n - 1, min(count, n)).round().astype(int))


def read_images(source: ImageSource, indices, workers: int = 8) -> np.ndarray:
    """uint8 [len(indices), R, R, 3] decoded in a thread pool (PIL releases the GIL)."""
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        return np.stack(list(pool.map(lambda i: source[int(i)]["image"], indices)))
