"""Atomic file output: write beside the target, then rename, so no reader sees half a file.
And the input side: what a file's first bytes say it is, and an .npz reader that says so
when a path holds something else."""

from __future__ import annotations

import contextlib
import os
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path in path's folder (for writers that take a file name, such as
    ffmpeg); when the block succeeds it is renamed to `path`, when it fails it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call write(f) on a temporary file in path's folder, then rename it to path."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
    return Path(path)


def write_npz(path: str | os.PathLike, **arrays: np.ndarray) -> Path:
    return write_atomic(path, lambda f: np.savez(f, **arrays))


# What a wrong path most often holds, by its first bytes (the formats' published magic).
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"PK\x03\x04", "a zip archive"),
    (b"PK\x05\x06", "a zip archive"),  # an empty one
    (b"\x1f\x8b", "a gzip file"),
    (b"\x93NUMPY", "a .npy array"),
    *((bytes([0x80, protocol]), "a pickle") for protocol in range(2, 6)),
)


def describe_magic(path: str | os.PathLike) -> str:
    """What a file's first bytes say it is: 'a PNG image', 'a JPEG image', 'a zip archive'
    (also .npz and torch.save files), 'a gzip file', 'a .npy array', 'a pickle', 'an HTML
    page', 'text', 'an empty file', or '' when none of these."""
    with open(path, "rb") as f:
        head = f.read(512)
    if not head:
        return "an empty file"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return kind
    text = head.decode("utf-8", "replace")
    if "\ufffd" in text[:-1] or any(c < " " and c not in "\t\r\n" for c in text):
        return ""  # binary (a character cut at byte 512 may leave one replacement at the end)
    html = text.lstrip().lower().startswith(("<!doctype html", "<html"))
    return "an HTML page" if html else "text"


SHIPPED = Path(__file__).resolve().parents[1] / "pretrained"  # models shipped in the repository


def shipped_hint(path: str | os.PathLike) -> str:
    """For a path inside the repository's pretrained/ folder: how to restore it ('' else)."""
    p = Path(path).absolute()
    for q in (p, p.resolve()):
        if q == SHIPPED or SHIPPED in q.parents:
            rel = (SHIPPED.name / q.relative_to(SHIPPED)).as_posix()
            return (f" It is shipped with the repository: restore it with "
                    f"`git checkout -- {rel}` (in {SHIPPED.parent}).")  # fmt: skip
    return ""


def load_npz(path: str | os.PathLike, flag: str = "") -> dict[str, np.ndarray]:
    """An .npz (no pickled objects) -> {name: array}. Anything else -> ValueError naming
    `flag` and the file and what it holds instead (a PNG, an HTML page, a damaged zip)."""
    where = f"{flag}={path}" if flag else str(path)
    if not Path(path).is_file():
        raise FileNotFoundError(f"{where}: no such file." + shipped_hint(path))
    kind = describe_magic(path)
    if kind != "a zip archive":
        like = f"it starts like {kind}" if kind else "it does not start like a zip archive"
        raise ValueError(f"{where}: not an .npz file ({like}); check the path, or make or "
                         "download the file again")  # fmt: skip
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        if "allow_pickle" in str(e):
            raise ValueError(f"{where}: holds pickled Python objects, which are never loaded "
                             "(they can run code); save plain arrays") from e  # fmt: skip
        raise ValueError(f"{where}: a damaged .npz file ({type(e).__name__}: {e}); make or "
                         "download it again." + shipped_hint(path)) from e  # fmt: skip
