"""EG3D folder/zip and tfds formats: bit-exact round trips, resumable writer, bad inputs,
EG3D's mirror rule."""

import io
import json
import zipfile

import numpy as np
import PIL.Image
import pytest

from styleavatar_jax import cameras
from styleavatar_jax.data import eg3d_format, tfds_format
from styleavatar_jax.data.formats import open_dataset
from styleavatar_jax.data.source import mirror_labels

N, RES = 24, 16


def make_labels(n, seed=0):
    """Labels float32 [n, 25] of orbit cameras, and their yaw/pitch (degrees) [n]."""
    rng = np.random.default_rng(seed)
    yaw, pitch = rng.uniform(-150, 150, n), rng.uniform(-60, 60, n)
    pose = cameras.pose_from_angles(np.radians(yaw), np.radians(pitch), 2.7, (0, 0, 0.2))
    labels = np.asarray(cameras.make_label(pose, cameras.fov_to_intrinsics(18.837)), np.float32)
    return labels, yaw, pitch


def meta_of(i):
    """Metadata for odd images only: even ones test the defaults and label-derived angles."""
    if i % 2 == 0:
        return None
    return dict(identity=i // 4, seed=1000 + i, yaw=10.5 * i, pitch=-3.25, prompt=f"head {i}",
                negative_prompt="blurry", style="anime", view="front")  # fmt: skip


def write_dataset(root, n=N, res=RES, image_format="png"):
    """An EG3D folder of n random images -> (images uint8 [n, res, res, 3], labels, yaw)."""
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (n, res, res, 3), dtype=np.uint8)
    labels, yaw, _ = make_labels(n)
    writer = eg3d_format.EG3DWriter(root, image_format=image_format)
    for i in range(n):
        writer.write(i, images[i], labels[i], meta_of(i))
    writer.finish()
    return images, labels, yaw


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("eg3d")
    images, labels, yaw = write_dataset(root)
    # A guidance image (grayscale, other size) the reader must ignore.
    PIL.Image.new("L", (8, 8)).save(root / "guidance.png")
    return root, images, labels, yaw


@pytest.fixture(scope="module")
def tfds_dir(dataset, tmp_path_factory):
    return tfds_format.eg3d_to_tfds(dataset[0], tmp_path_factory.mktemp("tfds"))


def check_source(src, images, labels, yaw):
    """The source holds the images, labels and metadata written by write_dataset."""
    assert len(src) == N and src.resolution == RES
    assert src.names[7] == "00000/img00000007.png"
    np.testing.assert_array_equal(src.labels, labels)
    assert src.labels.dtype == np.float32
    for i in range(N):
        item = src[i]
        np.testing.assert_array_equal(item["image"], images[i])
        assert item["index"] == i and item["name"] == src.names[i]
    assert src.meta[5] == dict(identity=1, seed=1005, yaw=52.5, pitch=-3.25, prompt="head 5",
                               negative_prompt="blurry", style="anime", view="front")  # fmt: skip
    m = src.meta[4]
    assert (m["identity"], m["seed"], m["prompt"], m["view"]) == (-1, -1, "", "")
    # Without meta, yaw comes from the label: the yaw the camera was made with.
    np.testing.assert_allclose([src.meta[i]["yaw"] for i in range(0, N, 2)], yaw[::2], atol=1e-3)


def test_eg3d_round_trip(dataset):
    root, images, labels, yaw = dataset
    doc = json.loads((root / "dataset.json").read_text())
    assert doc["labels"][3][0] == "00000/img00000003.png" and len(doc["labels"][3][1]) == 25
    assert set(doc["meta"]) == {f"00000/img{i:08d}.png" for i in range(1, N, 2)}
    assert not (root / ".partial").exists()
    with eg3d_format.open_eg3d(root) as src:
        check_source(src, images, labels, yaw)


def test_eg3d_zip(dataset, tmp_path):
    root, images, labels, yaw = dataset
    path = tmp_path / "set.zip"
    with zipfile.ZipFile(path, "w") as z:
        for f in sorted(root.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(root).as_posix())
    with open_dataset(path) as src:
        check_source(src, images, labels, yaw)


def test_jpeg_and_any_relpath(tmp_path):
    images, labels, _ = write_dataset(tmp_path / "j", n=3, image_format="jpeg")
    src = eg3d_format.open_eg3d(tmp_path / "j")
    assert src.names[2] == "00000/img00000002.jpg"
    buf = io.BytesIO()
    PIL.Image.fromarray(images[2]).save(buf, format="JPEG", quality=95)
    np.testing.assert_array_equal(src[2]["image"], np.asarray(PIL.Image.open(buf)))
    # The reader takes whatever paths dataset.json lists.
    (tmp_path / "j/a/b").mkdir(parents=True)
    (tmp_path / "j/00000/img00000001.jpg").rename(tmp_path / "j/a/b/x.jpg")
    doc = json.loads((tmp_path / "j/dataset.json").read_text())
    doc["labels"][1][0] = "a/b/x.jpg"
    doc["meta"]["a/b/x.jpg"] = doc["meta"].pop("00000/img00000001.jpg")
    (tmp_path / "j/dataset.json").write_text(json.dumps(doc))
    assert eg3d_format.open_eg3d(tmp_path / "j").names[1] == "a/b/x.jpg"


def test_writer_resumes(tmp_path):
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (6, RES, RES, 3), dtype=np.uint8)
    labels, _, _ = make_labels(6)
    first = eg3d_format.EG3DWriter(tmp_path)
    for i in range(4):
        first.write(i, images[i], labels[i], meta_of(i))
    # Interrupted before finish(); image 4 got written but not its record.
    (tmp_path / "00000/img00000004.png").write_bytes(b"half")
    second = eg3d_format.EG3DWriter(tmp_path)
    assert second.done_indices == [0, 1, 2, 3] and not second.done(4)
    for i in range(4, 6):
        second.write(i, images[i], labels[i])
    second.finish()
    src = eg3d_format.open_eg3d(tmp_path)
    assert len(src) == 6 and src.meta[3]["seed"] == 1003
    np.testing.assert_array_equal(np.stack([src[i]["image"] for i in range(6)]), images)
    assert eg3d_format.EG3DWriter(tmp_path).done_indices == list(range(6))  # from dataset.json
    with pytest.raises(ValueError, match="image 6 .*8x8, expected 16x16"):
        second.write(6, images[0][:8, :8], labels[0])
    with pytest.raises(ValueError, match="unknown meta keys \\['promt'\\]"):
        second.write(6, images[0], labels[0], {"promt": "typo"})


def png(mode, size):
    buf = io.BytesIO()
    PIL.Image.new(mode, size).save(buf, format="PNG")
    return buf.getvalue()


BAD_IMAGES = {"grayscale": ("L", (16, 16)), "rgba": ("RGBA", (16, 16)),
              "non-square": ("RGB", (16, 8)), "other size": ("RGB", (8, 8))}  # fmt: skip


def corrupt(root, case):
    """Break the dataset in `root` one way -> the name the error must mention."""
    dj = root / "dataset.json"
    doc = json.loads(dj.read_text())
    name = doc["labels"][2][0]
    if case == "no dataset.json":
        dj.unlink()
        return "dataset.json"
    if case == "malformed json":
        dj.write_text('{"labels": [')
        return "malformed JSON"
    if case == "no labels":
        dj.write_text('{"meta": {}}')
        return '"labels"'
    if case == "empty":
        dj.write_text('{"labels": []}')
        return "empty"
    if case == "label of 24":
        doc["labels"][2][1] = doc["labels"][2][1][:24]
    elif case == "label not numbers":
        doc["labels"][2][1] = ["x"] * 25
    elif case == "missing file":
        (root / name).unlink()
    elif case == "bad meta type":
        doc["meta"] = {name: {"identity": "seven"}}
    else:
        mode, size = BAD_IMAGES[case]
        (root / name).write_bytes(png(mode, size))
    dj.write_text(json.dumps(doc))
    return name


OPEN_ERRORS = ["no dataset.json", "malformed json", "no labels", "empty", "label of 24",
               "label not numbers", "missing file", "bad meta type"]  # fmt: skip
DECODE_ERRORS = ["grayscale", "rgba", "non-square", "other size"]


@pytest.mark.parametrize("case", OPEN_ERRORS + DECODE_ERRORS)
def test_bad_inputs_name_the_file(tmp_path, case):
    write_dataset(tmp_path, n=4)
    expected = corrupt(tmp_path, case)
    with pytest.raises((ValueError, FileNotFoundError)) as err:
        src = eg3d_format.open_eg3d(tmp_path)
        assert case in DECODE_ERRORS, "opened a dataset that should fail up front"
        src[2]
    assert expected in str(err.value) and str(tmp_path) in str(err.value)
    if case in ("grayscale", "rgba"):
        assert "expected 'RGB'" in str(err.value)


def eg3d_flip_yaw(pose):
    """NVlabs/eg3d dataset_preprocessing/mirror_dataset.py (commit 60da7af), flip_yaw
    L26-33, as used on a label at L65-68; reimplemented in numpy from reading it."""
    flipped = pose.copy()
    flipped[0, 1] *= -1
    flipped[0, 2] *= -1
    flipped[1, 0] *= -1
    flipped[2, 0] *= -1
    flipped[0, 3] *= -1
    return flipped


def eg3d_mirror_label(label):
    pose, intrinsics = np.array(label[:16]).reshape(4, 4), np.array(label[16:]).reshape(3, 3)
    return np.concatenate([eg3d_flip_yaw(pose).reshape(-1), intrinsics.reshape(-1)])


def test_mirror_label_is_eg3d_formula():
    labels = np.random.default_rng(3).standard_normal((10, 25)).astype(np.float32)
    expected = np.stack([eg3d_mirror_label(c) for c in labels])
    np.testing.assert_array_equal(mirror_labels(labels), expected)
    # cameras.mirror_label agrees on camera labels (it also negates pose[3, 0], which is 0).
    poses, _, _ = make_labels(10)
    np.testing.assert_array_equal(
        np.asarray(cameras.mirror_label(poses)), np.stack([eg3d_mirror_label(c) for c in poses])
    )


def test_write_mirrored(dataset, tmp_path):
    root, images, labels, yaw = dataset
    out = tmp_path / "mirrored"
    eg3d_format.write_mirrored(root, out)
    src = eg3d_format.open_eg3d(out)
    assert len(src) == 2 * N
    # EG3D appends mirrors after the originals, named <stem>_mirror<ext> (L69-71).
    assert src.names[N + 3] == "00000/img00000003_mirror.png"
    np.testing.assert_array_equal(src[N + 3]["image"], images[3][:, ::-1])
    np.testing.assert_array_equal(src.labels[N:], np.stack([eg3d_mirror_label(c) for c in labels]))
    assert src.meta[N + 3]["yaw"] == -31.5 and src.meta[N + 3]["prompt"] == "head 3"
    np.testing.assert_allclose(src.meta[N + 4]["yaw"], -yaw[4], atol=1e-3)
    assert (out / src.names[0]).read_bytes() == (root / src.names[0]).read_bytes()
    eg3d_format.write_mirrored(out)  # in place, again: nothing to add
    assert len(eg3d_format.open_eg3d(out)) == 2 * N


def test_tfds_round_trip(dataset, tfds_dir, tmp_path):
    root, images, labels, yaw = dataset
    assert tfds_dir.name == "1.0.0" and tfds_dir.parent.name == "eg3d_images"
    with open_dataset(tfds_dir) as src:
        check_source(src, images, labels, yaw)
        eg3d_meta = eg3d_format.open_eg3d(root).meta
        assert src.meta == eg3d_meta
    # tfds -> EG3D: same paths, byte-identical image files, same labels and metadata.
    back = tmp_path / "back"
    tfds_format.tfds_to_eg3d(tfds_dir, back)
    again = eg3d_format.open_eg3d(back)
    assert again.names == src.names and again.meta == eg3d_meta
    np.testing.assert_array_equal(again.labels, labels)
    for name in again.names:
        assert (back / name).read_bytes() == (root / name).read_bytes()


def test_tfds_records_are_hash_ordered(tfds_dir):
    import tensorflow_datasets as tfds

    records = tfds.builder_from_directory(str(tfds_dir)).as_data_source(
        "train", decoders={"image": tfds.decode.SkipDecoding()}
    )
    stored = [records[i]["index"] for i in range(N)]
    assert sorted(stored) == list(range(N)) and stored != list(range(N))


def test_open_dataset_errors(tfds_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        open_dataset(tmp_path / "nope")
    with pytest.raises(ValueError, match="did you mean the tfds version directory .*1.0.0"):
        open_dataset(tfds_dir.parent.parent)
    with pytest.raises(ValueError, match="not a dataset"):
        open_dataset(tmp_path)
    with pytest.raises(FileExistsError, match="1.0.0 already exists"):
        tfds_format.eg3d_to_tfds(tmp_path, tfds_dir.parent.parent)
