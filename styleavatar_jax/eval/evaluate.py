"""Evaluate G_ema of a run directory: FID, KID, SWD and multi-view consistency.

Metric names (EG3D/StyleGAN style):
    fid50k, fid1k, fidNk   FID, N·1000 generated images vs every real image (EG3D's
                           fid50k_full); plain `fid` takes --num images.
    kid50k, kidNk, kid     KID (StyleGAN2-ADA: 100 subsets of ≤ 1000), same image sets.
    swd, swdNk             PGGAN's SWD (eval/swd.py) on min(N·1000, #real) images of each
                           set (default 4k; images kept in memory), at G's resolution; also
                           per view group, each beside its floor: the SWD between two
                           disjoint real sets (`swd_floor`).
    consistency            depth reprojection error (eval/consistency.py) over
                           min(#fake, 64) seeds × 8 yaws × (yaw, yaw + 20°).
    clip_view, clip_viewNk CLIP as a zero-shot view estimator: pose accuracy of generated
                           images against their cameras' view groups (eval/clip_metrics.py;
                           needs --clip); default 1000 images.
    clip_score, clip_scoreNk  CLIPScore of generated images against --clip-prompt.
    pose_acc, pose_accNk   pose accuracy with a trained yaw-bin CNN (eval/view_classifier.py;
                           needs EvalSettings.view_classifier): the fraction of generated
                           images whose predicted bin is their camera's, overall and per
                           view group, beside the classifier's held-out accuracy on real
                           images ('real_accuracy'; target: 'ratio' = value / real ≥ 0.9);
                           default 1000 images.
Generated images (`generate.py`): seeds 0..N−1, each at a camera drawn with replacement
from the dataset's labels (`--cameras dataset`, EG3D's protocol) or uniformly over 360°
yaw and ±30° pitch on the config's orbit (`random`), conditioned on that camera. FID and
KID are also reported per view group of each image's camera (real images by their label,
fakes by theirs): front, side (left ∪ right) and back, from `cameras.view_group`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Iterable
from pathlib import Path

import jax
import numpy as np

from styleavatar_jax import cameras
from styleavatar_jax.convert.inception import file_sha256
from styleavatar_jax.data.source import read_images
from styleavatar_jax.eval import consistency, fid, generate, swd
from styleavatar_jax.eval.groups import GROUPS, label_groups
from styleavatar_jax.sampling import SampleSettings

DEFAULT_NUM = {"fid": 50_000, "kid": 50_000, "swd": 4096, "consistency": 64,
               "clip_view": 1000, "clip_score": 1000, "pose_acc": 1000}  # fmt: skip
CLIP_KINDS = ("clip_view", "clip_score")
CONSISTENCY_YAWS = tuple(range(0, 360, 45))


@dataclasses.dataclass(frozen=True)
class MetricSpec:
    name: str  # as asked: 'fid50k', 'kid', 'swd', ...
    kind: str  # fid | kid | swd | consistency | clip_view | clip_score | pose_acc
    num: int | None  # images (fid/kid/swd) or seeds (consistency); None = --num or default


def parse_metrics(spec: str | Iterable[str]) -> tuple[MetricSpec, ...]:
    """'fid50k,kid50k,swd,consistency' -> MetricSpecs; ValueError naming a bad one."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec)]
    out = []
    for name in names:
        m = re.fullmatch(r"(fid|kid|swd|clip_view|clip_score|pose_acc)(?:(\d+)k)?(?:_full)?|"
                         r"(consistency)", name)  # fmt: skip
        if not m:
            raise ValueError(f"--metrics: unknown metric {name!r}; expected fid, fidNk "
                             f"(e.g. fid50k), kid, kidNk, swd, swdNk, consistency, clip_view, "
                             f"clip_score or pose_acc")  # fmt: skip
        kind = m[1] or m[3]
        out.append(MetricSpec(name, kind, int(m[2]) * 1000 if m[2] else None))
    if not out or len({s.name for s in out}) != len(out):
        raise ValueError(f"--metrics={spec!r}: expected distinct metric names")
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    metrics: tuple[MetricSpec, ...]
    num: int | None = None  # generated images for every metric (overrides the names' N)
    batch: int = 32  # images per compiled call (G and Inception), a multiple of the devices
    truncation_psi: float = 1.0
    camera_source: str = "dataset"  # or "random"
    seed: int = 0  # camera draws and real subsets; z comes from seeds 0..N−1
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    view_classifier: str | None = None  # pose_acc: a `view_classifier.save_classifier` file

    def __post_init__(self):
        if self.camera_source not in ("dataset", "random"):
            raise ValueError(f"--cameras={self.camera_source!r}: expected dataset or random")
        if self.num is not None and self.num < 2:
            raise ValueError(f"--num={self.num}: need at least 2 images")

    def count(self, spec: MetricSpec) -> int:
        if self.num is not None:
            return self.num
        return spec.num if spec.num is not None else DEFAULT_NUM[spec.kind]


# ------------------------------------------------------------------ real images
def real_features_of(source, extract: fid.FeatureExtractor, *, progress: bool = True):
    """Inception features of every image of `source` -> float32 [N, 2048]."""
    bar = _progress(len(source), "real", progress)
    feats = []
    for start in range(0, len(source), extract.batch):
        images = read_images(source, np.arange(start, min(start + extract.batch, len(source))))
        feats.append(extract(images))
        bar.update(len(images))
    bar.close()
    return np.concatenate(feats)


# ------------------------------------------------------------------ metrics on features
def distribution_metric(kind: str, real, fake, settings: EvalSettings) -> float:
    if kind == "fid":
        return fid.fid_from_features(real, fake)
    return fid.kid_from_features(real, fake, num_subsets=settings.kid_subsets,
                                 max_subset_size=settings.kid_subset_size,
                                 seed=settings.seed)  # fmt: skip


def grouped(kind: str, real, real_groups, fake, fake_groups, settings: EvalSettings) -> dict:
    """FID/KID over all images and per view group -> {'value', 'num_real', 'num_fake',
    'groups': {group: {...} or value None with a reason when a side has < 2 images}}."""
    out = {"value": distribution_metric(kind, real, fake, settings),
           "num_real": len(real), "num_fake": len(fake), "groups": {}}  # fmt: skip
    for g in GROUPS:
        r, f = real[real_groups == g], fake[fake_groups == g]
        entry = {"num_real": len(r), "num_fake": len(f)}
        if min(len(r), len(f)) >= 2:
            entry["value"] = distribution_metric(kind, r, f, settings)
        else:
            entry["value"] = None
            entry["reason"] = "fewer than 2 images in a set"
        out["groups"][g] = entry
    return out


def swd_floor(reals, groups, seed: int, min_res: int, other=None, other_groups=None) -> dict:
    """The SWD two real sets reach: reals [n, R, R, 3] against `other` [m, R, R, 3] (a
    second real set, e.g. held-out images) or, when None, one random half of `reals`
    against the other (n/2 images a side, so an upper estimate of the floor at n: the SWD
    of finite sets grows as they shrink). groups, other_groups [n], [m]: view groups ->
    {'value', 'levels', 'method', 'groups': {g: value or None}}."""
    if other is None:
        perm = np.random.default_rng(seed).permutation(len(reals))
        half_a, half_b = perm[: len(reals) // 2], perm[len(reals) // 2 :]
        other, other_groups = reals[half_b], groups[half_b]
        reals, groups, method = reals[half_a], groups[half_a], "halves of the real images"
    else:
        method = "real images vs a second real set"
    out = {"method": method, "groups": {}}
    if min(len(reals), len(other)) >= 2:
        both = swd.swd(reals, other, seed=seed, min_res=min_res)
        out |= {"value": both["mean"], "levels": both["levels"]}
    else:
        out |= {"value": None, "levels": {}}
    for g in GROUPS:
        a, b = reals[groups == g], other[other_groups == g]
        ok = min(len(a), len(b)) >= 2
        out["groups"][g] = swd.swd(a, b, seed=seed, min_res=min_res)["mean"] if ok else None
    return out


def grouped_swd(fakes, fake_groups, reals, real_groups, seed: int, min_res: int) -> dict:
    """SWD of fakes vs reals ([N, R, R, 3] each, groups [N]) over all images and per view
    group -> {'value', 'levels', 'groups': {g: {'value', 'num_real', 'num_fake'}}}; a
    group's value is None (with a reason) when a side has < 2 images."""
    out = swd.swd(fakes, reals, seed=seed, min_res=min_res)
    result = {"value": out["mean"], "levels": out["levels"], "groups": {}}
    for g in GROUPS:
        f, r = fakes[fake_groups == g], reals[real_groups == g]
        entry = {"num_real": len(r), "num_fake": len(f)}
        if min(len(r), len(f)) >= 2:
            entry["value"] = swd.swd(f, r, seed=seed, min_res=min_res)["mean"]
        else:
            entry |= {"value": None, "reason": "fewer than 2 images in a set"}
        result["groups"][g] = entry
    return result


# ------------------------------------------------------------------ the run
def _progress(total: int, desc: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="img", disable=not enabled, dynamic_ncols=True)


def evaluate(
    G,
    variables,
    cfg_camera: dict,
    source,
    settings: EvalSettings,
    *,
    mesh,
    neural_res: int,
    truncation_cutoff: int | None = 14,
    inception: dict | None = None,
    real_features: np.ndarray | None = None,
    clip=None,
    clip_prompt: str | None = None,
    floor_source=None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Metrics of G (variables: G_ema) against the real images of `source` (an ImageSource)
    -> {'metrics': {name: result}, 'protocol': {...}}. inception: Flax variables (FID/KID);
    real_features [len(source), 2048]: `real_features_of(source, ...)` computed before
    (training callbacks reuse them), else computed here. clip: a `convert.clip.Clip` for
    clip_view / clip_score (with clip_prompt). floor_source: a second real ImageSource (e.g.
    held-out images) for the SWD floor; None: two halves of the real images."""
    specs = settings.metrics
    kinds = {s.kind for s in specs}
    if kinds & {"fid", "kid"} and inception is None:
        raise ValueError("fid/kid need Inception weights (--inception)")
    if kinds & set(CLIP_KINDS) and clip is None:
        raise ValueError("clip_view/clip_score need a CLIP model (--clip PATH_OR_HUB_ID)")
    if "clip_score" in kinds and not (clip_prompt or "").strip():
        raise ValueError("clip_score needs a text prompt (--clip-prompt 'a 3D avatar ...')")
    if "pose_acc" in kinds:
        from styleavatar_jax.eval import view_classifier as vc

        if settings.view_classifier is None:
            raise ValueError("pose_acc needs a view classifier file (--view-classifier FILE, "
                             "from train_view_classifier)")  # fmt: skip
        classifier, classifier_meta = vc.load_classifier(settings.view_classifier)
    sample = SampleSettings(neural_res=neural_res, truncation_psi=settings.truncation_psi,
                            truncation_cutoff=truncation_cutoff, noise_mode="const")  # fmt: skip
    n_real = len(source)
    rng = np.random.default_rng(settings.seed)
    n_swd = max((min(settings.count(s), n_real) for s in specs if s.kind == "swd"), default=0)
    n_fid = max((settings.count(s) for s in specs if s.kind in ("fid", "kid")), default=0)
    n_clip = max((settings.count(s) for s in specs if s.kind in CLIP_KINDS), default=0)
    n_pose = max((settings.count(s) for s in specs if s.kind == "pose_acc"), default=0)
    n_fake = max(n_fid, n_swd, n_clip, n_pose)
    result: dict = {"metrics": {}}
    protocol = {
        "num_real": n_real, "num_fake": n_fake, "cameras": settings.camera_source,
        "truncation_psi": settings.truncation_psi, "truncation_cutoff": truncation_cutoff,
        "noise_mode": "const", "neural_res": neural_res, "seed": settings.seed,
        "batch": settings.batch, "devices": mesh.size, "dataset": source.path,
        "groups": "front |yaw| < 45°, side 45–135°, back > 135° (cameras.view_group)",
    }  # fmt: skip

    # fake cameras and images
    if settings.camera_source == "dataset":
        fake_labels = source.labels[rng.integers(0, n_real, n_fake)]
    else:
        fake_labels = generate.random_labels(jax.random.key(settings.seed), n_fake, cfg_camera)
    fake_groups, real_groups = label_groups(fake_labels), label_groups(source.labels)
    extract = fid.FeatureExtractor(inception, settings.batch, mesh) if inception else None
    fake_feats, fake_keep, fake_clip, fake_bins = [], [], [], []
    if n_fake:
        bar = _progress(n_fake, "generated", progress)
        for images, _ in generate.render_batches(
            G, variables, np.arange(n_fake), fake_labels, fake_labels, sample,
            batch=settings.batch, mesh=mesh,
        ):  # fmt: skip
            images = fid.to_uint8(images)
            if extract is not None:
                fake_feats.append(extract(images))
            if n_clip and sum(len(e) for e in fake_clip) < n_clip:
                fake_clip.append(np.asarray(clip.embed_images(images)))
            if n_pose and sum(len(b) for b in fake_bins) < n_pose:
                vc.check_resolution(classifier_meta, images.shape[1], settings.view_classifier)
                fake_bins.append(vc.predict(classifier, images))
            kept = sum(len(k) for k in fake_keep)
            if kept < n_swd:
                fake_keep.append(images[: n_swd - kept])
            bar.update(len(images))
        bar.close()

    if kinds & {"fid", "kid"}:
        real_feats = real_features if real_features is not None else \
            real_features_of(source, extract, progress=progress)  # fmt: skip
        if len(real_feats) != n_real:
            raise ValueError(f"real_features: {len(real_feats)} rows for {n_real} images")
        fake_feats = np.concatenate(fake_feats)
        for s in specs:
            if s.kind in ("fid", "kid"):
                n = settings.count(s)
                result["metrics"][s.name] = grouped(
                    s.kind, real_feats, real_groups, fake_feats[:n], fake_groups[:n], settings
                )

    for s in specs:
        if s.kind == "swd":
            n = min(settings.count(s), n_real)
            fakes = np.concatenate(fake_keep)[:n]
            real_idx = np.sort(rng.choice(n_real, n, replace=False))
            reals = read_images(source, real_idx)
            if reals.shape[1:] != fakes.shape[1:]:
                raise ValueError(f"swd: real images {reals.shape[1:]} and generated images "
                                 f"{fakes.shape[1:]} differ in resolution")  # fmt: skip
            min_res = min(16, fakes.shape[1])
            out = grouped_swd(fakes, fake_groups[:n], reals, real_groups[real_idx],
                              seed=settings.seed, min_res=min_res)  # fmt: skip
            other = other_groups = None
            if floor_source is not None:
                m = min(n, len(floor_source))
                pick = np.sort(
                    np.random.default_rng(settings.seed).choice(len(floor_source), m, replace=False)
                )
                other, other_groups = read_images(floor_source, pick), \
                    label_groups(floor_source.labels[pick])  # fmt: skip
                protocol["swd_floor_dataset"] = floor_source.path
            floor = swd_floor(reals, real_groups[real_idx], settings.seed, min_res, other,
                              other_groups)  # fmt: skip
            for g, v in floor.pop("groups").items():
                out["groups"][g]["floor"] = v
            result["metrics"][s.name] = out | {"num_real": n, "num_fake": n, "floor": floor}
        elif s.kind == "consistency":
            n = min(settings.num or DEFAULT_NUM["consistency"], DEFAULT_NUM["consistency"])
            bar = _progress(n * len(CONSISTENCY_YAWS), "consistency pairs", progress)
            out = consistency.generator_consistency(
                G, variables, list(range(n)), sample, cfg_camera, batch=settings.batch,
                mesh=mesh, yaws_deg=CONSISTENCY_YAWS, progress=bar.update,
            )  # fmt: skip
            bar.close()
            protocol["consistency"] = out.pop("protocol")
            result["metrics"][s.name] = {"value": out.pop("error")} | out
        elif s.kind == "pose_acc":
            n = settings.count(s)
            yaw, _ = cameras.label_angles(fake_labels[:n])
            out = vc.pose_accuracy(np.concatenate(fake_bins)[:n], np.asarray(yaw),
                                   classifier_meta["bins"])  # fmt: skip
            real = classifier_meta.get("heldout_accuracy")
            out |= {"real_accuracy": real, "ratio": out["value"] / real if real else None}
            result["metrics"][s.name] = out
            protocol["view_classifier"] = inception_record(settings.view_classifier) | {
                k: classifier_meta.get(k) for k in ("bins", "resolution", "heldout", "data")
            }
        elif s.kind in CLIP_KINDS:
            from styleavatar_jax.eval import clip_metrics

            n = settings.count(s)
            emb = np.concatenate(fake_clip)[:n]
            if s.kind == "clip_view":
                views = np.asarray(clip.embed_texts([clip_metrics.VIEW_PROMPTS[g] for g in GROUPS]))
                result["metrics"][s.name] = clip_metrics.view_accuracy(emb, views, fake_groups[:n])
                protocol["clip_view_prompts"] = clip_metrics.VIEW_PROMPTS
            else:
                text = np.asarray(clip.embed_texts([clip_prompt]))[0]
                result["metrics"][s.name] = {"value": clip_metrics.clip_score(emb, text),
                                             "num_fake": n, "prompt": clip_prompt}  # fmt: skip
    result["protocol"] = protocol
    for name, r in result["metrics"].items():
        log(f"{name}: {_fmt(r.get('value'))}" + "".join(
            f"  {g} {_fmt(v.get('value', v.get('error')))}" +
            (f" (floor {_fmt(v['floor'])})" if "floor" in v else "")
            for g, v in r.get("groups", {}).items()
        ) + (f"  floor {_fmt(r['floor']['value'])}" if "floor" in r else "")
          + (f"  real {_fmt(r['real_accuracy'])}" if "real_accuracy" in r else ""))  # fmt: skip
    return result


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def metrics_path(run_dir: str | Path, step: int) -> Path:
    from styleavatar_jax.files import as_path

    return as_path(run_dir) / f"metrics-{step}.json"


def write_result(path: Path, result: dict) -> Path:
    from styleavatar_jax.files import write_atomic

    text = json.dumps(result, indent=2, sort_keys=False, default=_json_default) + "\n"
    return write_atomic(path, lambda f: f.write(text.encode()))


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def inception_record(path: str | Path) -> dict:
    return {"path": str(Path(path).absolute()), "sha256": file_sha256(path)}
