"""Stable Diffusion 1.5-class pipelines with one ControlNet (pose or depth) or two through
MultiControlNetModel (hybrid), any diffusers scheduler by class name, optional LoRA.

Every model is a hub id ("owner/name", fetched by diffusers) or a local directory (loaded
with local_files_only, so nothing is fetched). `check_model` validates a reference without
importing torch, so bad input fails before any model loads.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np

GUIDANCE_KINDS = ("pose", "depth")  # hybrid = both, in this order
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")
# What makes a folder a model of each role (diffusers pipeline, single model, CLIP, LoRA).
MARKERS = {
    "pipeline": ("model_index.json",),
    "model": ("config.json",),
    "lora": ("pytorch_lora_weights.safetensors", "pytorch_lora_weights.bin"),
}


@dataclasses.dataclass(frozen=True)
class ModelRef:
    """A model given by the user: an absolute local path (local=True) or a hub id."""

    spec: str
    local: bool


def check_model(spec: str, flag: str, role: str) -> ModelRef:
    """Validate a hub id or local model folder for `role` (MARKERS) -> ModelRef.

    An existing path must be a folder holding one of the role's marker files (a LoRA may
    also be a .safetensors file); a path that does not exist must look like a hub id.
    """
    path = Path(spec).expanduser()
    markers = MARKERS[role]
    if path.exists():
        if role == "lora" and path.is_file() and path.suffix in (".safetensors", ".bin"):
            return ModelRef(str(path.resolve()), True)
        if not path.is_dir():
            raise ValueError(f"{flag} {spec}: is a file; expected a model directory holding "
                             f"{' or '.join(markers)}")  # fmt: skip
        if not any((path / m).is_file() for m in markers):
            kind = {"pipeline": "diffusers pipeline", "model": "model", "lora": "LoRA"}[role]
            raise ValueError(f"{flag} {spec}: not a {kind} directory (no {' or '.join(markers)})")
        return ModelRef(str(path.resolve()), True)
    looks_local = spec.startswith((".", "/", "~")) or spec.count("/") != 1
    if looks_local or not _HUB_ID.fullmatch(spec):
        raise FileNotFoundError(
            f"{flag} {spec}: no such directory, and not a hub id "
            "(owner/name, e.g. stable-diffusion-v1-5/stable-diffusion-v1-5)"
        )
    return ModelRef(spec, False)


def parse_controlnets(values: list[str]) -> dict[str, str]:
    """--controlnet KIND=PATH_OR_ID, once or twice -> {kind: spec} in GUIDANCE_KINDS order."""
    if not values:
        raise ValueError("--controlnet: give pose=PATH_OR_ID and/or depth=PATH_OR_ID")
    nets: dict[str, str] = {}
    for value in values:
        kind, sep, spec = value.partition("=")
        kind = kind.strip()
        if not sep or not spec.strip() or kind not in GUIDANCE_KINDS:
            raise ValueError(
                f"--controlnet {value!r}: expected KIND=PATH_OR_ID with KIND in "
                f"{GUIDANCE_KINDS}, e.g. pose=lllyasviel/sd-controlnet-openpose"
            )
        if kind in nets:
            raise ValueError(f"--controlnet: {kind} given twice ({nets[kind]!r}, {spec!r})")
        nets[kind] = spec.strip()
    return {k: nets[k] for k in GUIDANCE_KINDS if k in nets}


def check_scheduler(name: str) -> str:
    """A diffusers scheduler class name (e.g. UniPCMultistepScheduler) -> the name."""
    import diffusers

    cls = getattr(diffusers, name, None) if name.endswith("Scheduler") else None
    if cls is None or not issubclass(cls, diffusers.SchedulerMixin):
        raise ValueError(
            f"scheduler {name!r}: not a diffusers scheduler class; e.g. "
            "UniPCMultistepScheduler, DDIMScheduler, EulerAncestralDiscreteScheduler"
        )
    return name


def device_dtype(device: str) -> str:
    """A torch device -> the pipeline's dtype name: fp32 on CPU, fp16 on a GPU."""
    return "float32" if device == "cpu" else "float16"


def torch_device(device: str) -> tuple[str, str]:
    """'auto' | 'cpu' | 'cuda[:N]' -> (device, dtype name), checked on this machine."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"--device {device}: no CUDA device available")
    return device, device_dtype(device)


def load_pipeline(base: ModelRef, controlnets: dict[str, ModelRef], *, scheduler: str,
                  device: str, dtype: str, loras: tuple[ModelRef, ...] = (),
                  lora_scale: float = 1.0):  # fmt: skip
    """-> a StableDiffusionControlNetPipeline on `device` (one ControlNet, or a
    MultiControlNetModel over `controlnets` in their order), no safety checker."""
    import diffusers
    import torch

    torch_dtype = getattr(torch, dtype)
    nets = [
        diffusers.ControlNetModel.from_pretrained(ref.spec, dtype=torch_dtype,
                                                  local_files_only=ref.local)
        for ref in controlnets.values()
    ]  # fmt: skip
    controlnet = nets[0] if len(nets) == 1 else diffusers.MultiControlNetModel(nets)
    pipe = diffusers.StableDiffusionControlNetPipeline.from_pretrained(
        base.spec, controlnet=controlnet, safety_checker=None, feature_extractor=None,
        requires_safety_checker=False, dtype=torch_dtype, local_files_only=base.local,
    )  # fmt: skip
    pipe.scheduler = getattr(diffusers, scheduler).from_config(pipe.scheduler.config)
    if loras:
        names = []
        for i, ref in enumerate(loras):
            path = Path(ref.spec)
            kwargs = dict(weight_name=path.name) if ref.local and path.is_file() else {}
            spec = str(path.parent) if kwargs else ref.spec
            pipe.load_lora_weights(spec, adapter_name=f"style{i}", local_files_only=ref.local,
                                   **kwargs)  # fmt: skip
            names.append(f"style{i}")
        pipe.set_adapters(names, [lora_scale] * len(names))
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def generate(pipe, prompts: list[str], negatives: list[str], guidance: dict[str, np.ndarray],
             seeds: list[int], *, steps: int, guidance_scale: float,
             controlnet_scale: tuple[float, ...]) -> np.ndarray:  # fmt: skip
    """One batch: prompts [B], guidance {kind: uint8 [B, H, W, 3]} (the pipeline's
    ControlNets' order), seeds [B] -> uint8 [B, H, W, 3].

    Each image's initial noise comes from its own CPU torch.Generator(seed), so an image
    depends on its seed, not on the batch it was made in (up to float rounding of batched
    kernels).
    """
    import torch
    from PIL import Image

    # One ControlNet: a list of B images. Several: B lists of one image per ControlNet
    # (diffusers transposes them; a per-ControlNet layout is misread when B = #nets).
    # One ControlNet: B images. Several: B lists of one image per ControlNet (diffusers
    # transposes them; a per-ControlNet layout would be misread whenever B = #ControlNets).
    conds = [[Image.fromarray(x) for x in images] for images in guidance.values()]
    height, width = next(iter(guidance.values())).shape[1:3]
    out = pipe(
        prompt=prompts, negative_prompt=negatives,
        image=conds[0] if len(conds) == 1 else [list(per) for per in zip(*conds, strict=True)],
        controlnet_conditioning_scale=(controlnet_scale[0] if len(conds) == 1
                                       else list(controlnet_scale)),
        num_inference_steps=steps, guidance_scale=guidance_scale, height=height, width=width,
        generator=[torch.Generator("cpu").manual_seed(int(s)) for s in seeds],
        output_type="np",
    ).images  # fmt: skip
    return (np.asarray(out, np.float32) * 255).round().clip(0, 255).astype(np.uint8)
