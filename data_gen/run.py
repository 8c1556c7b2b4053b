"""Synthesise a multi-view avatar dataset with Stable Diffusion + ControlNet (DESIGN §5).

    python -m data_gen.run --out DIR --base-model PATH_OR_ID --controlnet pose=PATH_OR_ID \
        [--controlnet depth=PATH_OR_ID] --num-images N --res R --steps S [--styles FILE] \
        [--seed K] [--config FILE] [--batch B] [--head-mesh MESH --keypoints JSON] \
        [--clip PATH_OR_ID] [--lora PATH_OR_ID ...] [--scheduler NAME] [--no-filter] \
        [--ray [ADDRESS] [--actors N]]

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

(data_gen.output: every file is written whole, then renamed into place.)

Image i: camera from (seed, i) (data_gen.guidance); attempt a of it uses torch seed
`image_seed(seed, i, a)`, which also seeds its prompt. When the view filter rejects an
attempt, the image is redone with the next attempt's seed (same camera, new prompt and
noise), up to max_attempts; after that the index stays a gap (dataset.json lists only the
images written, so the set stays valid; `open_eg3d` indexes by list position).

Resuming: the work is done in chunks of --batch consecutive indices (data_gen.work). A
restart makes only the chunks with an image missing, each one whole, so that every image
comes out of the same batch as in an uninterrupted run (the same bytes); it writes only the
missing images and records only new rejections. A larger --num-images extends the set. A
restart with settings other than datagen.json's is an error. Ctrl-C stops with exit status
130; the same command resumes.

--ray [ADDRESS] does the same work on a Ray cluster (data_gen.cluster): one actor per GPU
(--actors N), the images written by the actors, dataset.json and the manifest by this process.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Callable
from pathlib import Path

from data_gen import cluster
from data_gen.config import Job, make_config, make_job, read_config_file
from data_gen.output import MANIFEST, REJECTED, SETTINGS
from data_gen.pipelines import parse_controlnets, torch_device
from data_gen.view_filter import Scorer
from data_gen.work import (
    ChunkMaker,
    Summary,
    conclude,
    image_prompt,
    image_seed,
    plan_items,
    plan_run,
    progress_bar,
)
from styleavatar_jax.files import as_path

__all__ = ["MANIFEST", "REJECTED", "SETTINGS", "Summary", "image_prompt", "image_seed", "main",
           "make_dataset"]  # fmt: skip


def make_dataset(job: Job, out: str | Path, num_images: int, *, batch: int = 4,
                 device: str = "auto", scorer: Scorer | None = None, pipe=None,
                 progress: bool = True) -> Summary:  # fmt: skip
    """Write (or finish, or extend) the dataset in `out` (module doc) in this process ->
    Summary.

    scorer: view probabilities per image (view_filter.Scorer); None builds the CLIP scorer
    when job.filtering. pipe: an already loaded pipeline; None loads the job's.
    """
    out = as_path(out)
    device, dtype = torch_device(device)
    chunks, before = plan_run(job, out, num_images, batch, dtype)
    if chunks:
        maker = ChunkMaker.load(job, out, device, dtype, batch, pipe=pipe, scorer=scorer)
        with progress_bar(num_images, len(before.finished), progress) as bar:
            for chunk in chunks:
                made = maker(plan_items(job, chunk))
                bar.update(made.generated + made.given_up)
    return conclude(out, num_images, before)


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
    p.add_argument(
        "--ray",
        nargs="?",
        const="",
        metavar="ADDRESS",
        help="spread the work over a Ray cluster: HOST:PORT of its head, auto, or "
        "nothing (a local Ray, or $RAY_ADDRESS); needs the [ray] extra",
    )
    p.add_argument("--actors", type=int,
                   help="with --ray: pipeline actors (default: one per GPU of the cluster, "
                        "1 without GPUs)")  # fmt: skip
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
    """Run the command -> exit status: 0 done, 2 bad input (one line on stderr naming the
    flag; nothing loaded yet), 130 interrupted (Ctrl-C: the same command resumes).
    scorer: the view filter's Scorer in this process (tests); None: CLIP, when --clip."""
    args = build_parser().parse_args(argv)
    on_ray = args.ray is not None
    try:
        if on_ray:
            cluster.require_ray()  # before the checks below import diffusers
        elif args.actors is not None:
            raise ValueError(f"--actors {args.actors}: only with --ray")
        job, opts = job_from_args(args)
        session = cluster.connect(args.ray) if on_ray else contextlib.nullcontext()
    except (ValueError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    progress = not args.no_progress
    try:
        with session:
            s = (cluster.make_dataset(job, args.out, args.num_images, actors=args.actors,
                                      progress=progress, **opts)
                 if on_ray else
                 make_dataset(job, args.out, args.num_images, scorer=scorer, progress=progress,
                              **opts))  # fmt: skip
    except KeyboardInterrupt:
        print(f"{args.out}: interrupted; the images written are kept: run the same command "
              "again to finish", file=sys.stderr)  # fmt: skip
        return 130
    print(f"{args.out}: wrote {s.generated} images ({s.skipped} done before), "
          f"{s.rejected} attempts rejected, {len(s.gaps)} gaps")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
