"""Synthesise a multi-view avatar dataset with Stable Diffusion + ControlNet (DESIGN §5).

    python -m data_gen.run --out DIR --base-model PATH_OR_ID --controlnet pose=PATH_OR_ID \
        [--controlnet depth=PATH_OR_ID] --num-images N --res R --steps S [--styles FILE] \
        [--seed K] [--config FILE] [--batch B] [--head-mesh MESH --keypoints JSON] \
        [--clip PATH_OR_ID] [--lora PATH_OR_ID ...] [--scheduler NAME] [--no-filter]

Two --controlnet flags = hybrid guidance. --config FILE is YAML with any of: resolution,
seed, yaw_range, pitch_range, radius, fov, views_per_id, steps, guidance_scale,
controlnet_scale, scheduler, lora_scale, filter, filter_rule, filter_margin, max_attempts,
lora (list), device, batch; flags given on the command line win.

Output: an EG3D dataset folder (styleavatar_jax.data.eg3d_format), as make-dataset writes:

    DIR/dataset.json                      labels + meta (prompt, negative_prompt, seed, style, view)
    DIR/00000/img00000000.png             generated images
    DIR/guidance/{pose,depth}/00000/...   the guidance each image was made from
    DIR/datagen.json                      the settings that define the images
    DIR/rejected.jsonl                    view-filter rejections: index, attempt, seed, why
    DIR/manifest.json                     counts, and the indices left out (gaps)

Image i: camera from (seed, i) (data_gen.guidance); attempt a of it uses torch seed
`image_seed(seed, i, a)`, which also seeds its prompt. When the view filter rejects an
attempt, the image is redone with the next attempt's seed (same camera, new prompt and
noise), up to max_attempts; after that the index stays a gap (dataset.json lists only the
images written, so the set stays valid; `open_eg3d` indexes by list position).

Resuming: the EG3D writer's records mark finished images and rejected.jsonl the rejected
attempts, so a restart skips finished images, retries nothing already rejected and
duplicates nothing; a larger --num-images extends the set. A restart with settings other
than datagen.json's is an error.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from data_gen import prompts
from data_gen.config import Job, make_config, make_job, read_config_file
from data_gen.guidance import render_guidance
from data_gen.pipelines import generate, load_pipeline, parse_controlnets, torch_device
from data_gen.view_filter import ClipViewScorer, Scorer, judge
from styleavatar_jax import cameras
from styleavatar_jax.data.eg3d_format import EG3DWriter
from styleavatar_jax.data.source import encode_rgb
from styleavatar_jax.files import write_atomic

SETTINGS = "datagen.json"
REJECTED = "rejected.jsonl"
MANIFEST = "manifest.json"


def image_seed(seed: int, index: int, attempt: int) -> int:
    """The torch (and prompt) seed of attempt `attempt` at image `index` -> int in [0, 2³²)."""
    return int(np.random.SeedSequence([seed, index, attempt]).generate_state(1)[0])


def image_prompt(job: Job, yaw: float, pitch: float, seed: int) -> prompts.Prompt:
    return prompts.build_prompt(job.prompt_data, yaw, pitch, np.random.default_rng(seed))


def read_rejected(path: Path) -> dict[int, int]:
    """rejected.jsonl -> {index: attempts rejected}. A last line cut off by an interrupt is
    ignored (that attempt is simply redone)."""
    counts: dict[int, int] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            counts[rec["index"]] = max(counts.get(rec["index"], 0), rec["attempt"] + 1)
    return counts


def _append_line(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


@dataclasses.dataclass
class Summary:
    generated: int = 0  # images written by this call
    rejected: int = 0  # attempts rejected by this call
    skipped: int = 0  # images already finished (or exhausted) before this call
    gaps: list[int] = dataclasses.field(default_factory=list)  # all indices left out


def make_dataset(job: Job, out: str | Path, num_images: int, *, batch: int = 4,
                 device: str = "auto", scorer: Scorer | None = None, pipe=None,
                 progress: bool = True) -> Summary:  # fmt: skip
    """Write (or finish, or extend) the dataset in `out` (module doc) -> Summary.

    scorer: view probabilities per image (view_filter.Scorer); None builds the CLIP scorer
    when job.filtering. pipe: an already loaded pipeline; None loads the job's.
    """
    if num_images < 1 or batch < 1:
        raise ValueError(f"--num-images {num_images}, --batch {batch}: expected >= 1")
    cfg, out = job.cfg, Path(out)
    device, dtype = torch_device(device)
    settings = out / SETTINGS
    text = job.settings_json(dtype)
    if settings.exists() and settings.read_text() != text:
        raise ValueError(f"{out} holds a data_gen set made with other settings ({settings}); "
                         "use another --out, or the same settings to resume")  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    write_atomic(settings, lambda f: f.write(text.encode()))
    writer = EG3DWriter(out)
    attempts = read_rejected(out / REJECTED)
    todo = [i for i in range(num_images)
            if not writer.done(i) and attempts.get(i, 0) < cfg.max_attempts]  # fmt: skip
    summary = Summary(skipped=num_images - len(todo))
    if todo:
        pipe = pipe or load_pipeline(job.base, job.controlnets, scheduler=cfg.scheduler,
                                     device=device, dtype=dtype, loras=job.loras,
                                     lora_scale=cfg.lora_scale)  # fmt: skip
        if scorer is None and job.filtering:
            scorer = ClipViewScorer(job.clip, job.prompt_data.clip_prompts, device)
        if not job.filtering:
            scorer = None
    bar = _progress(num_images, summary.skipped, progress)
    for start in range(0, len(todo), batch):
        chunk = np.asarray(todo[start : start + batch])
        # Fixed-size batches (the last padded): the mannequin renderer compiles once.
        padded = np.concatenate([chunk, np.full(batch - len(chunk), chunk[-1])])
        views = {k: v[: len(chunk)] for k, v in
                 render_guidance(cfg.cameras, cfg.guidance, padded, job.head).items()}  # fmt: skip
        pending = list(range(len(chunk)))
        while pending:
            pending = _attempt(job, pipe, writer, views, chunk, pending, attempts, scorer,
                               summary, bar)  # fmt: skip
    bar.close()
    summary.gaps = [i for i in range(num_images) if not writer.done(i)]
    if not writer.done_indices:
        raise RuntimeError(f"{out}: every image was rejected by the view filter; see "
                           f"{out / REJECTED}")  # fmt: skip
    writer.finish()
    manifest = dict(num_images=num_images, written=len(writer.done_indices), gaps=summary.gaps,
                    rejected_attempts=sum(attempts.values()))  # fmt: skip
    payload = (json.dumps(manifest, indent=1) + "\n").encode()
    write_atomic(out / MANIFEST, lambda f: f.write(payload))
    return summary


def _attempt(job: Job, pipe, writer: EG3DWriter, views: dict, chunk: np.ndarray,
             pending: list[int], attempts: dict[int, int], scorer: Scorer | None,
             summary: Summary, bar) -> list[int]:  # fmt: skip
    """Generate the current attempt of images chunk[pending]; write those kept, record
    those rejected -> positions to try again."""
    cfg, out = job.cfg, writer.root
    index = [int(chunk[j]) for j in pending]
    seeds = [image_seed(cfg.cameras.seed, i, attempts.get(i, 0)) for i in index]
    yaw, pitch = views["yaw"][pending], views["pitch"][pending]
    ps = [
        image_prompt(job, float(y), float(p), s) for y, p, s in zip(yaw, pitch, seeds, strict=True)
    ]
    images = generate(pipe, [p.positive for p in ps], [p.negative for p in ps],
                      {k: views[k][pending] for k in cfg.guidance}, seeds, steps=cfg.steps,
                      guidance_scale=cfg.guidance_scale, controlnet_scale=cfg.scales)  # fmt: skip
    probs = scorer(images) if scorer is not None else None
    reasons = (
        judge(probs, [p.view for p in ps], rule=cfg.filter_rule, margin=cfg.filter_margin)
        if probs is not None
        else [None] * len(index)
    )
    again = []
    for k, (j, i) in enumerate(zip(pending, index, strict=True)):
        if reasons[k] is None:
            name = writer.name(i)
            for kind in cfg.guidance:
                data = encode_rgb(views[kind][j], "PNG")
                path = out / "guidance" / kind / Path(name).with_suffix(".png")
                path.parent.mkdir(parents=True, exist_ok=True)
                write_atomic(path, lambda f, data=data: f.write(data))
            group = str(cameras.view_group(np.radians(yaw[k])))
            meta = dict(identity=int(views["identity"][j]), seed=seeds[k], yaw=float(yaw[k]),
                        pitch=float(pitch[k]), prompt=ps[k].positive,
                        negative_prompt=ps[k].negative, style=ps[k].style, view=group)  # fmt: skip
            writer.write(i, images[k], views["label"][j], meta)
            summary.generated += 1
            bar.update(1)
            continue
        _append_line(out / REJECTED, dict(
            index=i, attempt=attempts.get(i, 0), seed=seeds[k], camera_view=ps[k].view,
            yaw=float(yaw[k]), pitch=float(pitch[k]),
            clip_probs=dict(zip(prompts.PROMPT_VIEWS, np.round(probs[k], 4).tolist(), strict=True)),
            reason=reasons[k], prompt=ps[k].positive,
        ))  # fmt: skip
        attempts[i] = attempts.get(i, 0) + 1
        summary.rejected += 1
        if attempts[i] < cfg.max_attempts:
            again.append(j)
        else:
            bar.update(1)
    return again


def _progress(total: int, done: int, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="img", disable=not enabled, desc="data_gen",
                dynamic_ncols=True)  # fmt: skip


def _range(text: str, flag: str) -> list[float]:
    from styleavatar_jax.cameras import parse_range

    return list(parse_range(text, flag))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_gen.run", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="dataset folder (created, or resumed)")
    p.add_argument("--base-model", required=True, help="SD 1.5-class pipeline: hub id or folder")
    p.add_argument(
        "--controlnet",
        action="append",
        default=[],
        metavar="KIND=PATH_OR_ID",
        help="pose=... and/or depth=... (both: hybrid)",
    )
    p.add_argument("--num-images", type=int, required=True)
    p.add_argument("--res", type=int, dest="resolution", help="image side (default 512)")
    p.add_argument("--steps", type=int, help="denoising steps (default 20)")
    p.add_argument("--seed", type=int)
    p.add_argument("--styles", help="YAML list of styles (default: data_gen/prompt_data)")
    p.add_argument("--config", help="YAML file of settings (module doc)")
    p.add_argument("--batch", type=int, help="images per pipeline call (default 4)")
    p.add_argument("--head-mesh", help="the 3D head: a mesh (default: the procedural mannequin)")
    p.add_argument("--keypoints", help="the mesh's keypoints JSON (default MESH.keypoints.json)")
    p.add_argument("--clip", help="CLIP model (hub id or folder): turns on the view filter")
    p.add_argument("--no-filter", action="store_true", help="keep every image even with --clip")
    p.add_argument("--lora", action="append", help="LoRA style weights (hub id, folder, file)")
    p.add_argument("--scheduler", help="diffusers scheduler class (default UniPCMultistep)")
    p.add_argument("--guidance-scale", type=float)
    p.add_argument("--yaw", help="MIN:MAX degrees (default -180:180)")
    p.add_argument("--pitch", help="MIN:MAX degrees (default -30:30)")
    p.add_argument("--radius", type=float)
    p.add_argument("--fov", type=float, help="degrees")
    p.add_argument("--device", help="auto | cpu | cuda[:N] (fp16 on GPU, fp32 on CPU)")
    p.add_argument("--no-progress", action="store_true")
    return p


def job_from_args(args: argparse.Namespace) -> tuple[Job, dict]:
    """Parsed flags -> (Job, run options {batch, device}); every check before any load."""
    values = read_config_file(args.config) if args.config else {}
    flags = dict(resolution=args.resolution, steps=args.steps, seed=args.seed,
                 scheduler=args.scheduler, guidance_scale=args.guidance_scale,
                 radius=args.radius, fov=args.fov, batch=args.batch, device=args.device,
                 yaw_range=_range(args.yaw, "--yaw") if args.yaw else None,
                 pitch_range=_range(args.pitch, "--pitch") if args.pitch else None,
                 lora=args.lora)  # fmt: skip
    values |= {k: v for k, v in flags.items() if v is not None}
    if args.no_filter:
        values["filter"] = False
    nets = parse_controlnets(args.controlnet)
    cfg = make_config(tuple(nets), values)
    job = make_job(cfg, base=args.base_model, controlnets=nets,
                   loras=tuple(values.get("lora") or ()), clip=args.clip, styles=args.styles,
                   head_mesh=args.head_mesh, keypoints=args.keypoints)  # fmt: skip
    return job, dict(batch=int(values.get("batch", 4)), device=values.get("device", "auto"))


def main(argv: list[str] | None = None, *, scorer: Callable | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        job, opts = job_from_args(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    s = make_dataset(job, args.out, args.num_images, scorer=scorer,
                     progress=not args.no_progress, **opts)  # fmt: skip
    print(f"{args.out}: wrote {s.generated} images ({s.skipped} done before), "
          f"{s.rejected} attempts rejected, {len(s.gaps)} gaps")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
