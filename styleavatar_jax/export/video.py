"""Animated outputs: frames -> MP4 (imageio-ffmpeg, H.264) or GIF (Pillow), written atomically.

MP4 needs the `imageio-ffmpeg` package (it ships its own ffmpeg binary); without it, or when
the path ends in .gif, frames go to a GIF. `resolve_video_path` says which, before rendering.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from styleavatar_jax.files import atomic_path, write_atomic

VIDEO_SUFFIXES = (".mp4", ".gif")


def write_gif(path: str | os.PathLike, frames: np.ndarray, fps: float = 12.0) -> Path:
    """frames uint8 [T, H, W, 3] -> looping GIF at `fps` (adaptive palette per frame)."""
    frames = _check_frames(frames)
    images = [Image.fromarray(f) for f in frames]
    duration = max(20, round(1000 / fps))  # ms; browsers clamp below 20

    def write(f):
        images[0].save(f, format="GIF", save_all=True, append_images=images[1:],
                       duration=duration, loop=0, optimize=False)  # fmt: skip

    return write_atomic(path, write)


@contextlib.contextmanager
def _ffmpeg_starts():
    """imageio-ffmpeg starts ffmpeg through subprocess (fork, then exec at once), and JAX's
    fork hook warns on every fork once its threads run. The child only execs ffmpeg, so it
    cannot deadlock on JAX's locks: drop exactly that warning."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"os\.fork\(\) was called", RuntimeWarning)
        yield


def ffmpeg_exe() -> str | None:
    """Path of imageio-ffmpeg's ffmpeg binary, or None when the package is missing."""
    try:
        import imageio_ffmpeg
    except ImportError:
        return None
    try:
        with _ffmpeg_starts():  # it runs `ffmpeg -version` once
            return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError:  # the package without a usable binary
        return None


def resolve_video_path(path: str | os.PathLike, have_ffmpeg: bool) -> tuple[Path, str | None]:
    """The file a video for `path` will be: (path, None), or for an .mp4 without ffmpeg the
    .gif beside it and a sentence saying so. Other suffixes are a ValueError."""
    path = Path(path)
    if path.suffix.lower() not in VIDEO_SUFFIXES:
        raise ValueError(f"--out={path}: expected a file ending in {' or '.join(VIDEO_SUFFIXES)}")
    if path.suffix.lower() == ".mp4" and not have_ffmpeg:
        gif = path.with_suffix(".gif")
        return gif, f"imageio-ffmpeg is not installed: writing {gif} instead of {path}"
    return path, None


def companion_path(path: str | os.PathLike, kind: str) -> Path:
    """'a.mp4', 'depth' -> 'a_depth.mp4'; kind 'rgb' is the path itself."""
    path = Path(path)
    return path if kind == "rgb" else path.with_name(f"{path.stem}_{kind}{path.suffix}")


def write_mp4(path: str | os.PathLike, frames: np.ndarray, fps: float = 24.0,
              quality: float = 8.0) -> Path:  # fmt: skip
    """frames uint8 [T, H, W, 3] -> H.264 MP4 (yuv420p) at `fps`, written to a temporary file
    beside `path` and renamed. Odd sizes are padded by one edge pixel (yuv420p needs even)."""
    import imageio_ffmpeg

    frames = _check_frames(frames)
    t, h, w, _ = frames.shape
    frames = np.pad(frames, ((0, 0), (0, h % 2), (0, w % 2), (0, 0)), mode="edge")
    path = Path(path)
    # ffmpeg picks the container by the suffix
    with _ffmpeg_starts(), atomic_path(path, suffix=".tmp.mp4") as tmp:
        writer = imageio_ffmpeg.write_frames(
            str(tmp), (frames.shape[2], frames.shape[1]), fps=fps, codec="libx264",
            quality=quality, pix_fmt_out="yuv420p", macro_block_size=2, ffmpeg_log_level="error",
        )  # fmt: skip
        writer.send(None)  # start ffmpeg
        for frame in frames:
            writer.send(np.ascontiguousarray(frame))
        writer.close()
    return path


def write_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 24.0) -> Path:
    """frames uint8 [T, H, W, 3] -> `path` (.mp4 through ffmpeg, .gif through Pillow)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        return write_gif(path, frames, fps)
    if suffix == ".mp4":
        if ffmpeg_exe() is None:
            raise ValueError(f"{path}: MP4 needs imageio-ffmpeg (pip install imageio-ffmpeg) "
                             "or write a .gif")  # fmt: skip
        return write_mp4(path, frames, fps)
    raise ValueError(f"{path}: expected a file ending in {' or '.join(VIDEO_SUFFIXES)}")


def read_video(path: str | os.PathLike) -> np.ndarray:
    """An MP4 or GIF written here -> uint8 [T, H, W, 3] (for tests and checks)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such video")
    if path.suffix.lower() == ".gif":
        with Image.open(path) as im:
            out = []
            for i in range(im.n_frames):
                im.seek(i)
                out.append(np.asarray(im.convert("RGB")))
        return np.stack(out)
    import imageio_ffmpeg

    with _ffmpeg_starts():
        reader = imageio_ffmpeg.read_frames(str(path))
        meta = next(reader)
        w, h = meta["size"]
        return np.stack([np.frombuffer(b, np.uint8).reshape(h, w, 3) for b in reader])


def _check_frames(frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise ValueError(f"frames: expected uint8 [T, H, W, 3], got {frames.dtype} {frames.shape}")
    return frames
