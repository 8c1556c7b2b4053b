"""The yaw-bin view classifier (eval/view_classifier.py) on a small mannequin set, the
pose_acc metric through `evaluate`, and SWD per view group with its floor."""

import jax
import numpy as np
import pytest

from styleavatar_jax.data.formats import open_dataset
from styleavatar_jax.eval import evaluate, generate
from styleavatar_jax.eval import view_classifier as vc
from styleavatar_jax.eval.groups import GROUPS
from styleavatar_jax.heads.make_mannequin import MannequinDatasetConfig, make_mannequin_dataset

RES = 32


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """32 identities × 8 views to train on, 8 other identities (another seed) held out;
    8 bins, 120 steps of 32 images, best of 6 validation passes."""
    root = tmp_path_factory.mktemp("views")
    for name, ids, seed in (("train", 32, 0), ("heldout", 8, 1)):
        cfg = MannequinDatasetConfig(num_ids=ids, views_per_id=8, resolution=RES, seed=seed,
                                     guidance=(), batch=8)  # fmt: skip
        make_mannequin_dataset(cfg, root / name, progress=False)
    meta = vc.main_train(root / "train", root / "heldout", root / "vc.npz", bins=8, steps=120,
                         seed=0, batch=32, eval_every=20, log=None)  # fmt: skip
    return root, meta


def test_trains_well_above_chance(trained):
    root, meta = trained
    # 8 bins of 45°: chance 0.125. Images near a bin edge are ambiguous, so ~0.85 is the
    # practical ceiling here; validation accuracy passes 0.75 by step ~50.
    assert meta["heldout_accuracy"] >= 0.6 and meta["val_accuracy"] >= 0.6
    assert (meta["resolution"], meta["bins"], meta["num_heldout"]) == (RES, 8, 64)
    assert meta["data"] == str((root / "train").absolute())
    assert 20 <= meta["best_step"] <= 120 and meta["best_step"] % 20 == 0


def test_save_load_round_trip(trained, tmp_path):
    root, meta = trained
    params, loaded = vc.load_classifier(meta["path"], resolution=RES)
    assert {k: loaded[k] for k in meta if k != "path"} == {k: v for k, v in meta.items()
                                                            if k != "path"}  # fmt: skip
    images, yaw, _ = vc.load_views(root / "heldout")
    # the file holds the very parameters that were measured
    assert vc.accuracy(params, images, yaw) == meta["heldout_accuracy"]
    again, _ = vc.load_classifier(vc.save_classifier(tmp_path / "again.npz", params, loaded))
    jax.tree.map(np.testing.assert_array_equal, again, params)
    assert not list(tmp_path.glob(".again.npz.*"))  # the temporary file was renamed


def test_resolution_mismatch_names_both(trained):
    _, meta = trained
    with pytest.raises(ValueError, match=r"trained on 32² .* images given are 64²"):
        vc.load_classifier(meta["path"], resolution=64)


def test_pose_acc_on_real_images_is_the_classifier_accuracy(trained, monkeypatch):
    """evaluate() with the generator replaced by the real image of each drawn camera: pose_acc
    is then the classifier's accuracy on those images, and swd ~ its floor's order."""
    root, meta = trained
    source = open_dataset(root / "heldout")
    images, yaw, _ = vc.load_views(root / "heldout")
    drawn = []

    def real_renders(G, variables, seeds, c_cond, c_render, settings, *, batch, mesh):
        for start in range(0, len(seeds), batch):
            c = c_render[start : start + batch]
            idx = [int(np.flatnonzero((source.labels == row).all(1))[0]) for row in c]
            drawn.extend(idx)
            yield images[idx].astype(np.float32) / 127.5 - 1.0, None  # to_uint8 inverts it

    monkeypatch.setattr(generate, "render_batches", real_renders)
    settings = evaluate.EvalSettings(metrics=evaluate.parse_metrics("pose_acc,swd"), num=48,
                                     batch=16, view_classifier=meta["path"])  # fmt: skip
    result = evaluate.evaluate(None, None, {}, source, settings, mesh=jax.make_mesh((1,), ("d",)),
                               neural_res=RES, progress=False, log=lambda _: None)  # fmt: skip
    pose = result["metrics"]["pose_acc"]
    assert pose["value"] == vc.accuracy(jax.device_get(vc.load_classifier(meta["path"])[0]),
                                        images[drawn], yaw[drawn])  # fmt: skip
    assert pose["num"] == 48 and set(pose["groups"]) == set(GROUPS)
    assert pose["real_accuracy"] == meta["heldout_accuracy"]
    assert pose["ratio"] == pytest.approx(pose["value"] / meta["heldout_accuracy"])
    assert sum(g["num"] for g in pose["groups"].values()) == 48
    sw = result["metrics"]["swd"]
    assert set(sw["groups"]) == set(GROUPS) and sw["floor"]["value"] > 0
    assert all("floor" in g and "value" in g for g in sw["groups"].values())
    assert result["protocol"]["view_classifier"]["bins"] == 8


def test_pose_accuracy_counts():
    yaw = np.radians([0.0, 10.0, 90.0, -90.0, 180.0, 170.0, 44.0, -30.0])
    true8 = vc.yaw_bins(yaw, 8)
    assert true8.tolist() == [0, 0, 2, 6, 4, 4, 1, 7]
    pred = true8.copy()
    pred[[2, 7]] = 0  # one side and one front wrong
    out = vc.pose_accuracy(pred, yaw, 8)
    assert out["value"] == 6 / 8 and "view_value" not in out  # 8 bins do not nest in 4
    assert {g: (v["value"], v["num"]) for g, v in out["groups"].items()} == {
        "front": (3 / 4, 4), "side": (1 / 2, 2), "back": (1.0, 2)}  # fmt: skip
    assert out["confusion"][2] == [1, 0, 0, 0, 0, 0, 0, 0]
    # 12 bins nest: bin 1 (30°) is 'front' like 10°; bin 3 (90°) is not 'front'.
    pred12 = vc.yaw_bins(yaw, 12)
    pred12[1], pred12[0] = 1, 3
    out = vc.pose_accuracy(pred12, yaw, 12)
    assert out["value"] == 6 / 8 and out["view_value"] == 7 / 8
    # an x-flip maps bin k to −k mod n, the augmentation's label rule
    assert np.array_equal(vc.yaw_bins(-yaw, 8), np.mod(-true8, 8))


def test_pose_acc_metric_names_and_missing_classifier():
    (spec,) = evaluate.parse_metrics("pose_acc2k")
    assert (spec.kind, spec.num) == ("pose_acc", 2000)
    settings = evaluate.EvalSettings(metrics=(spec,))
    with pytest.raises(ValueError, match="pose_acc needs a view classifier file"):
        evaluate.evaluate(None, None, {}, None, settings, mesh=None, neural_res=RES)


def test_swd_per_group_of_identical_sets_is_zero():
    rng = np.random.default_rng(0)
    images = np.kron(rng.integers(0, 256, (12, 4, 4, 3)), np.ones((1, 4, 4, 1))).astype(np.uint8)
    groups = np.array(["front"] * 5 + ["side"] * 4 + ["back"] * 2 + ["side"])
    out = evaluate.grouped_swd(images, groups, images, groups, seed=0, min_res=16)
    assert out["value"] == 0 and set(out["levels"]) == {16}
    for g in GROUPS:
        n = int(np.sum(groups == g))
        assert out["groups"][g]["value"] == (0 if n >= 2 else None), (g, n)
    floor = evaluate.swd_floor(images, groups, 0, 16, other=images, other_groups=groups)
    assert floor["value"] == 0 and floor["method"].startswith("real images vs")
    halves = evaluate.swd_floor(images, groups, 0, 16)
    assert halves["value"] > 0 and set(halves["groups"]) == set(GROUPS)
