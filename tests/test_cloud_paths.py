"""Cloud paths: a run directory and a dataset in a GCS bucket (a local emulator on
127.0.0.1: gcp-storage-emulator, reached by gcsfs through STORAGE_EMULATOR_HOST and by
tensorstore, under orbax, through TENSORSTORE_GCS_HTTP_URL). Training there, killed and
resumed, equals an uninterrupted local run bit for bit."""

import gc
import io
import logging
import os
import signal
import socket
import zipfile

import jax
import numpy as np
import pytest
from etils import epath
from jax.sharding import Mesh

from styleavatar_jax import checkpoint, files
from styleavatar_jax.data.formats import open_dataset
from styleavatar_jax.train import loop
from tests import test_data_gen as single
from tests.test_train_loop import _cfg, _write_dataset

BUCKET = "styleavatar-test"
models, head = single.models, single.head  # its fixtures: tiny models, a small mesh head


@pytest.fixture(scope="module", autouse=True)
def _fast(fast_compile):
    """Compile-bound module: see conftest.fast_compile."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def gcs():
    """An in-memory GCS emulator holding one bucket; the environment points gcsfs,
    google-cloud-storage and tensorstore at it for the module."""
    from gcp_storage_emulator.server import create_server

    _send_generations()
    # Expected misses (a checkpoint step being created) and gcsfs's note that the emulator
    # has no credentials to ask a bucket's type with: not failures.
    logging.getLogger("gcp_storage_emulator").setLevel(logging.CRITICAL)
    logging.getLogger("gcsfs").setLevel(logging.ERROR)
    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket=BUCKET)
    server.start()
    url = f"http://127.0.0.1:{port}"
    env = {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
           "GOOGLE_CLOUD_PROJECT": "test"}  # fmt: skip
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield f"gs://{BUCKET}"
    finally:
        gc.collect()  # TensorBoard's GCS writers upload once more when collected: not after stop
        server.stop()
        for k, v in saved.items():
            os.environ.pop(k) if v is None else os.environ.__setitem__(k, v)


def _send_generations() -> None:
    """Make the emulator's media downloads carry `x-goog-generation`, as GCS's do: tensorstore
    reads an object's generation from it (OCDBT's manifest), and gcp-storage-emulator
    2026.7.19 leaves it out ("Malformed StorageGeneration" without it)."""
    from gcp_storage_emulator import server
    from gcp_storage_emulator.handlers import objects

    original = getattr(objects.download, "original", objects.download)

    def download(request, response, storage, *args, **kwargs):
        try:
            obj = storage.get_file_obj(request.params["bucket_name"], request.params["object_id"])
            response["x-goog-generation"] = str(obj["generation"])
        except Exception:  # a missing object: download answers 404 itself
            pass
        original(request, response, storage, *args, **kwargs)

    download.original = original
    objects.download = download  # objects.get(alt=media) calls it by this name
    for _, methods in server.HANDLERS:
        for method, handler in methods.items():
            if getattr(handler, "original", handler) is original:
                methods[method] = download


def _upload_tree(local, url):
    for p in sorted(local.rglob("*")):
        if p.is_file():
            files.upload(p, f"{url}/{p.relative_to(local).as_posix()}")


def _mesh(n):
    return Mesh(np.array(jax.devices()[:n]), ("data",))


def test_store_paths(gcs):
    target = f"{gcs}/a/b.npz"
    files.write_npz(target, x=np.arange(3))
    assert files.describe_magic(target) == "a zip archive"
    np.testing.assert_array_equal(files.load_npz(target)["x"], np.arange(3))
    with pytest.raises(FileNotFoundError, match="no such file"):
        files.load_npz(f"{gcs}/a/none.npz")


def test_train_in_bucket_kill_resume_bit_exact(gcs, tmp_path):
    local = _write_dataset(tmp_path / "ds").parent
    _upload_tree(local, f"{gcs}/ds")
    full = loop.train(_cfg(str(local)), tmp_path / "full", mesh=_mesh(2), progress=False)

    def kill_at_2(step, state, metrics):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    cfg = _cfg(f"{gcs}/ds", "--config.run.snapshot_kimg=0.008")
    run = f"{gcs}/runs/r1"
    first = loop.train(cfg, run, mesh=_mesh(2), progress=False, callbacks=[kill_at_2])
    resumed = loop.train(cfg, run, mesh=_mesh(2), progress=False, resume=True)
    assert (first.status, first.step, resumed.status, resumed.step) == (
        "interrupted", 2, "finished", 4)  # fmt: skip
    for a, b in zip(jax.tree.leaves(jax.device_get(full.state)),
                    jax.tree.leaves(jax.device_get(resumed.state)), strict=True):  # fmt: skip
        np.testing.assert_array_equal(a, b)
    root = epath.Path(run)
    assert checkpoint.list_steps(run) == [2, 4]
    assert (root / "config.json").is_file() and list((root / "tb").iterdir())
    assert [p.name for p in (root / "snapshots").iterdir()]
    g = checkpoint.load_networks(run, ["G_ema"])["G_ema"]
    for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(resumed.state.g_ema), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_datasets_in_a_bucket(gcs, tmp_path):
    """An EG3D folder and zip in the bucket read as on disk; a tfds directory there and a
    missing bucket are errors that say what to do."""
    local = _write_dataset(tmp_path / "ds", n=4).parent
    _upload_tree(local, f"{gcs}/d/folder")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted(local.rglob("*")):
            if p.is_file():
                z.write(p, p.relative_to(local).as_posix())
    (epath.Path(gcs) / "d" / "ds.zip").write_bytes(buf.getvalue())
    ref = open_dataset(local)
    for url in (f"{gcs}/d/folder", f"{gcs}/d/ds.zip"):
        src = open_dataset(url)
        assert src.names == ref.names and src.resolution == ref.resolution
        np.testing.assert_array_equal(src.labels, ref.labels)
        assert all(src.read_bytes(i) == ref.read_bytes(i) for i in range(len(ref)))
        src.close()
    (epath.Path(gcs) / "d" / "tfds" / "dataset_info.json").write_text("{}")
    with pytest.raises(ValueError, match="tfds dataset in an object store"):
        open_dataset(f"{gcs}/d/tfds")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_dataset("gs://no-such-bucket/ds")


def test_writer_in_a_bucket_resumes(gcs, tmp_path):
    """EG3DWriter into the bucket: an interrupted writer's images are found by the next one,
    and finish() leaves dataset.json and no partial records."""
    from styleavatar_jax.data.eg3d_format import EG3DWriter

    url = f"{gcs}/w/ds"
    img = np.zeros((8, 8, 3), np.uint8)
    label = np.asarray(open_dataset(_write_dataset(tmp_path / "ds", n=2).parent).labels[0])
    first = EG3DWriter(url)
    first.write(0, img, label)
    again = EG3DWriter(url)
    assert again.done_indices == [0]
    again.write(1, img + 1, label)
    again.finish()
    root = epath.Path(url)
    assert not (root / ".partial").exists()
    src = open_dataset(url)
    assert src.names == ("00000/img00000000.png", "00000/img00000001.png")
    np.testing.assert_array_equal(src.labels, np.stack([label, label]))


def test_store_output_checks(gcs, cli_error):
    """A bucket that does not answer is named before any work; a folder flag given a file
    in the bucket, too."""
    argv = ["train", "--config", "configs/tiny.py", "--config.data.path=unused"]
    err = cli_error([*argv, "--workdir", "gs://no-such-bucket/run"])
    assert "--workdir=gs://no-such-bucket/run: the store does not answer" in err
    files.write_npz(f"{gcs}/file.npz", x=np.zeros(1))
    err = cli_error([*argv, "--workdir", f"{gcs}/file.npz"])
    assert f"--workdir={gcs}/file.npz: exists and is not a folder" in err


def test_data_gen_into_a_bucket(gcs, models, head, tmp_path):
    """data_gen's output folder in the bucket: 2 images, then resumed to 4, equal to a local
    run of 4 byte for byte, with dataset.json and the manifest."""
    url = f"{gcs}/gen/ds"
    single._run(models, head, tmp_path / "local", ("pose",), 4)
    first, _ = single._run(models, head, url, ("pose",), 2)
    second, _ = single._run(models, head, url, ("pose",), 4)
    assert (first.generated, second.generated, second.skipped) == (2, 2, 2)
    local = single._pngs(tmp_path / "local")
    root = epath.Path(url)
    assert {k: (root / k).read_bytes() for k in local} == local
    assert (root / "manifest.json").is_file() and not (root / ".partial").exists()
    assert open_dataset(url).names == tuple(sorted(local))
