"""make-dataset mannequin, dataset-info, preview, convert-dataset, mirror-dataset end to end."""

import json

import numpy as np
import pytest
from PIL import Image

from styleavatar_jax import cli
from styleavatar_jax.data import camera_check, eg3d_format
from styleavatar_jax.data.formats import open_dataset

ARGS = ["make-dataset", "mannequin", "--num-ids", "2", "--views-per-id", "3", "--res", "32",
        "--batch", "4", "--no-progress", "--pitch=-20:20"]  # fmt: skip


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("mq") / "set"
    assert cli.main([*ARGS, "--out", str(out)]) == 0
    return out


def test_make_dataset_writes_images_guidance_and_labels(made):
    doc = json.loads((made / "dataset.json").read_text())
    assert len(doc["labels"]) == 6
    with open_dataset(made) as ds:
        assert ds.resolution == 32 and len(ds) == 6
        item = ds[4]
        assert item["identity"] == 1 and item["style"] == "mannequin"
        assert -180 <= item["yaw"] <= 180 and -20 <= item["pitch"] <= 20
        assert not camera_check.validate_labels(ds.labels, list(ds.names))
        stats = camera_check.label_stats(ds.labels)
        np.testing.assert_allclose(stats["yaw"], [m["yaw"] for m in ds.meta], atol=1e-3)
        np.testing.assert_allclose(stats["radius"], 2.7, atol=1e-5)
        image = item["image"]
        assert image.std() > 10  # not blank
        for kind in ("depth", "pose"):
            path = made / "guidance" / kind / ds.names[4]
            assert np.asarray(Image.open(path)).shape == (32, 32, 3)
    assert not (made / ".partial").exists()


def test_interrupted_make_dataset_resumes_without_redoing(made, tmp_path, monkeypatch):
    out = tmp_path / "set"
    write = eg3d_format.EG3DWriter.write
    calls = []

    def failing(self, index, *a, **k):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(index)
        return write(self, index, *a, **k)

    monkeypatch.setattr(eg3d_format.EG3DWriter, "write", failing)
    assert cli.main([*ARGS, "--out", str(out)]) == 130  # Ctrl-C: one line, no traceback
    assert not (out / "dataset.json").exists() and len(calls) == 3
    calls.clear()
    monkeypatch.setattr(
        eg3d_format.EG3DWriter,
        "write",
        lambda self, i, *a, **k: calls.append(i) or write(self, i, *a, **k),
    )
    assert cli.main([*ARGS, "--out", str(out)]) == 0
    assert calls == [3, 4, 5]  # only what was missing
    assert (out / "dataset.json").read_bytes() == (made / "dataset.json").read_bytes()
    for name in json.loads((made / "dataset.json").read_text())["labels"]:
        assert (out / name[0]).read_bytes() == (made / name[0]).read_bytes()
    # Other settings in the same folder: refused before any work.
    assert cli.main([*ARGS[:-1], "--pitch=-10:10", "--out", str(out)]) == 2


def test_dataset_info_preview_and_plot(made, tmp_path, capsys):
    plot, grid = tmp_path / "cams.png", tmp_path / "grid.png"
    assert cli.main(["dataset-info", str(made), "--plot", str(plot), "--strict"]) == 0
    text = capsys.readouterr().out
    assert "6 images at 32²" in text and "2 identities" in text and "all 6 labels" in text
    assert np.asarray(Image.open(plot)).shape == (512, 1024, 3)
    assert cli.main(["preview", str(made), "--out", str(grid), "--num", "4", "--cols", "2",
                     "--size", "32", "--guidance"]) == 0  # fmt: skip
    assert np.asarray(Image.open(grid)).shape == (2 * 46, 2 * 3 * 32, 3)


def test_dataset_info_flags_wrong_conventions(made, tmp_path, capsys):
    doc = json.loads((made / "dataset.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    for name, label in doc["labels"]:
        (bad / name).parent.mkdir(parents=True, exist_ok=True)
        (bad / name).write_bytes((made / name).read_bytes())
        m = np.asarray(label[:16]).reshape(4, 4)
        m[:3, 1:3] *= -1  # an OpenGL/Blender camera
        label[:16] = m.ravel().tolist()
    (bad / "dataset.json").write_text(json.dumps({"labels": doc["labels"]}))
    assert cli.main(["dataset-info", str(bad), "--strict"]) == 1
    assert "6 × opengl" in capsys.readouterr().out


def test_convert_round_trip_and_mirror(made, tmp_path):
    assert cli.main(["convert-dataset", str(made), str(tmp_path / "tfds"), "--to", "tfds"]) == 0
    version_dir = next((tmp_path / "tfds").glob("*/*"))
    back = tmp_path / "back"
    assert cli.main(["convert-dataset", str(version_dir), str(back), "--to", "eg3d"]) == 0
    with open_dataset(made) as a, open_dataset(back) as b:
        np.testing.assert_array_equal(a.labels, b.labels)
        assert all(np.array_equal(a[i]["image"], b[i]["image"]) for i in range(len(a)))
    mirrored = tmp_path / "mirrored"
    assert cli.main(["mirror-dataset", str(made), str(mirrored)]) == 0
    with open_dataset(mirrored) as m:
        assert len(m) == 12
        np.testing.assert_allclose(m[6]["yaw"], -m[0]["yaw"], atol=1e-4)
        np.testing.assert_array_equal(m[6]["image"], m[0]["image"][:, ::-1])


def test_bad_flags_are_named(tmp_path, capsys):
    assert cli.main(["make-dataset", "mannequin", "--out", str(tmp_path), "--yaw", "abc"]) == 2
    assert "--yaw='abc'" in capsys.readouterr().err
    assert cli.main(["make-dataset", "mannequin", "--out", str(tmp_path), "--res", "4"]) == 2
    assert "--res" in capsys.readouterr().err
    assert cli.main(["dataset-info", str(tmp_path / "missing")]) == 2
    assert "does not exist" in capsys.readouterr().err
