"""`make-dataset mannequin`: a multi-view dataset of procedural mannequins, exact cameras.

Image i shows identity i // views_per_id from a camera drawn for i alone (yaw and pitch
uniform in their ranges, from `np.random.default_rng([seed, i])`), so any image can be
(re)made on its own: an interrupted run resumes where it stopped and redoes nothing.

Layout (an EG3D dataset folder, readable by `open_dataset`):

    OUT/dataset.json                   labels (25 floats) and meta per image
    OUT/00000/img00000000.png          colour images
    OUT/guidance/depth/00000/img....png  MiDaS-style inverse depth (ControlNet depth)
    OUT/guidance/pose/00000/img....png   OpenPose drawing (ControlNet openpose)

Each image's guidance files are written (atomically) before its colour image, and the
colour image's record marks it done. EG3D's own train.py lists every image under its
root: point it at a copy without guidance/ (or make the set with --guidance none).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from pathlib import Path

import jax
import numpy as np

from styleavatar_jax import cameras
from styleavatar_jax.data.eg3d_format import EG3DWriter
from styleavatar_jax.data.source import encode_rgb
from styleavatar_jax.files import write_atomic
from styleavatar_jax.heads import guidance, head_render, keypoints, mannequin, openpose

GUIDANCE_KINDS = ("depth", "pose")


@dataclasses.dataclass(frozen=True)
class MannequinDatasetConfig:
    num_ids: int = 500
    views_per_id: int = 16
    resolution: int = 128
    seed: int = 0
    yaw_range: tuple[float, float] = (-180.0, 180.0)  # degrees
    pitch_range: tuple[float, float] = (-30.0, 30.0)  # degrees
    radius: float = cameras.RADIUS
    fov: float = cameras.FOV_DEGREES  # degrees
    supersample: int = 1  # render at k·res and box-filter down (anti-aliasing, k² the cost)
    guidance: tuple[str, ...] = GUIDANCE_KINDS
    image_format: str = "png"
    batch: int = 8  # images per render call

    def __post_init__(self):
        checks = [
            (self.num_ids >= 1, "--num-ids must be at least 1"),
            (self.views_per_id >= 1, "--views-per-id must be at least 1"),
            (8 <= self.resolution <= 4096, "--res must be in [8, 4096]"),
            (1 <= self.supersample <= 4, "--supersample must be 1..4"),
            (self.radius > 0.8, "--radius must exceed 0.8 (the bust's bounding sphere)"),
            (0 < self.fov < 120, "--fov must be in (0, 120) degrees"),
            (self.yaw_range[0] <= self.yaw_range[1], "--yaw: expected MIN:MAX with MIN <= MAX"),
            (-90 <= self.pitch_range[0] <= self.pitch_range[1] <= 90,
             "--pitch: expected MIN:MAX within [-90, 90]"),
            (set(self.guidance) <= set(GUIDANCE_KINDS),
             f"--guidance: expected a subset of {GUIDANCE_KINDS} or 'none'"),
            (self.batch >= 1, "batch must be at least 1"),
        ]  # fmt: skip
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{message}; got {self}")

    @property
    def num_images(self) -> int:
        return self.num_ids * self.views_per_id


def view_angles(cfg: MannequinDatasetConfig, indices: Iterable[int]) -> tuple[np.ndarray, ...]:
    """Image indices [N] -> yaw [N], pitch [N] in degrees (float32), one RNG per image."""
    yaw, pitch = [], []
    for i in indices:
        u = np.random.default_rng([cfg.seed, int(i)]).random(2)
        yaw.append(cfg.yaw_range[0] + u[0] * (cfg.yaw_range[1] - cfg.yaw_range[0]))
        pitch.append(cfg.pitch_range[0] + u[1] * (cfg.pitch_range[1] - cfg.pitch_range[0]))
    return np.asarray(yaw, np.float32), np.asarray(pitch, np.float32)


def view_labels(cfg: MannequinDatasetConfig, yaw_deg, pitch_deg) -> np.ndarray:
    """Degrees [N] -> EG3D labels [N, 25]: orbit and look at the origin (the head centre)."""
    pose = cameras.pose_from_angles(np.deg2rad(yaw_deg), np.deg2rad(pitch_deg), cfg.radius,
                                    (0.0, 0.0, 0.0))  # fmt: skip
    return np.asarray(cameras.make_label(pose, cameras.fov_to_intrinsics(cfg.fov)), np.float32)


def _downsample(x: np.ndarray, k: int) -> np.ndarray:
    """[B, kH, kW, C] -> [B, H, W, C] box filter."""
    if k == 1:
        return x
    b, h, w, c = x.shape
    return x.reshape(b, h // k, k, w // k, k, c).mean(axis=(2, 4))


def render_views(cfg: MannequinDatasetConfig, indices: np.ndarray) -> dict[str, np.ndarray]:
    """Images `indices` [N] -> rgb uint8 [N, H, W, 3], label [N, 25], yaw/pitch [N] (deg),
    identity [N], and the guidance images (uint8 [N, H, W, 3]) asked for."""
    res, k = cfg.resolution, cfg.supersample
    yaw, pitch = view_angles(cfg, indices)
    c = view_labels(cfg, yaw, pitch)
    ids = indices // cfg.views_per_id
    ident = mannequin.sample_identities(cfg.seed, ids)
    out = jax.device_get(head_render.render(ident, c, resolution=res * k))
    rgb = _downsample(out["rgb"], k)
    result = dict(rgb=np.round(rgb * 255).astype(np.uint8), label=c, yaw=yaw, pitch=pitch,
                  identity=ids)  # fmt: skip
    if "depth" in cfg.guidance:
        depth = guidance.depth_guidance(out["depth"], out["mask"])
        result["depth"] = _downsample(depth.astype(np.float32), k).round().astype(np.uint8)
    if "pose" in cfg.guidance:
        kp = keypoints.mannequin_keypoints(ident)
        vis = keypoints.visible_keypoints(kp["body"], kp["face"], kp["face_normal"], c,
                                          out["depth"])  # fmt: skip
        result["pose"] = openpose.draw_poses(*jax.device_get(vis), height=res, width=res)
    return result


def make_mannequin_dataset(cfg: MannequinDatasetConfig, out: str | Path, *, progress=True):
    """Write (or finish) the dataset in `out` -> path of its dataset.json. Rendering runs in
    fixed-size batches (the last one padded) so it compiles once."""
    out = Path(out)
    settings = out / "mannequin.json"
    settings_text = _settings_json(cfg)
    if settings.exists() and settings.read_text() != settings_text:
        raise ValueError(
            f"{out} holds a mannequin dataset made with other settings ({settings}); "
            "use another --out or the same settings to resume"
        )
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(settings, lambda f: f.write(settings_text.encode()))
    writer = EG3DWriter(out, image_format=cfg.image_format)
    todo = np.array([i for i in range(cfg.num_images) if not writer.done(i)], np.int64)
    bar = _progress(cfg.num_images, cfg.num_images - len(todo), progress)
    for start in range(0, len(todo), cfg.batch):
        chunk = todo[start : start + cfg.batch]
        padded = np.concatenate([chunk, np.full(cfg.batch - len(chunk), chunk[-1])])
        views = render_views(cfg, padded)
        for j, i in enumerate(chunk):
            name = writer.name(int(i))
            for kind in cfg.guidance:
                data = encode_rgb(views[kind][j], "PNG")
                path = out / "guidance" / kind / Path(name).with_suffix(".png")
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(path, lambda f, data=data: f.write(data))
            view = str(cameras.view_group(np.radians(views["yaw"][j])))
            meta = dict(identity=int(views["identity"][j]), seed=cfg.seed,
                        yaw=float(views["yaw"][j]), pitch=float(views["pitch"][j]),
                        style="mannequin", view=view)  # fmt: skip
            writer.write(int(i), views["rgb"][j], views["label"][j], meta)
        bar.update(len(chunk))
    bar.close()
    return writer.finish()


def _settings_json(cfg: MannequinDatasetConfig) -> str:
    """What defines the images (the batch size does not)."""
    settings = dataclasses.asdict(cfg)
    del settings["batch"]
    return json.dumps(settings, indent=1, sort_keys=True) + "\n"


def _progress(total: int, done: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="img", disable=not enabled,
                desc="mannequin", dynamic_ncols=True)  # fmt: skip
