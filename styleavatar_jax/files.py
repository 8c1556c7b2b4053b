"""Paths, and atomic file output: write beside the target, then rename, so no reader sees half
a file. And the input side: what a file's first bytes say it is, and an .npz reader that says
so when a path holds something else.

Paths: `as_path` gives a path object with pathlib's API for local paths (pathlib.Path) and
object-store URLs (etils.epath.Path: gs://bucket/..., and whatever else epath reads, s3://
through fsspec); code on both uses that shared API, and branches on `is_local` where a store
needs another way (one listing instead of a stat per file, no renames). On a store,
"atomic" is the store's own guarantee: an object becomes visible only when its upload is
complete, so a file is written locally and uploaded in one piece (there is no rename).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np
from etils import epath


def is_local(path: str | os.PathLike) -> bool:
    """False for a URL (gs://bucket/x, s3://...), True for a path on this machine."""
    return "://" not in os.fspath(path)


def store_root(url: str | os.PathLike) -> str:
    """'gs://bucket/a/b' -> 'gs://bucket' (the bucket a URL lives in)."""
    scheme, rest = os.fspath(url).split("://", 1)
    return f"{scheme}://{rest.split('/', 1)[0]}"


def as_path(path: str | os.PathLike) -> Path | epath.Path:
    """A path or URL -> a path object: a local path made absolute, as pathlib.Path (epath's
    local paths refuse recursive globs and stat differently, which callers of a local run
    directory rely on), a URL as epath.Path (the same pathlib API, through gcsfs & co)."""
    if is_local(path):
        return Path(os.path.abspath(os.fspath(path)))
    return epath.Path(os.fspath(path))


def file_size(path: str | os.PathLike) -> int:
    """Bytes in a file, local or in a store."""
    return os.path.getsize(path) if is_local(path) else as_path(path).stat().length


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path in path's folder (for writers that take a file name, such as
    ffmpeg); when the block succeeds it is renamed to `path`, when it fails it is removed.
    For a URL the temporary file is local and is uploaded in one piece when the block ends."""
    if not is_local(path):
        with tempfile.TemporaryDirectory(prefix="styleavatar-upload-") as tmp_dir:
            tmp = Path(tmp_dir) / as_path(path).name
            yield tmp
            upload(tmp, path)
        return
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


def upload(local: str | os.PathLike, url: str | os.PathLike) -> epath.Path:
    """Copy a local file to `url` (a store object appears whole or not at all)."""
    dest = as_path(url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(local, "rb") as src, dest.open("wb") as out:
        shutil.copyfileobj(src, out, 1 << 22)
    return dest


def list_files(root: str | os.PathLike) -> set[str]:
    """Every file under root as a POSIX path relative to it: a walk on disk; in a store one
    listing (a request per 1000 objects, where a stat per name is a request each)."""
    if is_local(root):
        root = Path(root).absolute()
        return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    import fsspec  # epath's backend for store URLs when TensorFlow is absent

    fs, base = fsspec.core.url_to_fs(os.fspath(root))
    return {f[len(base) :].lstrip("/") for f in fs.find(base)}


def remove_tree(path: str | os.PathLike) -> None:
    """Remove a folder and what it holds, if it exists (a URL: every object under it)."""
    if is_local(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        as_path(path).rmtree(missing_ok=True)


def write_atomic(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call write(f) on a temporary file in path's folder, then rename it to path (a URL:
    upload it there)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        write(f)
    return Path(path) if is_local(path) else as_path(path)


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
    with as_path(path).open("rb") as f:
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
    if not is_local(path):
        return ""
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
    if not as_path(path).is_file():
        raise FileNotFoundError(f"{where}: no such file." + shipped_hint(path))
    kind = describe_magic(path)
    if kind != "a zip archive":
        like = f"it starts like {kind}" if kind else "it does not start like a zip archive"
        raise ValueError(f"{where}: not an .npz file ({like}); check the path, or make or "
                         "download the file again")  # fmt: skip
    try:
        with as_path(path).open("rb") as stream, np.load(stream, allow_pickle=False) as f:
            return {k: f[k] for k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        if "allow_pickle" in str(e):
            raise ValueError(f"{where}: holds pickled Python objects, which are never loaded "
                             "(they can run code); save plain arrays") from e  # fmt: skip
        raise ValueError(f"{where}: a damaged .npz file ({type(e).__name__}: {e}); make or "
                         "download it again." + shipped_hint(path)) from e  # fmt: skip
