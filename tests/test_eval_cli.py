"""`styleavatar-jax eval` end to end on a tiny run directory, `convert-inception`, and the
training-loop callback's schedule."""

import json
import re

import jax
import numpy as np
import pytest

from styleavatar_jax import checkpoint, cli, sampling
from styleavatar_jax.convert import inception as convert_inception
from styleavatar_jax.data.eg3d_format import EG3DWriter
from styleavatar_jax.eval import evaluate, in_training
from styleavatar_jax.models import inception
from styleavatar_jax.models.triplane import TriPlaneGenerator, init_variables
from styleavatar_jax.typed_config import generator_config, load_config_file

YAWS = (0.0, 30.0, 90.0, 180.0, -90.0, -150.0, 10.0, 120.0)  # front ×3, side ×3, back ×2


@pytest.fixture(scope="module", autouse=True)
def _fast(fast_compile):
    """Compile-bound module (G's init and renderer, Inception): see conftest.fast_compile."""


def _main(argv):
    return cli.main(argv)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """configs/tiny.py at random init as a run directory (step 7), an 8-image 64² dataset
    with cameras on the tiny config's orbit at known yaws, a random Inception."""
    root = tmp_path_factory.mktemp("eval")
    cfg = load_config_file("configs/tiny.py")
    yaw = np.radians(np.asarray(YAWS, np.float32))
    pitch = np.radians(np.linspace(-20, 20, 8, dtype=np.float32))
    labels = sampling.view_labels(yaw, pitch, cfg.camera.to_dict())
    rng = np.random.default_rng(0)
    writer = EG3DWriter(root / "data")
    for i in range(8):  # smooth random images: blocks of 8×8 pixels
        img = np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((8, 8, 1))).astype(np.uint8)
        writer.write(i, img, labels[i], {})
    writer.finish()
    cfg.data.path = str(root / "data")
    G = TriPlaneGenerator(generator_config(cfg.model.generator))
    checkpoint.write_new_run_dir(root / "run", cfg, {"G_ema": init_variables(G, jax.random.key(0))},
                                 step=7)  # fmt: skip
    weights = convert_inception.save_npz(inception.init_variables(jax.random.key(1)),
                                         root / "inception.npz")  # fmt: skip
    return root, weights


def test_eval_cli_end_to_end(run, capsys):
    """fid, kid, swd and consistency on 8 fakes vs the 8 reals, batch 2 on 2 devices. JSON
    beside the checkpoint, per-group entries."""
    root, weights = run
    rc = _main(["eval", "--ckpt", str(root / "run"), "--metrics", "fid,kid,swd,consistency",
                "--inception", str(weights), "--num", "8", "--batch", "2", "--devices", "2",
                "--no-progress"])  # fmt: skip
    assert rc == 0
    path = root / "run" / "metrics-7.json"
    result = json.loads(path.read_text())
    assert result["step"] == 7 and result["run"] == str((root / "run").absolute())
    p = result["protocol"]
    assert (p["num_real"], p["num_fake"], p["cameras"], p["truncation_psi"]) == (
        8,
        8,
        "dataset",
        1.0,
    )
    assert p["inception"]["sha256"] == convert_inception.file_sha256(weights)
    m = result["metrics"]
    assert m["fid"]["value"] > 0 and (m["fid"]["num_real"], m["fid"]["num_fake"]) == (8, 8)
    groups = m["fid"]["groups"]
    assert [groups[g]["num_real"] for g in ("front", "side", "back")] == [3, 3, 2]
    assert sum(groups[g]["num_fake"] for g in groups) == 8
    assert all(g["value"] is None or g["value"] > 0 for g in groups.values())
    assert set(m["kid"]["groups"]) == {"front", "side", "back"}
    assert np.isfinite(m["kid"]["value"])
    assert m["swd"]["value"] > 0 and set(m["swd"]["levels"]) == {"64", "32", "16"}
    cons = m["consistency"]
    assert cons["pairs"] == 8 * 8 and set(cons["groups"]) == {"front", "side", "back"}
    assert cons["value"] is None or np.isfinite(cons["value"])
    assert p["consistency"]["delta_deg"] == 20.0
    out = capsys.readouterr().out
    assert f"wrote {path}" in out and '"fid"' in out

    # Random cameras, SWD only (no Inception needed), written where --out says.
    rc = _main(["eval", "--ckpt", str(root / "run"), "--metrics", "swd", "--num", "8",
                "--batch", "2", "--devices", "2", "--cameras", "random", "--no-progress",
                "--out", str(root / "swd.json")])  # fmt: skip
    assert rc == 0
    again = json.loads((root / "swd.json").read_text())
    assert again["protocol"]["cameras"] == "random" and "inception" not in again["protocol"]
    assert again["metrics"]["swd"]["value"] > 0


def test_training_callback_writes_metrics_when_kimg_crossed(run, tmp_path):
    """The callback on a state-like object (the loop hands TrainState; only g_ema is read):
    silent before 16 images, then SWD of G_ema into WORKDIR/metrics-4.json."""
    import types

    root, _ = run
    cfg = checkpoint.load_config(root / "run")
    G = TriPlaneGenerator(generator_config(cfg.model.generator))
    g_ema = checkpoint.load_networks(root / "run", ["G_ema"])["G_ema"]
    cb = in_training.make_metric_callback(
        G, workdir=tmp_path, data=cfg.data.path, every_kimg=0.016, batch_size=4,
        camera=cfg.camera.to_dict(), neural_res=int(cfg.model.neural_res), metrics="swd",
        eval_batch=2, mesh=sampling.make_mesh(2), log=lambda s: None,
    )  # fmt: skip
    state = types.SimpleNamespace(g_ema=g_ema)
    for step in range(4):
        cb(step, state, {})
    assert not list(tmp_path.glob("metrics-*.json"))
    cb(4, state, {})
    result = json.loads((tmp_path / "metrics-4.json").read_text())
    assert (result["step"], result["kimg"]) == (4, 0.016)
    assert result["metrics"]["swd"]["num_fake"] == 8 and result["metrics"]["swd"]["value"] > 0


def test_eval_errors(run, tmp_path, cli_error):
    root, _ = run
    base = ["eval", "--ckpt", str(root / "run"), "--batch", "2", "--devices", "2"]
    msg = cli_error(base + ["--metrics", "fid1k", "--inception", str(tmp_path / "missing.pth")])
    assert "missing.pth: no such file" in msg and convert_inception.WEIGHTS_URL in msg
    assert "swd, consistency" in msg
    assert re.search(
        "needs --inception FILE.*swd, consistency", cli_error(base + ["--metrics", "kid50k"])
    )
    assert re.search("unknown metric 'fjd'", cli_error(base + ["--metrics", "fid,fjd"]))


def test_convert_inception_cli(run, tmp_path, cli_error):
    root, weights = run
    assert _main(["convert-inception", str(weights), str(tmp_path / "again.npz")]) == 0
    a, b = np.load(weights), np.load(tmp_path / "again.npz")
    assert sorted(a.files) == sorted(b.files) and len(a.files) == 94 * 5
    assert re.search(
        "convert-inception SRC .*nope.pth",
        cli_error(["convert-inception", str(tmp_path / "nope.pth"), str(tmp_path / "x.npz")]),
    )


def test_metric_names_and_callback_schedule():
    specs = evaluate.parse_metrics("fid50k,kid1k,swd,fid2k_full,consistency")
    assert [(s.kind, s.num) for s in specs] == [("fid", 50000), ("kid", 1000), ("swd", None),
                                                ("fid", 2000), ("consistency", None)]  # fmt: skip
    settings = evaluate.EvalSettings(metrics=specs)
    assert [settings.count(s) for s in specs] == [50000, 1000, 4096, 2000, 64]
    # every 0.1 kimg at batch 32: steps 4 (128), 7 (224), 10 (320), ...
    fired = [s for s in range(12) if in_training.crossed(s, 32, 0.1)]
    assert fired == [4, 7, 10]


def test_train_config_switches_metrics_on(run, tmp_path):
    """config.eval -> `train`'s callbacks: none by default; the metric callback when asked;
    a missing Inception file fails before training starts."""
    from styleavatar_jax.train.metrics import metric_callbacks

    root, _ = run
    cfg = checkpoint.load_config(root / "run")
    cfg.eval = dict(metrics="", every_kimg=0.0, inception="", num=0, batch=2)
    assert metric_callbacks(cfg, tmp_path) == []
    cfg.eval.update(metrics="swd", every_kimg=0.016)
    (cb,) = metric_callbacks(cfg, tmp_path)
    assert callable(cb)
    cfg.eval.update(metrics="fid", inception=str(tmp_path / "missing.pth"))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        metric_callbacks(cfg, tmp_path)


def test_clip_view_accuracy_and_score_formulas():
    from styleavatar_jax.eval import clip_metrics

    views = np.eye(3, 4)  # front, side, back along the first three axes
    emb = np.array([[1, 0.1, 0, 0], [0, 1, 0, 0], [0.2, 0, 1, 0], [1, 0, 0, 0], [0, 0, 0.5, 0]])
    groups = np.array(["front", "side", "back", "back", "back"])
    r = clip_metrics.view_accuracy(emb, views, groups)
    assert r["value"] == pytest.approx(4 / 5) and r["num"] == 5
    assert r["groups"]["back"] == {"value": pytest.approx(2 / 3), "num": 3}
    assert r["confusion"]["back"] == {"front": 1, "side": 0, "back": 2}
    text = np.array([1.0, 0, 0, 0])
    # cosines 1/√1.01, 0, 0.2/√1.04, 1, 0 -> 100 · mean of their positive parts
    want = 100 * (1 / np.sqrt(1.01) + 0.2 / np.sqrt(1.04) + 1) / 5
    assert clip_metrics.clip_score(emb, text) == pytest.approx(want)


def test_eval_clip_metrics_with_a_local_clip(run, tmp_path, cli_error):
    """clip_view and clip_score through the CLI with a tiny random CLIP saved locally."""
    pytest.importorskip("transformers")
    from scripts.random_clip import write_random_clip

    root, _ = run
    clip = write_random_clip(tmp_path / "clip", "tiny")
    out = tmp_path / "m.json"
    rc = _main(["eval", "--ckpt", str(root / "run"), "--metrics", "clip_view,clip_score",
                "--clip", str(clip), "--clip-prompt", "a 3D avatar", "--num", "8", "--batch", "2",
                "--devices", "2", "--out", str(out), "--no-progress"])  # fmt: skip
    assert rc == 0
    r = json.loads(out.read_text())
    view = r["metrics"]["clip_view"]
    assert view["num"] == 8 and 0 <= view["value"] <= 1
    assert sum(n for row in view["confusion"].values() for n in row.values()) == 8
    assert 0 <= r["metrics"]["clip_score"]["value"] <= 100
    assert r["protocol"]["clip"] == str(clip)
    assert re.search(
        "--clip-prompt",
        cli_error(
            ["eval", "--ckpt", str(root / "run"), "--metrics", "clip_score", "--clip", str(clip)]
        ),
    )
    assert re.search(
        "needs --clip", cli_error(["eval", "--ckpt", str(root / "run"), "--metrics", "clip_view"])
    )
