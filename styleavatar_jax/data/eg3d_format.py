"""EG3D's dataset format: a folder or .zip with dataset.json and PNG/JPEG images.

Layout, as EG3D's dataset_tool.py writes it and training/dataset.py reads it:

    ROOT/dataset.json            {"labels": [[relpath, [25 floats]], ...],
                                  "meta": {relpath: {identity, seed, yaw, pitch, prompt,
                                                     negative_prompt, style, view}}}
    ROOT/00000/img00000000.png   image i at f"{i // 1000:05d}/img{i:08d}.png"

EG3D reads only "labels"; "meta" is ours and optional (source.py lists its fields). The
reader takes the images dataset.json lists, in its order (source index = list position),
and ignores every other file, so guidance images may live beside them (guidance/...).
EG3D's own ImageFolderDataset lists *every* image file under ROOT and needs a label for
each: for EG3D's train.py keep guidance images outside ROOT or the zip.
"""

from __future__ import annotations

import json
import os
import threading
import zipfile
import zlib
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from styleavatar_jax.data.source import (
    FLOAT_FIELDS,
    INT_FIELDS,
    ImageSource,
    angles_degrees,
    check_label,
    encode_rgb,
    image_info,
    mirror_labels,
    normalize_meta,
)
from styleavatar_jax.files import (
    as_path,
    describe_magic,
    file_size,
    is_local,
    list_files,
    remove_tree,
    write_atomic,
)

DATASET_JSON = "dataset.json"
EXTENSIONS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}
_PARTIAL = ".partial"  # writer's per-image records until finish(); hidden from EG3D


def image_name(index: int, ext: str = ".png") -> str:
    """EG3D dataset_tool's name for image `index`: '00001/img00001234.png' for 1234."""
    return f"{index // 1000:05d}/img{index:08d}{ext}"


def _check_name(name: Any, where: str) -> str:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}: image path must be a non-empty string, got {name!r}")
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or "\\" in name:
        raise ValueError(f"{where}: image path {name!r} must be relative, '/'-separated, no '..'")
    if p.suffix.lower() not in EXTENSIONS:
        raise ValueError(f"{where}: image path {name!r} must end in one of {sorted(EXTENSIONS)}")
    return name


def parse_dataset_json(data: bytes, where: str) -> tuple[list[str], np.ndarray, list[dict]]:
    """dataset.json bytes -> names [N], labels float32 [N, 25], raw meta [N] (validated).

    `where` names the file in every error, with the entry's position and path.
    """
    try:
        doc = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{where}: malformed JSON ({e})") from None
    if not isinstance(doc, dict) or "labels" not in doc:
        raise ValueError(f'{where}: expected an object with a "labels" list')
    entries = doc["labels"]
    if entries is None:
        raise ValueError(f'{where}: "labels" is null; every image needs a 25-number camera label')
    if not isinstance(entries, list):
        raise ValueError(f'{where}: "labels" must be a list of [path, label], got {entries!r:.60}')
    if not entries:
        raise ValueError(f"{where}: the dataset is empty (no labels)")
    names, labels = [], []
    for i, entry in enumerate(entries):
        at = f"{where}: labels[{i}]"
        if not isinstance(entry, list) or len(entry) != 2:
            raise ValueError(f"{at}: expected [path, label], got {entry!r:.80}")
        name = _check_name(entry[0], at)
        labels.append(check_label(entry[1], f"{at} ({name})"))
        names.append(name)
    dup = sorted(n for n, count in Counter(names).items() if count > 1)
    if dup:
        raise ValueError(f"{where}: images listed more than once: {dup[:5]}")
    raw_meta = doc.get("meta") or {}
    if not isinstance(raw_meta, dict):
        raise ValueError(f'{where}: "meta" must be an object {{path: {{...}}}}')
    stray = sorted(set(raw_meta) - set(names))
    if stray:
        raise ValueError(f'{where}: "meta" has entries for unlisted images {stray[:5]}')
    metas = []
    for i, name in enumerate(names):
        m = raw_meta.get(name, {})
        if not isinstance(m, dict):
            raise ValueError(f'{where}: "meta"[{name!r}] must be an object, got {m!r:.60}')
        normalize_meta(m, (0.0, 0.0), f"{where}: meta of labels[{i}] ({name})")  # validate
        metas.append(m)
    return names, np.stack(labels), metas


def open_eg3d(path: str | os.PathLike) -> ImageSource:
    """EG3D dataset folder or .zip -> ImageSource (see source.py); validates dataset.json
    and that every listed image exists; images are checked (RGB, size) when decoded. The
    path may be a URL (gs://bucket/ds, gs://bucket/ds.zip): a zip is read by ranges."""
    path = as_path(path)
    if path.is_dir():
        json_path = path / DATASET_JSON
        if not json_path.is_file():
            raise FileNotFoundError(f"{json_path} not found: not an EG3D dataset folder")
        names, labels, metas = parse_dataset_json(json_path.read_bytes(), str(json_path))
        present = _present(path, names)
        for i, name in enumerate(names):
            if name not in present:
                raise FileNotFoundError(f"{json_path}: labels[{i}] lists {name}, which is missing")
        read = lambda i: (path / names[i]).read_bytes()
        close = lambda: None
    elif path.is_file():
        archive = _open_zip(path)
        lock = threading.Lock()  # one shared file handle: reads must not interleave
        listed = set(archive.namelist())
        where = f"{path}:{DATASET_JSON}"
        if DATASET_JSON not in listed:
            archive.close()
            raise FileNotFoundError(f"{where} not found: the zip has no dataset.json at its root")
        try:
            names, labels, metas = parse_dataset_json(archive.read(DATASET_JSON), where)
            for i, name in enumerate(names):
                if name not in listed:
                    raise FileNotFoundError(f"{where}: labels[{i}] lists {name}, not in the zip")
        except BaseException:
            archive.close()
            raise

        def read(i: int) -> bytes:
            with lock:
                try:
                    return archive.read(names[i])
                except (zipfile.BadZipFile, zlib.error, EOFError) as e:
                    raise ValueError(f"{path}: {names[i]} in the zip is damaged ({e}); "
                                     "re-create the zip or download it again") from e  # fmt: skip

        close = archive.close
    else:
        raise FileNotFoundError(f"EG3D dataset {path} does not exist")
    try:
        _, resolution = image_info(read(0), f"{path}: labels[0] ({names[0]})")
        yaw, pitch = angles_degrees(labels)
        meta = tuple(
            normalize_meta(m, (yaw[i], pitch[i]), f"{path}: meta of {names[i]}")
            for i, m in enumerate(metas)
        )
    except BaseException:
        close()
        raise
    return ImageSource(str(path), tuple(names), labels, meta, resolution, read, close)


def _present(root, names: Sequence[str]) -> set[str]:
    """Which of `names` (relative POSIX paths) are files under root: one listing for a store
    (a request per name would be thousands of round trips), a stat per name on disk."""
    if is_local(root):
        return {n for n in names if (root / n).is_file()}
    return set(names) & list_files(root)


def _json_meta(meta: Mapping[str, Any] | None, where: str) -> dict:
    """User metadata -> JSON-ready dict of the keys given (numpy scalars to Python)."""
    meta = dict(meta or {})
    normalize_meta(meta, (0.0, 0.0), where)  # validates keys and types
    return {
        k: int(v) if k in INT_FIELDS else float(np.float32(v)) if k in FLOAT_FIELDS else v
        for k, v in meta.items()
    }


class EG3DWriter:
    """Writes an EG3D dataset folder one image at a time, resumably.

    Each `write` renames a complete image into place, then a small record (name, label,
    meta) into ROOT/.partial/; `finish` writes dataset.json (atomically) from the records
    and removes .partial. Records of an existing dataset.json and of an interrupted run
    are loaded on construction, so `done(i)` says which images to skip when resuming.
    ROOT may be a URL (gs://bucket/ds): each image and record is then one uploaded object.
    """

    def __init__(self, root: str | os.PathLike, *, image_format: str = "png", quality: int = 95):
        """image_format 'png' or 'jpeg' for `write` without a name; quality: JPEG quality."""
        self.root = as_path(root)
        self.ext = {"PNG": ".png", "JPEG": ".jpg"}.get(image_format.upper())
        if self.ext is None:
            raise ValueError(f"image_format must be 'png' or 'jpeg', got {image_format!r}")
        self.quality = quality
        self._records: dict[int, dict] = {}
        json_path = self.root / DATASET_JSON
        if json_path.is_file():
            names, labels, metas = parse_dataset_json(json_path.read_bytes(), str(json_path))
            for i, (name, label, meta) in enumerate(zip(names, labels, metas, strict=True)):
                self._records[i] = dict(name=name, label=label.tolist(), meta=meta)
        for rec_path in sorted((self.root / _PARTIAL).glob("*.json")):
            rec = json.loads(rec_path.read_bytes())
            self._records[int(rec_path.stem)] = rec
        # An image deleted since its record was written gets written again.
        present = _present(self.root, [r["name"] for r in self._records.values()])
        self._records = {i: r for i, r in self._records.items() if r["name"] in present}
        self._index_of = {r["name"]: i for i, r in self._records.items()}
        self._resolution = None
        if self._records:
            first = min(self._records)
            name = self._records[first]["name"]
            self._resolution = image_info((self.root / name).read_bytes(), str(self.root / name))[1]

    def done(self, index: int) -> bool:
        """Whether image `index` is written (in this or an earlier run)."""
        return index in self._records

    @property
    def done_indices(self) -> list[int]:
        return sorted(self._records)

    def name(self, index: int) -> str:
        return image_name(index, self.ext)

    def write(
        self,
        index: int,
        image: np.ndarray,
        label: np.ndarray,
        meta: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> str:
        """Encode uint8 [H, W, 3] image `index` (format from `name`'s extension, else the
        writer's) and record its label [25] and meta -> its relative path."""
        name = name or self.name(index)
        fmt = EXTENSIONS.get(PurePosixPath(name).suffix.lower(), "PNG")
        return self.write_encoded(index, encode_rgb(image, fmt, self.quality), label, meta, name)

    def write_encoded(
        self,
        index: int,
        data: bytes,
        label: np.ndarray,
        meta: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> str:
        """Write already-encoded PNG/JPEG bytes as they are (bit-exact) -> relative path."""
        name = _check_name(name or self.name(index), f"{self.root}: image {index}")
        where = f"{self.root}: image {index} ({name})"
        if index < 0:
            raise ValueError(f"{where}: index must be >= 0")
        fmt, side = image_info(data, where)
        if EXTENSIONS[PurePosixPath(name).suffix.lower()] != fmt:
            raise ValueError(f"{where}: data is {fmt} but the file name says otherwise")
        if self._resolution is not None and side != self._resolution:
            raise ValueError(
                f"{where}: image is {side}x{side}, expected {self._resolution}x{self._resolution} "
                "like the images already written"
            )
        if self._index_of.get(name, index) != index:
            raise ValueError(f"{where}: path already used by image {self._index_of[name]}")
        label = check_label(list(np.asarray(label, np.float64).reshape(-1)), where)
        record = dict(name=name, label=label.tolist(), meta=_json_meta(meta, where))
        write_atomic(self.root / name, lambda f: f.write(data))
        payload = json.dumps(record).encode()
        write_atomic(self.root / _PARTIAL / f"{index:08d}.json", lambda f: f.write(payload))
        self._records[index] = record
        self._index_of[name] = index
        self._resolution = side
        return name

    def finish(self) -> Path:
        """Write ROOT/dataset.json (images in index order) and drop the partial records."""
        if not self._records:
            raise ValueError(f"{self.root}: no images written; nothing to finish")
        recs = [self._records[i] for i in sorted(self._records)]
        doc: dict[str, Any] = {"labels": [[r["name"], r["label"]] for r in recs]}
        if any(r["meta"] for r in recs):
            doc["meta"] = {r["name"]: r["meta"] for r in recs if r["meta"]}
        payload = json.dumps(doc).encode()
        path = write_atomic(self.root / DATASET_JSON, lambda f: f.write(payload))
        remove_tree(self.root / _PARTIAL)
        return path


def mirrored_name(name: str) -> str:
    """EG3D mirror_dataset.py's name for the flipped copy: 'a/img1.png' -> 'a/img1_mirror.png'.

    EG3D splits at the first '.' (wrong for dotted folders); splitting at the extension
    gives the same name for every dataset_tool name.
    """
    stem, ext = os.path.splitext(name)
    return f"{stem}_mirror{ext}"


def write_mirrored(
    src: str | os.PathLike, dest: str | os.PathLike | None = None, *, quality: int = 95
) -> Path:
    """Add a horizontally flipped copy of each image, as EG3D's dataset_preprocessing/
    mirror_dataset.py: name `mirrored_name`, label `source.mirror_labels`, appended after
    the originals in dataset.json; meta yaw negated. Images whose name holds '_mirror' or
    whose mirror is already listed are skipped, so reruns add nothing.

    dest None: in place (src must be a folder); else originals are copied there byte for
    byte. Resumable (EG3DWriter). -> dest/dataset.json.
    """
    dest = Path(src if dest is None else dest)
    with open_eg3d(src) as source:
        if dest == Path(src) and not Path(src).is_dir():
            raise ValueError(f"{src} is a zip: give a destination folder for the mirrored set")
        writer = EG3DWriter(dest, quality=quality)
        _, _, raw_meta = parse_dataset_json(_dataset_json_bytes(src), str(src))
        listed = set(source.names)
        todo = [
            i
            for i, n in enumerate(source.names)
            if "_mirror" not in n and mirrored_name(n) not in listed
        ]
        flipped_labels = mirror_labels(source.labels[todo])
        for i in range(len(source)):
            if not writer.done(i):
                writer.write_encoded(
                    i, source.read_bytes(i), source.labels[i], raw_meta[i], source.names[i]
                )
        for k, i in enumerate(todo):
            if writer.done(len(source) + k):
                continue
            meta = dict(raw_meta[i])
            meta["yaw"] = -source.meta[i]["yaw"]  # from the label when meta had none
            meta.setdefault("pitch", source.meta[i]["pitch"])
            image = source[i]["image"][:, ::-1]  # PIL ImageOps.mirror: left <-> right
            name = mirrored_name(source.names[i])
            writer.write(len(source) + k, image, flipped_labels[k], meta, name)
    return writer.finish()


def _open_zip(path: Path) -> zipfile.ZipFile:
    """A dataset .zip -> ZipFile; a damaged zip or another kind of file -> ValueError saying
    which (a zip cut short by a failed copy has lost its directory, at the end)."""
    try:
        return zipfile.ZipFile(path if is_local(path) else path.open("rb"))
    except zipfile.BadZipFile as e:
        kind = describe_magic(path)
        if kind == "a zip archive":
            raise ValueError(
                f"{path}: the zip is damaged or truncated (zipfile: {e}; {file_size(path)} "
                "bytes); re-create it or download it again"
            ) from e
        like = f"it starts like {kind}" if kind else f"zipfile: {e}"
        raise ValueError(
            f"{path}: not a zip file ({like}); expected an EG3D dataset folder or .zip"
        ) from e


def _dataset_json_bytes(path: str | os.PathLike) -> bytes:
    """The dataset.json of an EG3D folder or zip (already validated by open_eg3d)."""
    if as_path(path).is_dir():
        return (as_path(path) / DATASET_JSON).read_bytes()
    with _open_zip(as_path(path)) as archive:
        return archive.read(DATASET_JSON)
