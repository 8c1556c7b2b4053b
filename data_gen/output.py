"""What a data_gen run leaves in its folder, and what a restart reads back from it.

    DIR/datagen.json                    the settings that define the images
    DIR/.rejected/IIIIIIII-A.json       one view-filter rejection (image I, attempt A)
    DIR/rejected.jsonl                  every rejection, in (index, attempt) order
    DIR/manifest.json                   counts, and the indices left out (gaps)
    + the EG3D folder of EG3DWriter: dataset.json, images, .partial/ records, guidance/

Every file is written whole under a temporary name and then renamed (styleavatar_jax.files),
so a run killed at any moment leaves whole files only, and any number of writers (the Ray
actors) can share the folder. `finish` rebuilds dataset.json, rejected.jsonl and the manifest
from what is on disk, so it may run again after any interruption.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection
from pathlib import Path

from styleavatar_jax.data.eg3d_format import EG3DWriter
from styleavatar_jax.files import is_local, remove_tree, write_atomic

SETTINGS = "datagen.json"
REJECTED = "rejected.jsonl"
MANIFEST = "manifest.json"
_REJECTIONS = ".rejected"  # one file per rejected attempt until finish()


def claim(out: Path, settings: str) -> None:
    """Make `out` a data_gen folder for `settings` (Job.settings_json): a new folder gets them
    in datagen.json; an existing one must hold the same (else ValueError)."""
    path = out / SETTINGS
    if path.exists() and path.read_text() != settings:
        raise ValueError(f"{out} holds a data_gen set made with other settings ({path}); "
                         "use another --out, or the same settings to resume")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: f.write(settings.encode()))


def read_rejections(out: Path) -> dict[tuple[int, int], dict]:
    """rejected.jsonl and the .rejected/ files -> {(index, attempt): record}. A line cut off
    by an interrupt (sets written before .rejected/ existed) is ignored: that attempt is redone."""
    records = {}
    path = out / REJECTED
    lines = path.read_text().splitlines() if path.is_file() else []
    for line in lines:
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        records[rec["index"], rec["attempt"]] = rec
    for part in sorted((out / _REJECTIONS).glob("*.json")):
        rec = json.loads(part.read_bytes())
        records[rec["index"], rec["attempt"]] = rec
    return records


def record_rejection(out: Path, record: dict, recorded: Collection[tuple[int, int]]) -> bool:
    """Write one rejection (keys index, attempt, ...) unless it is in `recorded` (what
    read_rejections returned) or on disk already -> whether it was written."""
    key = record["index"], record["attempt"]
    path = out / _REJECTIONS / f"{key[0]:08d}-{key[1]}.json"
    if key in recorded or path.exists():
        return False
    payload = json.dumps(record).encode()
    write_atomic(path, lambda f: f.write(payload))
    return True


@dataclasses.dataclass(frozen=True)
class Done:
    """What a folder holds: images written, images given up (gaps), rejections recorded."""

    written: frozenset[int]
    given_up: frozenset[int]  # rejected max_attempts times
    rejections: int

    @property
    def finished(self) -> frozenset[int]:
        return self.written | self.given_up


def done(out: Path, max_attempts: int) -> Done:
    """What `out` holds (nothing for a new folder)."""
    records = read_rejections(out)
    rejected = {}
    for index, attempt in records:
        rejected[index] = max(rejected.get(index, 0), attempt + 1)
    given_up = frozenset(i for i, n in rejected.items() if n >= max_attempts)
    return Done(frozenset(EG3DWriter(out).done_indices), given_up, len(records))


def finish(out: Path, num_images: int) -> dict:
    """dataset.json, rejected.jsonl and manifest.json from what is on disk (atomically);
    drops the per-image records and the temporary files of killed writers -> the manifest."""
    writer = EG3DWriter(out)
    if not writer.done_indices:
        raise RuntimeError(f"{out}: every image was rejected by the view filter; see "
                           f"{out / _REJECTIONS} or {out / REJECTED}")  # fmt: skip
    records = read_rejections(out)
    if records:
        lines = "".join(json.dumps(records[key]) + "\n" for key in sorted(records))
        write_atomic(out / REJECTED, lambda f: f.write(lines.encode()))
    remove_tree(out / _REJECTIONS)
    writer.finish()
    if is_local(out):  # a store has no temporary files: uploads land whole
        for stale in Path(out).rglob(".*.tmp"):  # styleavatar_jax.files.atomic_path's names
            stale.unlink(missing_ok=True)
    manifest = dict(num_images=num_images, written=len(writer.done_indices),
                    gaps=[i for i in range(num_images) if not writer.done(i)],
                    rejected_attempts=len(records))  # fmt: skip
    payload = (json.dumps(manifest, indent=1) + "\n").encode()
    write_atomic(out / MANIFEST, lambda f: f.write(payload))
    return manifest
