"""Which format a dataset path holds: an EG3D folder or zip, or a tfds directory."""

from __future__ import annotations

import os

from styleavatar_jax.data import eg3d_format
from styleavatar_jax.data.source import ImageSource
from styleavatar_jax.files import as_path, is_local


def open_dataset(path: str | os.PathLike) -> ImageSource:
    """An EG3D folder (dataset.json), EG3D zip or tfds directory (dataset_info.json) -> source."""
    path = as_path(path)
    if not path.exists():
        raise FileNotFoundError(f"dataset {path} does not exist")
    if path.is_file() and path.suffix.lower() == ".zip" or (path / "dataset.json").is_file():
        return eg3d_format.open_eg3d(path)
    if (path / "dataset_info.json").is_file():
        if not is_local(path):
            raise ValueError(
                f"{path}: a tfds dataset in an object store cannot be read here (array_record "
                "opens local files only without TensorFlow); copy the directory to local "
                "disk, or make it an EG3D folder (styleavatar-jax convert-dataset), which "
                "(or its zip) is read from the store"
            )
        # Imported here: tfds costs ~1 s and 230 MB to import, which an EG3D folder does
        # not need.
        from styleavatar_jax.data import tfds_format

        return tfds_format.open_tfds(path)
    nested = sorted(p.parent for p in path.glob("*/*/dataset_info.json"))
    hint = f"; did you mean the tfds version directory {nested[0]}?" if nested else ""
    raise ValueError(
        f"{path} is not a dataset: expected an EG3D folder with dataset.json, an EG3D .zip, "
        f"or a tfds directory with dataset_info.json{hint}"
    )
