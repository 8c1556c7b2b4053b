"""Bad input files get one clear line (exit 2) before any heavy work, and nothing is created:
a truncated dataset zip, a damaged image in a dataset, a PNG renamed .pkl or .npz, an EG3D
snapshot given as --ckpt, argparse's usage errors. No test here compiles a model."""

import gzip
import zipfile
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from styleavatar_jax import checkpoint, cli
from styleavatar_jax.data import eg3d_format
from styleavatar_jax.data.formats import open_dataset
from styleavatar_jax.data.source import check_images, spread
from styleavatar_jax.files import describe_magic
from styleavatar_jax.typed_config import load_config_file

from .test_data_formats import make_labels

ROOT = Path(__file__).resolve().parent.parent
TINY = str(ROOT / "configs" / "tiny.py")
PKL = ROOT / "tests" / "fixtures" / "eg3d_tiny.pkl"
RES, N = 64, 8  # configs/tiny.py's resolution; N = the batch these tests train with


def write_set(root: Path, n: int = N) -> Path:
    """An EG3D folder of n random RES² PNGs, by the project's writer."""
    images = np.random.default_rng(1).integers(0, 256, (n, RES, RES, 3), dtype=np.uint8)
    writer = eg3d_format.EG3DWriter(root)
    for i, label in enumerate(make_labels(n)[0]):
        writer.write(i, images[i], label, None)
    writer.finish()
    return root


def zip_set(root: Path, out: Path) -> Path:
    with zipfile.ZipFile(out, "w") as z:  # stored, as EG3D's dataset_tool writes
        for f in sorted(root.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(root).as_posix())
    return out


def truncate(path: Path) -> Path:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def fake_run(path: Path) -> Path:
    """A run directory as far as the checks before loading networks see it."""
    (path / checkpoint.CHECKPOINTS).mkdir(parents=True)
    checkpoint.write_config(path, load_config_file(TINY))
    return path


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_set(tmp_path_factory.mktemp("bad-input") / "set")


def one_line(cli_error, argv) -> str:
    msg = cli_error(argv).strip()
    assert len(msg.splitlines()) == 1 and "Traceback" not in msg, msg
    return msg


# ------------------------------------------------------------------ a truncated dataset zip
@pytest.mark.parametrize("command", ["dataset-info", "train", "eval"])
def test_truncated_zip_says_so(cli_error, dataset, tmp_path, command):
    cut = truncate(zip_set(dataset, tmp_path / "set.zip"))
    run, wd = fake_run(tmp_path / "run"), tmp_path / "wd"
    train = ["train", "--config", TINY, "--workdir", wd, "--config.train.batch_size=8"]  # 8 devices
    argv = {
        "dataset-info": ["dataset-info", cut],
        "train": [*train, f"--config.data.path={cut}"],
        "eval": ["eval", "--ckpt", run, "--metrics", "swd", "--data", cut],
    }[command]
    msg = one_line(cli_error, argv)
    assert f"{cut}: the zip is damaged or truncated (zipfile: File is not a zip file" in msg
    assert "re-create it or download it again" in msg
    assert not wd.exists() and sorted(p.name for p in run.iterdir()) == ["checkpoints",
                                                                         "config.json"]  # fmt: skip


def test_zip_with_a_damaged_image_names_it(cli_error, dataset, tmp_path):
    path = zip_set(dataset, tmp_path / "set.zip")
    with zipfile.ZipFile(path) as z:
        info = z.getinfo(eg3d_format.image_name(5))
    data = bytearray(path.read_bytes())
    data[info.header_offset + 30 + len(info.filename) + len(info.extra) + 100] ^= 0xFF
    path.write_bytes(bytes(data))
    msg = one_line(cli_error, ["dataset-info", path])
    assert f"{path}: {eg3d_format.image_name(5)} in the zip is damaged (Bad CRC-32" in msg


def test_a_file_that_is_not_a_zip(cli_error, tmp_path):
    fake = tmp_path / "set.zip"
    PIL.Image.new("RGB", (8, 8)).save(fake, format="PNG")
    msg = one_line(cli_error, ["dataset-info", fake])
    assert "not a zip file (it starts like a PNG image)" in msg


# ------------------------------------------------------------------ a damaged image
@pytest.fixture
def damaged_set(tmp_path) -> tuple[Path, str]:
    """A dataset whose image 5 is cut in half -> (folder, its name)."""
    root = write_set(tmp_path / "set")
    name = eg3d_format.image_name(5)
    truncate(root / name)
    return root, name


def test_dataset_info_decodes_every_image(cli_error, capsys, dataset, damaged_set):
    assert cli.main(["dataset-info", str(dataset)]) == 0
    assert f"images: all {N} decode" in capsys.readouterr().out
    root, name = damaged_set
    msg = one_line(cli_error, ["dataset-info", root])
    assert f"{root}: entry 5 ({name}): image data is corrupt (image file is truncated" in msg
    assert "replace the file or remove it from the dataset" in msg


def test_train_checks_images_before_the_workdir(cli_error, damaged_set, tmp_path):
    root, name = damaged_set
    wd = tmp_path / "wd"
    argv = ["train", "--config", TINY, "--workdir", wd, f"--config.data.path={root}"]
    msg = one_line(cli_error, [*argv, "--config.train.batch_size=8"])
    assert f"entry 5 ({name}): image data is corrupt" in msg
    assert not wd.exists()


def test_check_images_spread_and_first_damaged(damaged_set):
    assert list(spread(1000, 5)) == [0, 250, 500, 749, 999] and list(spread(3, 64)) == [0, 1, 2]
    root, name = damaged_set
    with open_dataset(root) as ds:
        assert check_images(ds, [0, 1, 7]) == 3
        with pytest.raises(ValueError, match=f"entry 5 \\({name}\\)"):
            check_images(ds, [7, 5, 6])


# ------------------------------------------------------------------ a PNG renamed .pkl/.npz
def test_describe_magic(tmp_path):
    def kind(data: bytes) -> str:
        (tmp_path / "f").write_bytes(data)
        return describe_magic(tmp_path / "f")

    png = tmp_path / "a.png"
    PIL.Image.new("RGB", (8, 8)).save(png)
    PIL.Image.new("RGB", (8, 8)).save(tmp_path / "a.jpg")
    assert describe_magic(png) == "a PNG image"
    assert describe_magic(tmp_path / "a.jpg") == "a JPEG image"
    np.savez(tmp_path / "a.npz", x=np.zeros(2))
    assert describe_magic(tmp_path / "a.npz") == "a zip archive"
    assert kind(gzip.compress(b"x")) == "a gzip file"
    assert kind(b"\n <!DOCTYPE html><html>") == "an HTML page"
    assert kind(b"Not Found\n") == "text" and kind(b"") == "an empty file"
    assert kind(b"\x80\x04K\x01.") == "a pickle" and kind(bytes(range(256))) == ""


@pytest.fixture
def png_as(tmp_path):
    def rename(suffix: str) -> Path:
        path = tmp_path / f"x{suffix}"
        PIL.Image.new("RGB", (8, 8)).save(path, format="PNG")
        return path

    return rename


def test_png_renamed_pkl(cli_error, png_as, tmp_path):
    pkl = png_as(".pkl")
    msg = one_line(cli_error, ["convert-eg3d", pkl, tmp_path / "out"])
    assert f"{pkl}: not a pickle (it starts like a PNG image); expected an EG3D network " in msg
    msg = one_line(cli_error, ["convert-inception", pkl, tmp_path / "inc.npz"])
    assert f"{pkl}: not a pickle (it starts like a PNG image)" in msg
    assert not (tmp_path / "out").exists() and not (tmp_path / "inc.npz").exists()


@pytest.mark.parametrize("command", ["convert-eg3d", "convert-inception", "eval", "wdiff-train"])
def test_png_renamed_npz(cli_error, png_as, tmp_path, dataset, command):
    npz, out = png_as(".npz"), tmp_path / "out"
    argv, flag = {
        "convert-eg3d": (["convert-eg3d", PKL, out, "--check", npz], "--check="),
        "convert-inception": (["convert-inception", npz, out / "inc.npz"], "SRC="),
        "eval": (["eval", "--ckpt", fake_run(tmp_path / "run"), "--metrics", "pose_acc",
                  "--view-classifier", npz, "--data", dataset, "--out", out / "m.json"],
                 "--view-classifier="),
        "wdiff-train": (["wdiff-train", "--config", ROOT / "configs" / "wdiff.py", "--data", npz,
                         "--workdir", out], ""),
    }[command]  # fmt: skip
    msg = one_line(cli_error, argv)
    assert f"{flag}{npz}: not an .npz file (it starts like a PNG image)" in msg
    assert not out.exists()


# ------------------------------------------------------------------ --ckpt given a snapshot
@pytest.mark.parametrize("argv", [
    ["sample", "--out", "s"], ["video", "--out", "v.mp4"], ["mesh", "--out", "m.ply"],
    ["invert", "PNG", "--out", "i"], ["eval", "--metrics", "swd", "--out", "m.json"],
])  # fmt: skip
def test_ckpt_pkl_says_how_to_convert(cli_error, tmp_path, monkeypatch, argv):
    monkeypatch.chdir(tmp_path)
    PIL.Image.new("RGB", (8, 8)).save("p.png")
    (tmp_path / "snap.pkl").write_bytes(PKL.read_bytes()[:100])
    argv = [a.replace("PNG", "p.png") for a in argv]
    msg = one_line(cli_error, [*argv, "--ckpt", "snap.pkl"])
    assert "--ckpt=snap.pkl: is a file, but --ckpt takes a run directory" in msg
    assert "styleavatar-jax convert-eg3d snap.pkl OUT_DIR, then --ckpt=OUT_DIR" in msg
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.png", "snap.pkl"]


# ------------------------------------------------------------------ argparse
@pytest.mark.parametrize("argv", [["sample"], ["sample", "--out", "s", "--bogus"], ["bogus"]])
def test_usage_errors_are_two_lines(cli_error, argv):
    lines = cli_error(argv).strip().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("usage: styleavatar-jax") and ": error: " in lines[1]


# ------------------------------------------------------------------ eval: resolutions
def test_eval_dataset_at_another_resolution(cli_error, tmp_path):
    """A 32² dataset for a 64² run: both resolutions named before any network is loaded."""
    small = tmp_path / "small"
    writer = eg3d_format.EG3DWriter(small)
    for i, label in enumerate(make_labels(2)[0]):
        writer.write(i, np.zeros((32, 32, 3), np.uint8), label, None)
    writer.finish()
    run, out = fake_run(tmp_path / "run"), tmp_path / "m.json"
    msg = one_line(cli_error, ["eval", "--ckpt", run, "--metrics", "swd", "--data", small,
                               "--out", out])  # fmt: skip
    assert f"--data={small}: images are 32², but --ckpt={run} generates 64²" in msg
    assert "(make-dataset --res 64)" in msg and not out.exists()


def test_eval_view_classifier_at_another_resolution(cli_error, tmp_path, dataset):
    from styleavatar_jax.eval.view_classifier import save_classifier

    vc = save_classifier(tmp_path / "vc32.npz", {"w": np.zeros(2)}, {"resolution": 32, "bins": 8})
    run, out = fake_run(tmp_path / "run"), tmp_path / "m.json"
    msg = one_line(cli_error, ["eval", "--ckpt", run, "--metrics", "pose_acc", "--data", dataset,
                               "--view-classifier", vc, "--out", out])  # fmt: skip
    assert (
        f"--view-classifier={vc}: the view classifier was trained on 32² images, but "
        f"--ckpt={run} generates 64²"
    ) in msg
    assert "train-view-classifier" in msg and not out.exists()


# ------------------------------------------------------------------ a shipped file missing
def test_missing_shipped_files_say_how_to_restore_them(cli_error, tmp_path, monkeypatch, dataset):
    from styleavatar_jax import files

    monkeypatch.setattr(files, "SHIPPED", tmp_path / "pretrained")
    run = fake_run(tmp_path / "pretrained" / "m64")  # its checkpoints/ lost its steps
    msg = one_line(cli_error, ["sample", "--ckpt", run, "--out", tmp_path / "s"])
    assert "holds no checkpoint step" in msg
    assert "restore it with `git checkout -- pretrained/m64/checkpoints`" in msg
    (run / "config.json").unlink()
    msg = one_line(cli_error, ["sample", "--ckpt", run, "--out", tmp_path / "s"])
    assert "`git checkout -- pretrained/m64/config.json`" in msg
    vc = tmp_path / "pretrained" / "vc.npz"
    msg = one_line(cli_error, ["eval", "--ckpt", fake_run(tmp_path / "r"), "--metrics",
                               "pose_acc", "--data", dataset, "--view-classifier", vc])  # fmt: skip
    assert f"--view-classifier={vc}: no such file" in msg
    assert "`git checkout -- pretrained/vc.npz`" in msg
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "src, snapshot, names",
    [
        ("{tmp}", "tests/fixtures/eg3d_tiny.pkl", "--eg3d-src {tmp}: not EG3D's eg3d/ folder"),
        ("{eg3d}", "{tmp}/text.pkl", "--snapshot: {tmp}/text.pkl: not a pickle"),
        ("{eg3d}", "pretrained/view_classifier64.npz", "not a pickle (it starts like a zip"),
    ],
)
def test_step_parity_bench_names_the_bad_input(tmp_path, src, snapshot, names):
    """bench/eg3d_step_parity.py: a folder that is not EG3D's or a file that is not an EG3D
    snapshot is exit status 2 and a one-line reason, before EG3D or our step runs."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    eg3d = tmp_path / "eg3d"  # what the check looks for (nothing is imported from it)
    for name in ("training/triplane.py", "training/loss.py", "torch_utils/__init__.py"):
        (eg3d / name).parent.mkdir(parents=True, exist_ok=True)
        (eg3d / name).write_text("")
    (tmp_path / "text.pkl").write_text("hello\n")
    fill = lambda s: s.format(tmp=tmp_path, eg3d=eg3d)  # noqa: E731
    run = subprocess.run(
        [
            sys.executable,
            "bench/eg3d_step_parity.py",
            "--eg3d-src",
            fill(src),
            "--snapshot",
            fill(snapshot),
        ],  # fmt: skip
        cwd=root,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2, run.stderr
    assert fill(names) in run.stderr and "Traceback" not in run.stderr, run.stderr
