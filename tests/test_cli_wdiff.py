"""W-diffusion end to end through the CLI: a tiny random GAN run, a tiny random CLIP saved
locally (transformers format) -> wdiff-data -> wdiff-train -> wdiff-eval, from-image,
from-text; and the bad-input errors."""

import json

import jax
import numpy as np
import pytest
from PIL import Image

from configs import tiny
from styleavatar_jax import checkpoint, cli, typed_config
from styleavatar_jax.models.triplane import TriPlaneGenerator, init_variables

pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("fast_compile")


def run(command: str) -> int:
    """cli.main on a command line split at spaces (paths here have none)."""
    return cli.main(command.split())


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from scripts.random_clip import write_random_clip

    root = tmp_path_factory.mktemp("cli_wdiff")
    cfg = tiny.get_config()
    G = TriPlaneGenerator(typed_config.generator_config(cfg.model.generator))
    variables = init_variables(G, jax.random.key(0))
    gan = checkpoint.write_new_run_dir(root / "gan", cfg, {"G_ema": variables})
    clip = write_random_clip(root / "clip", "tiny")
    pairs, wd = root / "pairs.npz", root / "wd"
    # Batch 8 on 2 devices everywhere: the GAN renderers compile once per shape.
    assert (
        run(f"wdiff-data --gan {gan} --clip {clip} --num 24 --batch 8 --devices 2 --out {pairs}")
        == 0
    )
    assert (
        run(
            f"wdiff-train --config configs/wdiff.py:tiny --data {pairs} --workdir {wd} "
            "--no-progress"
        )
        == 0
    )
    return root, gan, clip, pairs, wd


def test_pairs_file(runs):
    _, gan, clip, pairs, _ = runs
    with np.load(pairs) as f:
        w, e, seeds, meta = f["w"], f["e"], f["seeds"], json.loads(str(f["meta"]))
    assert w.shape == (24, 512) and e.shape == (24, 16) and list(seeds) == list(range(24))
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1, rtol=1e-5)
    assert meta["clip"] == str(clip) and meta["gan"] == str(gan)
    # w is the mapping net's: recompute seed 3 directly.
    from styleavatar_jax import sampling
    from styleavatar_jax.wdiff.pairs import front_label

    cfg, G, g_vars = checkpoint.load_generator(str(gan), None, [], "--gan")
    z = sampling.z_from_seeds([3], G.cfg.z_dim)
    ws = G.apply(g_vars, z, front_label(cfg.camera.to_dict()), method=G.mapping)
    np.testing.assert_allclose(w[3], ws[0, 0], rtol=1e-5, atol=1e-6)


def test_from_image_and_text(runs, tmp_path):
    _, gan, _, _, wd = runs
    rgba = np.zeros((40, 30, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "portrait.png")  # RGBA, not square
    out = tmp_path / "img"
    # Views and turntable frames of the same count share one compiled renderer.
    common = f"--gan {gan} --wdiff {wd} --views yaw=0,90 --batch 8 --devices 2"
    image = tmp_path / "portrait.png"
    assert run(f"from-image {image} {common} --num 2 --frames 2 --out {out}") == 0
    with np.load(out / "ws.npz") as f:
        assert f["w"].shape == (1, 2, 512) and np.all(np.isfinite(f["w"]))
    grid = np.asarray(Image.open(out / "00_views.png"))
    assert grid.shape[:2] == (2 * 64, 2 * 64)
    gif = Image.open(out / "00_turntable.gif")
    assert gif.n_frames == 2 and gif.size == (2 * 64, 64)

    out = tmp_path / "txt"
    argv = ["from-text", "a pixar girl with red hair", "an orc", *common.split(), "--num", "1",
            "--frames", "0", "--guidance", "2", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    assert json.loads((out / "conditions.json").read_text())["guidance"] == 2.0
    assert (out / "01_views.png").is_file() and not (out / "00_turntable.gif").exists()


def test_eval_json(runs):
    _, gan, _, _, wd = runs
    assert run(f"wdiff-eval --gan {gan} --wdiff {wd} --steps 5 --batch 8 --devices 2") == 0
    r = json.loads((wd / "eval.json").read_text())
    assert r["num_heldout"] == 6  # ⌈0.25 · 24⌉ (configs/wdiff.py:tiny)
    for lam in ("1", "3"):
        row = r["guidance"][lam]
        assert row["w_distance"] > 0 and row["w_fd"] >= 0 and -1 <= row["clip_similarity"] <= 1
    assert r["w_distance_random"] > 0
    ref = r["references"]  # the README's reference column comes from these
    # (With 6 rows in 512-d the FDs are mostly estimator bias: only their signs are checked.)
    assert ref["num_real"] == 6 and ref["w_fd_real"] > 0 and ref["w_fd_mean_w"] > 0
    assert ref["w_distance_mean_w"] < r["w_distance_random"]  # the mean is the closest point


def test_bad_inputs(runs, tmp_path, capsys):
    from tests.test_wdiff import synthetic_pairs

    _, gan, _, _, wd = runs
    synthetic_pairs(tmp_path / "w6.npz")  # a denoiser over 6-d w: not this GAN's
    wd6, out = tmp_path / "wd6", tmp_path / "o"
    assert (
        run(
            f"wdiff-train --config configs/wdiff.py:tiny --data {tmp_path / 'w6.npz'} "
            f"--workdir {wd6} --no-progress"
        )
        == 0
    )
    assert run(f"from-text x --gan {gan} --wdiff {wd6} --out {out}") == 2
    assert "has w_dim=512 but --wdiff" in capsys.readouterr().err
    argv = ["from-text", " ", "--gan", str(gan), "--wdiff", str(wd), "--out", str(out)]
    assert cli.main(argv) == 2
    assert "prompt 1 is empty" in capsys.readouterr().err
    (tmp_path / "notes.png").write_text("not an image")
    assert run(f"from-image {tmp_path / 'notes.png'} --gan {gan} --wdiff {wd} --out {out}") == 2
    assert "not an image" in capsys.readouterr().err
    none, pairs = tmp_path / "none", tmp_path / "p.npz"
    assert run(f"wdiff-data --gan {gan} --clip {none} --num 4 --out {pairs}") == 2
    assert "no such directory" in capsys.readouterr().err
    assert not (tmp_path / "p.npz").exists() and not out.exists()


def test_eval_portraits(runs, tmp_path):
    """--portraits: from-image, a random w and inversion on a dataset's front views."""
    from styleavatar_jax import sampling
    from styleavatar_jax.data import eg3d_format

    _, gan, _, _, wd = runs
    yaw = np.radians(np.array([0.0, 90.0, 20.0, 180.0, -30.0], np.float32))
    labels = sampling.view_labels(yaw, np.zeros_like(yaw), tiny.get_config().camera.to_dict())
    images = np.random.default_rng(0).integers(0, 256, (5, 64, 64, 3), dtype=np.uint8)
    writer = eg3d_format.EG3DWriter(tmp_path / "set")
    for i in range(5):
        writer.write(i, images[i], labels[i], None)
    writer.finish()
    out = tmp_path / "eval.json"
    assert run(f"wdiff-eval --gan {gan} --wdiff {wd} --steps 3 --batch 8 --devices 2 --guidance 1 "
               f"--portraits {tmp_path / 'set'} --inversion-steps 3 --out {out}") == 0  # fmt: skip
    r = json.loads(out.read_text())["portraits"]
    assert r["num"] == 3 and r["indices"] == [0, 2, 4]  # the front views only
    for m in ("from_image", "random_w", "inversion"):
        assert (
            r[m]["lpips"] > 0 and np.isfinite(r[m]["psnr"]) and len(r[m]["lpips_per_portrait"]) == 3
        )
    assert Image.open(r["picture"]).size == (3 * 64, 4 * 64)  # rows: portrait + 3 methods
