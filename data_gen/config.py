"""What defines a data_gen set: the generation settings, the models, the prompts, the head.

`DataGenConfig` holds every number (defaults here; a YAML --config file and the flags
override them). `Job` bundles it with the checked model references, the prompt lists and
the head; building a Job validates everything, before any model is loaded.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml

from data_gen import prompts
from data_gen.guidance import Cameras, MeshHead
from data_gen.pipelines import (
    GUIDANCE_KINDS,
    ModelRef,
    check_model,
    check_scheduler,
)
from data_gen.view_filter import RULES


@dataclasses.dataclass(frozen=True)
class DataGenConfig:
    guidance: tuple[str, ...] = ("pose",)  # ControlNets used, GUIDANCE_KINDS order; 2 = hybrid
    cameras: Cameras = Cameras()
    steps: int = 20
    guidance_scale: float = 7.5  # classifier-free guidance
    controlnet_scale: tuple[float, ...] = ()  # per ControlNet; () = 1.0 each
    scheduler: str = "UniPCMultistepScheduler"  # a diffusers scheduler class name
    lora_scale: float = 1.0
    filter: bool = True  # the CLIP view filter, when a CLIP model is given
    filter_rule: str = "opposite"  # view_filter.RULES
    filter_margin: float = 0.0  # probability CLIP's view must beat the camera's view by
    max_attempts: int = 3  # seeds tried per image before it is left out (a gap)

    def __post_init__(self):
        g, r = self.guidance, self.cameras.resolution
        checks = [
            (
                g in ((k,) for k in GUIDANCE_KINDS) or g == GUIDANCE_KINDS,
                f"guidance {g}: expected ('pose',), ('depth',) or ('pose', 'depth') (hybrid)",
            ),
            (r % 8 == 0 and 64 <= r <= 2048, f"--res {r}: expected a multiple of 8 in [64, 2048]"),
            (self.steps >= 1, f"--steps {self.steps}: expected at least 1"),
            (self.guidance_scale >= 0, f"guidance_scale {self.guidance_scale}: expected >= 0"),
            (
                len(self.controlnet_scale) in (0, len(g)),
                f"controlnet_scale {self.controlnet_scale}: expected one scale per ControlNet {g}",
            ),
            (
                self.filter_rule in RULES,
                f"filter_rule {self.filter_rule!r}: expected one of {RULES}",
            ),
            (0 <= self.filter_margin < 1, f"filter_margin {self.filter_margin}: expected [0, 1)"),
            (self.max_attempts >= 1, f"max_attempts {self.max_attempts}: expected at least 1"),
            (self.cameras.views_per_id >= 1, "views_per_id: expected at least 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        self.cameras.mannequin(g)  # validates yaw/pitch ranges, radius, fov
        check_scheduler(self.scheduler)

    @property
    def scales(self) -> tuple[float, ...]:
        return self.controlnet_scale or (1.0,) * len(self.guidance)


_CAMERA_KEYS = {f.name for f in dataclasses.fields(Cameras)}
_CONFIG_KEYS = {f.name for f in dataclasses.fields(DataGenConfig)} - {"cameras", "guidance"}
FILE_KEYS = _CAMERA_KEYS | _CONFIG_KEYS | {"lora", "device", "batch"}


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML mapping of FILE_KEYS (module doc of run.py) -> dict; unknown keys are errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--config {path}: no such file")
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ValueError(f"--config {path}: not valid YAML ({e})") from None
    if not isinstance(doc, dict):
        raise ValueError(f"--config {path}: expected a mapping of settings")
    unknown = sorted(set(doc) - FILE_KEYS)
    if unknown:
        raise ValueError(f"--config {path}: unknown keys {unknown}; allowed: {sorted(FILE_KEYS)}")
    return doc


def make_config(guidance: tuple[str, ...], values: dict[str, Any]) -> DataGenConfig:
    """guidance kinds and a flat {key: value} (file keys, flags) -> DataGenConfig."""
    cams = {k: values[k] for k in _CAMERA_KEYS if values.get(k) is not None}
    for key in ("yaw_range", "pitch_range"):
        if key in cams:
            cams[key] = tuple(float(v) for v in cams[key])
            flag = "--" + key.split("_")[0]
            if len(cams[key]) != 2:
                raise ValueError(
                    f"{flag} (config {key}) {values[key]}: expected [MIN, MAX] degrees"
                )
            if cams[key][0] > cams[key][1]:
                raise ValueError(
                    f"{flag} (config {key}) {cams[key][0]:g}:{cams[key][1]:g}: "
                    "inverted range; expected MIN:MAX with MIN <= MAX"
                )
    rest = {k: values[k] for k in _CONFIG_KEYS if values.get(k) is not None}
    if "controlnet_scale" in rest:
        scale = rest["controlnet_scale"]
        rest["controlnet_scale"] = tuple(map(float, scale if isinstance(scale, list) else [scale]))
    return DataGenConfig(guidance=guidance, cameras=Cameras(**cams), **rest)


@dataclasses.dataclass(frozen=True)
class Job:
    """Everything that defines the images (a resumed run must match it: `settings_json`)."""

    cfg: DataGenConfig
    base: ModelRef
    controlnets: dict[str, ModelRef]  # kind -> model, cfg.guidance order
    loras: tuple[ModelRef, ...]
    clip: ModelRef | None
    prompt_data: prompts.PromptData
    head: MeshHead | None  # None: the procedural mannequin

    @property
    def filtering(self) -> bool:
        return self.clip is not None and self.cfg.filter

    def settings_json(self, dtype: str) -> str:
        """The settings that define the images (not: image count, batch, device)."""
        doc = dict(
            config=dataclasses.asdict(self.cfg), dtype=dtype, base=self.base.spec,
            controlnets={k: v.spec for k, v in self.controlnets.items()},
            loras=[r.spec for r in self.loras],
            clip=self.clip.spec if self.filtering else None,
            prompt_data=self.prompt_data.digest(),
            head="mannequin" if self.head is None else f"mesh sha256 {self.head.digest}",
        )  # fmt: skip
        return json.dumps(doc, indent=1, sort_keys=True) + "\n"


def make_job(cfg: DataGenConfig, *, base: str, controlnets: dict[str, str],
             loras: tuple[str, ...] = (), clip: str | None = None, styles: str | None = None,
             head_mesh: str | None = None, keypoints: str | None = None) -> Job:  # fmt: skip
    """Check every input (models exist and are of their kind, styles non-empty, the mesh
    and keypoints readable) -> Job. Raises ValueError / FileNotFoundError naming the flag."""
    missing = [k for k in cfg.guidance if k not in controlnets]
    if missing:
        raise ValueError(f"guidance {cfg.guidance} needs a ControlNet for {missing}: give "
                         f"--controlnet {missing[0]}=PATH_OR_ID")  # fmt: skip
    unused = [k for k in controlnets if k not in cfg.guidance]
    if unused:
        raise ValueError(f"--controlnet {unused[0]}=... given but guidance {cfg.guidance} "
                         "does not use it")  # fmt: skip
    if keypoints and not head_mesh:
        raise ValueError("--keypoints given without --head-mesh")
    nets = {k: check_model(controlnets[k], f"--controlnet {k}=", "model") for k in cfg.guidance}
    return Job(
        cfg=cfg, base=check_model(base, "--base-model", "pipeline"), controlnets=nets,
        loras=tuple(check_model(s, "--lora", "lora") for s in loras),
        clip=check_model(clip, "--clip", "model") if clip else None,
        prompt_data=prompts.load_prompt_data(styles),
        head=MeshHead.load(head_mesh, keypoints) if head_mesh else None,
    )  # fmt: skip
