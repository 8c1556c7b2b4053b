"""data_gen end to end on tiny random SD/ControlNet/CLIP models saved locally (no download):
pose, depth and hybrid runs, resume, reproducibility, the CLIP view filter, LoRA, bad input.

The 3D head is a small mesh with keypoints (ray-cast in numpy): the mannequin's renderer
compiles for minutes on a loaded 2-core machine; its guidance is make_mannequin's own,
tested in test_mannequin.py, and data_gen passes it through unchanged.
"""

import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from data_gen import run as R  # noqa: E402
from data_gen.config import DataGenConfig, make_job  # noqa: E402
from data_gen.guidance import Cameras, render_guidance  # noqa: E402
from data_gen.prompts import PROMPT_VIEWS  # noqa: E402
from data_gen.tiny_models import save_tiny_models  # noqa: E402
from data_gen.view_filter import ClipViewScorer, judge  # noqa: E402
from styleavatar_jax.data.eg3d_format import open_eg3d  # noqa: E402
from styleavatar_jax.heads.make_mannequin import view_angles, view_labels  # noqa: E402

torch.set_num_threads(1)  # 2 threads ran 6-10x slower on the shared 2 cores
RES = 64


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return save_tiny_models(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def head(tmp_path_factory):
    """An ellipsoid head (radius ~0.25) with nose, eyes, ears, neck and a few face points."""
    import trimesh

    folder = tmp_path_factory.mktemp("head")
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=0.25)
    mesh.apply_scale([0.9, 1.1, 1.0])
    mesh.export(folder / "head.obj")
    on = lambda x, y: [x, y, 0.25 * math.sqrt(max(1 - (x / 0.225) ** 2 - (y / 0.275) ** 2, 0))]
    body = dict(
        nose=on(0, 0),
        r_eye=on(-0.07, 0.06),
        l_eye=on(0.07, 0.06),
        r_ear=[-0.225, 0.0, 0.0],
        l_ear=[0.225, 0.0, 0.0],
        neck=[0.0, -0.3, 0.0],
    )
    face = [None] * 70
    for i, (x, y) in enumerate([(-0.1, -0.1), (-0.05, -0.12), (0, -0.13), (0.05, -0.12)]):
        face[i + 6] = on(x, y)  # jaw
    face[68], face[69] = on(-0.07, 0.06), on(0.07, 0.06)  # pupils
    (folder / "head.keypoints.json").write_text(json.dumps(dict(body=body, face=face)))
    return folder / "head.obj"


def _argv(models, out, nets=("pose",), n=4, *extra):
    argv = ["--out", str(out), "--base-model", str(models["base"]), "--num-images", str(n),
            "--res", str(RES), "--steps", "2", "--batch", "2", "--no-progress"]  # fmt: skip
    for kind in nets:
        argv += ["--controlnet", f"{kind}={models[kind]}"]
    return argv + list(extra)


def _run(models, head, out, nets=("pose",), n=4, *extra, scorer=None):
    args = R.build_parser().parse_args(
        _argv(models, out, nets, n, "--head-mesh", str(head), *extra)
    )
    job, opts = R.job_from_args(args)
    return R.make_dataset(job, out, n, scorer=scorer, progress=False, **opts), job


def _pngs(out):
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.glob("0*/*.png"))}


@pytest.mark.parametrize("nets", [("pose",), ("depth",), ("pose", "depth")], ids="+".join)
def test_end_to_end(models, head, tmp_path, nets):
    out = tmp_path / "set"
    summary, job = _run(models, head, out, nets)
    assert (summary.generated, summary.skipped, summary.gaps) == (4, 0, [])
    with open_eg3d(out) as ds:
        assert len(ds) == 4 and ds.resolution == RES
        cfg = job.cfg.cameras.mannequin(nets)
        yaw, pitch = view_angles(cfg, range(4))
        np.testing.assert_allclose(ds.labels, view_labels(cfg, yaw, pitch), atol=1e-6)
        guide = render_guidance(job.cfg.cameras, nets, np.arange(4), job.head)
        for i in range(4):
            m = ds.meta[i]
            seed = R.image_seed(0, i, 0)
            p = R.image_prompt(job, float(yaw[i]), float(pitch[i]), seed)
            assert m["seed"] == seed and m["prompt"] == p.positive and m["style"] == p.style
            assert m["negative_prompt"] == p.negative and m["view"] in ("front", "left", "back",
                                                                        "right")  # fmt: skip
            assert abs(m["yaw"] - yaw[i]) < 1e-4 and abs(m["pitch"] - pitch[i]) < 1e-4
            img = ds[i]["image"]
            assert img.shape == (RES, RES, 3) and img.std() > 0
            for kind in nets:
                from PIL import Image

                g = np.asarray(Image.open(out / "guidance" / kind / ds.names[i]))
                np.testing.assert_array_equal(g, guide[kind][i])
    assert json.loads((out / R.MANIFEST).read_text())["written"] == 4
    settings = json.loads((out / R.SETTINGS).read_text())
    assert settings["config"]["guidance"] == list(nets) and settings["dtype"] == "float32"
    if len(nets) == 2:  # the set converts to tfds as any project dataset does
        from styleavatar_jax.data.tfds_format import eg3d_to_tfds, open_tfds

        tf_path = eg3d_to_tfds(out, tmp_path / "tfds")
        with open_tfds(tf_path) as tf_ds, open_eg3d(out) as ds:
            assert len(tf_ds) == 4
            assert [m["prompt"] for m in tf_ds.meta] == [m["prompt"] for m in ds.meta]
            np.testing.assert_array_equal(tf_ds[3]["image"], ds[3]["image"])


def test_hybrid_pairs_each_image_with_its_guidance(models):
    """Hybrid with one ControlNet at scale 0 == that ControlNet alone, image for image (B = 3;
    B = 2 = #ControlNets would hide a transposed guidance layout)."""
    from data_gen.pipelines import check_model, generate, load_pipeline

    ref = lambda k: check_model(str(models[k]), k, "model")
    base = check_model(str(models["base"]), "--base-model", "pipeline")
    load = lambda kinds: load_pipeline(
        base, {k: ref(k) for k in kinds}, scheduler="DDIMScheduler", device="cpu", dtype="float32"
    )
    rng = np.random.default_rng(0)
    guide = {k: rng.integers(0, 256, (3, RES, RES, 3), dtype=np.uint8) for k in ("pose", "depth")}
    run = lambda pipe, kinds, scale: generate(
        pipe, ["a"] * 3, ["b"] * 3, {k: guide[k] for k in kinds}, [5, 5, 5], steps=2,
        guidance_scale=7.5, controlnet_scale=scale)  # fmt: skip
    hybrid = load(("pose", "depth"))
    for kind, scale in (("pose", (1.0, 0.0)), ("depth", (0.0, 1.0))):
        alone = run(load((kind,)), (kind,), (1.0,))
        assert len({a.tobytes() for a in alone}) == 3  # each image follows its own guidance
        np.testing.assert_array_equal(run(hybrid, ("pose", "depth"), scale), alone)


def test_resume_and_reproducibility(models, head, tmp_path):
    """2 then 4 images == 4 at once, byte for byte; nothing redone; other settings refused."""
    once, twice = tmp_path / "once", tmp_path / "twice"
    _run(models, head, once, ("pose",), 4)
    first, _ = _run(models, head, twice, ("pose",), 2)
    assert first.generated == 2
    mtimes = {p: p.stat().st_mtime_ns for p in twice.rglob("*.png")}
    second, _ = _run(models, head, twice, ("pose",), 4)
    assert (second.generated, second.skipped) == (2, 2)
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())  # none redone
    a, b = _pngs(once), _pngs(twice)
    assert len(b) == 4 and len(set(b.values())) == 4  # 4 distinct images, no duplicate
    assert a == b  # same seed -> same PNG bytes on CPU
    third, _ = _run(models, head, twice, ("pose",), 4)
    assert (third.generated, third.skipped) == (0, 4)
    other, _ = _run(models, head, tmp_path / "other", ("pose",), 1, "--seed", "1")
    assert _pngs(tmp_path / "other")["00000/img00000000.png"] != a["00000/img00000000.png"]
    with pytest.raises(ValueError, match=r"other settings .*datagen\.json"):
        _run(models, head, twice, ("pose",), 4, "--steps", "3")


def test_clip_scorer_matches_clip_model(models):
    from transformers import CLIPModel, CLIPProcessor

    from data_gen.pipelines import check_model
    from data_gen.prompts import load_prompt_data

    prompts = load_prompt_data().clip_prompts
    scorer = ClipViewScorer(check_model(str(models["clip"]), "--clip", "model"), prompts)
    images = np.random.default_rng(0).integers(0, 256, (3, RES, RES, 3), dtype=np.uint8)
    probs = scorer(images)
    assert probs.shape == (3, 3)
    np.testing.assert_allclose(probs.sum(1), 1, atol=1e-6)
    model = CLIPModel.from_pretrained(models["clip"])
    proc = CLIPProcessor.from_pretrained(models["clip"])
    texts = [t for v in PROMPT_VIEWS for t in prompts[v]]
    with torch.no_grad():
        logits = model(**proc(text=texts, images=list(images), return_tensors="pt",
                              padding=True)).logits_per_image  # fmt: skip
    p = torch.softmax(logits, -1).numpy()
    expected = np.stack([p[:, 0:2].sum(1), p[:, 2:4].sum(1), p[:, 4:6].sum(1)], 1)
    np.testing.assert_allclose(probs, expected, atol=1e-6)


def test_judge():
    front, side, back = np.eye(3)
    assert judge([front, back, side], ["front", "back", "side"]) == [None] * 3
    reasons = judge([front, back, side, front], ["back", "front", "front", "side"])
    assert reasons[0] == ("CLIP sees a front view (p=1.000) on a back camera (p=0.000); "
                          "rule opposite, margin 0.0")  # fmt: skip
    assert reasons[1].startswith("CLIP sees a back view") and reasons[2:] == [None, None]
    assert judge([side], ["front"], rule="any")[0].startswith("CLIP sees a side view")
    close = np.array([0.45, 0.1, 0.45 - 1e-3])
    assert judge([close], ["back"], margin=0.01) == [None]
    assert judge([close], ["back"], margin=0.0)[0] is not None


class _Scorer:
    """Deterministic view scorer: CLIP's answers per call, counted."""

    def __init__(self, *views):
        self.views, self.calls = views, 0

    def __call__(self, images):
        view = self.views[min(self.calls, len(self.views) - 1)]
        self.calls += 1
        return np.tile(np.eye(3)[PROMPT_VIEWS.index(view)], (len(images), 1))


def test_filter_regenerates_with_the_next_seed(models, head, tmp_path):
    out = tmp_path / "set"
    scorer = _Scorer("front", "back")  # a face on every back view, then backs of heads
    extra = ("--clip", str(models["clip"]), "--yaw", "150:180")
    summary, _ = _run(models, head, out, ("pose",), 2, *extra, scorer=scorer)
    assert (summary.generated, summary.rejected, scorer.calls) == (2, 2, 2)
    rejected = [json.loads(line) for line in (out / R.REJECTED).read_text().splitlines()]
    assert [(r["index"], r["attempt"], r["seed"]) for r in rejected] == [
        (i, 0, R.image_seed(0, i, 0)) for i in (0, 1)]  # fmt: skip
    assert rejected[0]["reason"].startswith("CLIP sees a front view (p=1.000) on a back camera")
    with open_eg3d(out) as ds:
        assert [m["seed"] for m in ds.meta] == [R.image_seed(0, i, 1) for i in (0, 1)]


def test_filter_leaves_gaps_and_resume_redoes_nothing(models, head, tmp_path):
    cfg = Cameras(resolution=RES).mannequin(("pose",))
    seed = next(s for s in range(50)
                if 0 < sum(np.abs(view_angles(cfg.__class__(**{**cfg.__dict__, "seed": s}),
                                              range(4))[0]) >= 135) < 4)  # fmt: skip
    yaw = view_angles(cfg.__class__(**{**cfg.__dict__, "seed": seed}), range(4))[0]
    backs = [i for i in range(4) if abs(yaw[i]) >= 135]
    out, extra = tmp_path / "set", ("--clip", str(models["clip"]), "--seed", str(seed))
    (tmp_path / "cfg.yaml").write_text("max_attempts: 2\n")
    extra += ("--config", str(tmp_path / "cfg.yaml"))
    summary, _ = _run(models, head, out, ("pose",), 4, *extra, scorer=_Scorer("front"))
    assert summary.gaps == backs and summary.rejected == 2 * len(backs)
    rejected = [json.loads(line) for line in (out / R.REJECTED).read_text().splitlines()]
    assert sorted((r["index"], r["attempt"]) for r in rejected) == [
        (i, a) for i in backs for a in (0, 1)]  # fmt: skip
    with open_eg3d(out) as ds:  # still a valid dataset, without the gaps
        assert len(ds) == 4 - len(backs)
        assert ds.names == tuple(f"00000/img{i:08d}.png" for i in range(4) if i not in backs)
    assert json.loads((out / R.MANIFEST).read_text())["gaps"] == backs
    scorer = _Scorer("front")
    again, _ = _run(models, head, out, ("pose",), 4, *extra, scorer=scorer)
    assert (again.generated, again.rejected, scorer.calls, again.skipped) == (0, 0, 0, 4)
    assert len((out / R.REJECTED).read_text().splitlines()) == 2 * len(backs)


def test_lora_changes_the_images(models, head, tmp_path):
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    unet = UNet2DConditionModel.from_pretrained(models["base"], subfolder="unet")
    unet.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v"]))
    torch.manual_seed(0)
    with torch.no_grad():  # peft starts B at 0 (a no-op adapter): make it a real style
        for name, param in unet.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.5)
    StableDiffusionPipeline.save_lora_weights(
        tmp_path / "lora", unet_lora_layers=get_peft_model_state_dict(unet)
    )
    _run(models, head, tmp_path / "plain", ("depth",), 1)
    _run(models, head, tmp_path / "styled", ("depth",), 1, "--lora", str(tmp_path / "lora"))
    assert _pngs(tmp_path / "plain") != _pngs(tmp_path / "styled")
    settings = json.loads((tmp_path / "styled" / R.SETTINGS).read_text())
    assert settings["loras"] == [str((tmp_path / "lora").resolve())]


def _error(models, tmp_path, argv):
    return R.job_from_args(R.build_parser().parse_args(argv))


@pytest.mark.parametrize(
    "change, error, match",
    [
        (["--base-model", "./no/such/model"], FileNotFoundError,
         r"--base-model ./no/such/model: no such directory, and not a hub id"),
        (["--base-model", "{pose}"], ValueError,
         r"--base-model .*cn_pose: not a diffusers pipeline directory \(no model_index.json\)"),
        (["--controlnet", "pose={base}/unet/x"], FileNotFoundError, "pose=.*no such directory"),
        (["--controlnet", "depth={base}/vae/config.json"], ValueError, "is a file"),
        (["--controlnet", "pose"], ValueError, r"--controlnet 'pose': expected KIND=PATH_OR_ID"),
        (["--controlnet", "canny=x/y"], ValueError, r"KIND in \('pose', 'depth'\)"),
        (["--yaw", "30:-30"], ValueError, r"--yaw \(config yaw_range\) 30:-30: inverted range"),
        (["--pitch", "20:10"], ValueError, r"--pitch \(config pitch_range\) 20:10: inverted"),
        (["--pitch=-95:10"], ValueError, r"--pitch: expected MIN:MAX within \[-90, 90\]"),
        (["--yaw", "left"], ValueError, r"--yaw='left': expected MIN:MAX"),
        (["--styles", "{empty}"], ValueError, "the style list is empty"),
        (["--scheduler", "Fancy"], ValueError, "scheduler 'Fancy': not a diffusers scheduler"),
        (["--res", "60"], ValueError, r"--res 60: expected a multiple of 8"),
        (["--clip", "{base}"], ValueError, r"--clip .*sd: not a model directory \(no config.json"),
        (["--head-mesh", "{base}/head.obj"], FileNotFoundError, "head.obj"),
    ],
)  # fmt: skip
def test_bad_input(models, tmp_path, change, error, match):
    (tmp_path / "empty.yaml").write_text("[]\n")
    fill = dict(base=models["base"], pose=models["pose"], empty=tmp_path / "empty.yaml")
    change = [c.format(**fill) for c in change]
    argv = _argv(models, tmp_path / "out", ())
    if change[0] != "--controlnet":
        argv += ["--controlnet", f"pose={models['pose']}"]
    argv += change
    if change[0] == "--base-model":
        argv[argv.index("--base-model", 0) + 1] = change[1]
    with pytest.raises(error, match=match):
        R.job_from_args(R.build_parser().parse_args(argv))
    assert not (tmp_path / "out").exists()


def test_guidance_without_its_controlnet(models):
    cfg = DataGenConfig(guidance=("pose", "depth"), cameras=Cameras(resolution=RES))
    with pytest.raises(
        ValueError, match=r"needs a ControlNet for \['depth'\].*--controlnet depth="
    ):
        make_job(cfg, base=str(models["base"]), controlnets={"pose": str(models["pose"])})
    with pytest.raises(ValueError, match="--controlnet depth=... given but guidance"):
        make_job(
            DataGenConfig(guidance=("pose",)),
            base=str(models["base"]),
            controlnets={"pose": str(models["pose"]), "depth": str(models["depth"])},
        )


def test_main_reports_bad_input(models, tmp_path, capsys):
    argv = _argv(models, tmp_path / "out", ("pose",), 4, "--controlnet", "pose=x/y")
    assert R.main(argv) == 2
    assert "error: --controlnet: pose given twice" in capsys.readouterr().err


def test_model_references(models, tmp_path):
    from data_gen.pipelines import ModelRef, check_model

    hub = "stable-diffusion-v1-5/stable-diffusion-v1-5"
    assert check_model(hub, "--base-model", "pipeline") == ModelRef(hub, False)  # no fetch
    local = check_model(str(models["pose"]), "--controlnet pose=", "model")
    assert local == ModelRef(str(models["pose"].resolve()), True)
    for spec in ("owner/name/extra", "~/models/sd", "just-a-name"):
        with pytest.raises(FileNotFoundError, match="no such directory, and not a hub id"):
            check_model(spec, "--base-model", "pipeline")
    (tmp_path / "style.safetensors").write_bytes(b"")
    assert check_model(str(tmp_path / "style.safetensors"), "--lora", "lora").local
    with pytest.raises(ValueError, match=r"--lora .*: not a LoRA directory"):
        check_model(str(tmp_path), "--lora", "lora")
