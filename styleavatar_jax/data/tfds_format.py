"""A tensorflow-datasets copy of an EG3D dataset: array_record files, no TensorFlow.

    eg3d_to_tfds(EG3D folder/zip, data_dir) -> data_dir/eg3d_images/1.0.0/
    open_tfds(that directory) -> ImageSource (same interface as open_eg3d)
    tfds_to_eg3d(that directory, folder) -> folder/dataset.json

Each record holds the encoded image bytes exactly as in the EG3D files (PNG or JPEG:
tfds stores bytes it is given without re-encoding, and Image features given numpy arrays
would need TensorFlow), label float32 [25], the metadata fields of source.py, the image's
EG3D path and its `index` (position in dataset.json). tfds writes records in the hash
order of their keys, so open_tfds scans the small fields once (images skipped) and
restores index order.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
import tensorflow_datasets as tfds

from styleavatar_jax.data import eg3d_format
from styleavatar_jax.data.source import (
    FLOAT_FIELDS,
    INT_FIELDS,
    LABEL_DIM,
    STR_FIELDS,
    ImageSource,
    image_info,
    normalize_meta,
)

DATASET_NAME = "eg3d_images"
DATASET_VERSION = "1.0.0"
_SCAN_CHUNK = 256  # records per read while scanning the small fields


def _features(resolution: int, encoding_format: str) -> tfds.features.FeaturesDict:
    scalars = {k: tfds.features.Scalar(dtype=np.int64) for k in INT_FIELDS + ("index",)}
    scalars |= {k: tfds.features.Scalar(dtype=np.float32) for k in FLOAT_FIELDS}
    texts = {k: tfds.features.Text() for k in STR_FIELDS + ("name",)}
    return tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(
                shape=(resolution, resolution, 3), encoding_format=encoding_format
            ),
            "label": tfds.features.Tensor(shape=(LABEL_DIM,), dtype=np.float32),
        }
        | scalars
        | texts
    )


with tfds.core.registered.skip_registration():  # no entry in tfds' global name registry

    class Eg3dImages(tfds.core.GeneratorBasedBuilder):
        """Builds the tfds copy of one ImageSource (images stay encoded as they are)."""

        name = DATASET_NAME
        VERSION = tfds.core.Version(DATASET_VERSION)
        RELEASE_NOTES = {DATASET_VERSION: "Images, EG3D labels, yaw/pitch, identity, prompts."}
        # tfds looks for a checksums file beside a builder's code, which for a builder
        # inside a package imports importlib_resources (not installed, not needed: we
        # download nothing). No code path: no checksums lookup.
        code_path = None

        def __init__(self, *, source: ImageSource, **kwargs):
            self._source = source
            super().__init__(**kwargs)

        def _info(self) -> tfds.core.DatasetInfo:
            fmt, _ = image_info(self._source.read_bytes(0), self._source.where(0))
            return tfds.core.DatasetInfo(
                builder=self,  # dataset_info_from_configs would need a package folder
                description=f"EG3D-format dataset converted from {self._source.path}",
                features=_features(self._source.resolution, fmt.lower()),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            src = self._source
            for i in range(len(src)):
                data = src.read_bytes(i)
                src[i]  # decodes and validates (RGB, size, not truncated); raises naming it
                meta = src.meta[i]
                yield (
                    i,
                    dict(image=data, label=src.labels[i], index=i, name=src.names[i])
                    | {k: meta[k] for k in INT_FIELDS + FLOAT_FIELDS + STR_FIELDS},
                )


def eg3d_to_tfds(src: str | os.PathLike, data_dir: str | os.PathLike) -> Path:
    """EG3D folder/zip -> tfds dataset in data_dir/eg3d_images/1.0.0 (returned).

    tfds builds in a temporary folder and renames it when complete; an existing dataset
    there is an error, not silently reused.
    """
    out = Path(data_dir) / DATASET_NAME / DATASET_VERSION
    if out.exists():
        raise FileExistsError(f"{out} already exists; remove it or choose another data_dir")
    with eg3d_format.open_eg3d(src) as source, tempfile.TemporaryDirectory() as downloads:
        builder = Eg3dImages(source=source, data_dir=str(data_dir), file_format="array_record")
        builder.download_and_prepare(download_dir=downloads)  # nothing is downloaded
    return out


def _text(value: bytes | str) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else value


def open_tfds(path: str | os.PathLike) -> ImageSource:
    """tfds dataset directory (holding dataset_info.json) -> ImageSource ordered by index."""
    path = Path(path)
    if not (path / "dataset_info.json").is_file():
        raise FileNotFoundError(f"{path / 'dataset_info.json'} not found: not a tfds dataset dir")
    builder = tfds.builder_from_directory(str(path))
    features = builder.info.features
    missing = sorted({"image", "label", "index", "name"} - set(features.keys()))
    if missing or "train" not in builder.info.splits:
        raise ValueError(f"{path}: not an eg3d_images dataset (no train split or no {missing})")
    res, _, channels = features["image"].shape
    if channels != 3 or res is None:
        raise ValueError(f"{path}: image feature is {features['image'].shape}, expected (R, R, 3)")
    skip = {"image": tfds.decode.SkipDecoding()}
    records = builder.as_data_source(split="train", decoders=skip)
    n = len(records)
    if n == 0:
        raise ValueError(f"{path}: the dataset is empty")
    fields = []
    for start in range(0, n, _SCAN_CHUNK):
        rows = records.__getitems__(list(range(start, min(n, start + _SCAN_CHUNK))))
        fields += [{k: v for k, v in r.items() if k != "image"} for r in rows]
    index = np.array([f["index"] for f in fields])
    if sorted(index.tolist()) != list(range(n)):
        raise ValueError(f"{path}: record indices are not a permutation of 0..{n - 1}")
    order = np.argsort(index)  # position in index order -> record number
    fields = [fields[r] for r in order]
    names = tuple(_text(f["name"]) for f in fields)
    labels = np.stack([np.asarray(f["label"], np.float32) for f in fields])
    meta = tuple(
        normalize_meta(
            {k: f[k] for k in INT_FIELDS + FLOAT_FIELDS} | {k: _text(f[k]) for k in STR_FIELDS},
            (0.0, 0.0),  # unused: yaw and pitch are stored
            f"{path}: record of index {i} ({names[i]})",
        )
        for i, f in enumerate(fields)
    )
    read = lambda i: records[int(order[i])]["image"]
    return ImageSource(str(path), names, labels, meta, int(res), read)


def tfds_to_eg3d(path: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """tfds dataset directory -> EG3D folder with the stored paths, image bytes, labels and
    full metadata (resumable: EG3DWriter) -> dest/dataset.json."""
    source = open_tfds(path)
    writer = eg3d_format.EG3DWriter(dest)
    for i in range(len(source)):
        if not writer.done(i):
            data = source.read_bytes(i)
            writer.write_encoded(i, data, source.labels[i], source.meta[i], source.names[i])
    return writer.finish()
