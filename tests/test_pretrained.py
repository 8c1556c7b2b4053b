"""The model in the repository (pretrained/mannequin64: configs/mannequin64.py, in training;
BENCHMARKS.md has its record) loads on a fresh clone and renders heads centred in every view.
"""

import json
from pathlib import Path

import jax
import numpy as np
import pytest

from styleavatar_jax import checkpoint, cli, sampling
from styleavatar_jax.heads.make_mannequin import MannequinDatasetConfig, make_mannequin_dataset

RUN = Path(__file__).resolve().parent.parent / "pretrained" / "mannequin64"
BACKGROUND = 235 / 127.5 - 1  # the mannequin renders' grey


@pytest.fixture(scope="module")
def views():
    """4 seeds × yaw 0, 90, 180, −90 -> images [4, 4, 64, 64, 3] in [−1, 1]."""
    cfg, G, variables = checkpoint.load_generator(str(RUN), None, [], "test")
    yaw = np.radians(np.array([0.0, 90.0, 180.0, -90.0], np.float32))
    c = sampling.view_labels(yaw, np.zeros_like(yaw), cfg.camera.to_dict())
    settings = sampling.SampleSettings(neural_res=int(cfg.model.neural_res), truncation_psi=0.7)
    batches = sampling.sample_batches(G, variables, [0, 1, 2, 3], c, cfg.camera.to_dict(),
                                      settings, batch=4, mesh=sampling.make_mesh(1))  # fmt: skip
    return np.concatenate([im for _, im, _, _ in batches])


def test_the_shipped_run_is_a_run_directory():
    cfg = checkpoint.load_config(RUN)
    assert tuple(cfg.camera.pivot) == (0.0, 0.0, 0.0)  # the mannequins' cameras
    assert checkpoint.latest_step(RUN) is not None


def test_heads_are_centred_from_every_side(views):
    """The head is where the pixels differ from the background: its horizontal centre of
    mass sits within 10% of the frame's centre at the front, both sides and the back (with
    the pivot of EG3D's FFHQ, (0, 0, 0.2), side views were 22% off)."""
    assert np.isfinite(views).all()
    fg = np.abs(views - BACKGROUND).mean(-1) > 0.15  # [S, V, H, W]
    assert fg.mean(axis=(2, 3)).min() > 0.1  # a head is there in every image
    cols = np.arange(views.shape[3]) + 0.5
    centre_x = (fg * cols).sum(axis=(2, 3)) / fg.sum(axis=(2, 3))  # [S, V]
    offset = np.abs(centre_x / views.shape[3] - 0.5)
    assert offset.max() < 0.1, offset.round(3)


def test_export_generator_keeps_g_ema_only(tmp_path):
    """`export-generator`: the run's G_ema, bit for bit, with its config and step."""
    step = checkpoint.latest_step(RUN)
    assert cli.main(["export-generator", str(RUN), str(tmp_path / "g")]) == 0
    out = tmp_path / "g"
    assert checkpoint.list_steps(out) == [step]
    held = sorted(p.name for p in (out / "checkpoints" / str(step)).iterdir() if p.is_dir())
    assert held == ["G_ema"]
    assert checkpoint.load_config(out).to_dict() == checkpoint.load_config(RUN).to_dict()
    a = checkpoint.load_networks(RUN, ["G_ema"])["G_ema"]
    b = checkpoint.load_networks(out, ["G_ema"])["G_ema"]
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    assert cli.main(["export-generator", str(RUN), str(out)]) == 2  # exists: --overwrite


def test_samples_measure_against_held_out_mannequins(tmp_path):
    """The shipped model against 64 real held-out mannequins (8 identities the training set
    does not have): SWD per view group and pose accuracy with the shipped view classifier,
    through `eval`. Measured on this set (64 samples) with the 52-kimg model: SWD×1e3 29.5
    (front 56.3, side 52.7, back 43.7), pose accuracy 0.92 (the 20.6-kimg model: 53.5, front
    76.9, side 68.7, back 64.5; 0.67, which these bounds now fail). A model at 2 kimg of the
    same recipe fails them by far (BENCHMARKS.md's ablation: SWD 94–115 on 512 samples, pose
    accuracy 0.22–0.34; chance is 0.125)."""
    cfg = MannequinDatasetConfig(num_ids=8, views_per_id=8, resolution=64, seed=1000,
                                 guidance=(), batch=16)  # fmt: skip
    make_mannequin_dataset(cfg, tmp_path / "heldout", progress=False)
    out = tmp_path / "m.json"
    assert cli.main(["eval", "--ckpt", str(RUN), "--data", str(tmp_path / "heldout"),
                     "--metrics", "swd,pose_acc", "--num", "64", "--no-progress",
                     "--view-classifier", str(RUN.parent / "view_classifier64.npz"),
                     "--out", str(out)]) == 0  # fmt: skip
    m = json.loads(out.read_text())["metrics"]
    assert m["swd"]["value"] < 45
    assert all(v["value"] < 80 for v in m["swd"]["groups"].values()), m["swd"]["groups"]
    assert m["pose_acc"]["value"] >= 0.75
