"""Dataset subcommands of `styleavatar-jax`.

make-dataset mannequin --num-ids 500 --views-per-id 16 --res 128 --out DIR
dataset-info DIR [--plot cameras.png] [--strict]
preview DIR --out grid.png [--num 16] [--cols 8] [--guidance]
convert-dataset SRC DEST --to tfds|eg3d
mirror-dataset SRC [DEST]
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np

from styleavatar_jax.cameras import parse_range
from styleavatar_jax.cli.args import check_output, nonnegative_int, positive_int


def cmd_make_dataset(args, overrides) -> int:
    from styleavatar_jax.checkpoint import is_run_dir
    from styleavatar_jax.heads.make_mannequin import MannequinDatasetConfig, make_mannequin_dataset

    check_output(args.out, "--out", folder=True)
    if is_run_dir(args.out):
        raise ValueError(f"--out={args.out}: is a training run directory (config.json and "
                         "checkpoints/); choose a new folder for the dataset")  # fmt: skip
    guidance = () if args.guidance == "none" else tuple(
        g.strip() for g in args.guidance.split(",") if g.strip())  # fmt: skip
    cfg = MannequinDatasetConfig(
        num_ids=args.num_ids, views_per_id=args.views_per_id, resolution=args.res,
        seed=args.seed, yaw_range=parse_range(args.yaw, "--yaw"),
        pitch_range=parse_range(args.pitch, "--pitch"), radius=args.radius, fov=args.fov,
        supersample=args.supersample, guidance=guidance, image_format=args.format,
        batch=args.batch,
    )  # fmt: skip
    path = make_mannequin_dataset(cfg, args.out, progress=not args.no_progress)
    print(f"wrote {cfg.num_images} images of {cfg.num_ids} identities: {path}")
    return 0


def cmd_dataset_info(args, overrides) -> int:
    from styleavatar_jax.data import camera_check
    from styleavatar_jax.data.formats import open_dataset
    from styleavatar_jax.data.source import check_images

    if args.plot:
        check_output(args.plot, "--plot", suffixes=(".png",))
    with open_dataset(args.dir) as ds:
        ids = Counter(m["identity"] for m in ds.meta)
        views = Counter(m["view"] for m in ds.meta if m["view"])
        print(f"{ds.path}: {len(ds)} images at {ds.resolution}², "
              f"{len(ids) if -1 not in ids else 'unknown'} identities")  # fmt: skip
        if views:
            print("views: " + ", ".join(f"{k} {v}" for k, v in sorted(views.items())))
        stats = camera_check.label_stats(ds.labels)
        for key in ("radius", "fov"):
            v = stats[key]
            print(f"{key}: min {v.min():.4g}  mean {v.mean():.4g}  max {v.max():.4g}")
        print("yaw (degrees; 0 = front, + = camera on the person's left):")
        print(camera_check.text_histogram(stats["yaw"], 12, (-180, 180)))
        print("pitch (degrees; + = camera above):")
        print(camera_check.text_histogram(stats["pitch"], 18, (-90, 90)))
        problems = camera_check.validate_labels(ds.labels, list(ds.names), resolution=ds.resolution)
        bad = len({p.name for p in problems})
        if problems:
            print(f"cameras: {bad} of {len(ds)} labels look wrong:")
            print(camera_check.summarize_problems(problems))
        else:
            print(f"cameras: all {len(ds)} labels are valid EG3D cameras aimed at the head")
        print(f"images: all {check_images(ds)} decode")  # a damaged one: its name, exit 2
        if args.plot:
            from styleavatar_jax.data.source import encode_rgb
            from styleavatar_jax.export.camera_plot import camera_plot
            from styleavatar_jax.files import write_atomic

            data = encode_rgb(camera_plot(ds.labels), "PNG")
            write_atomic(args.plot, lambda f: f.write(data))
            print(f"camera plot: {args.plot}")
    return 1 if problems and args.strict else 0


def cmd_preview(args, overrides) -> int:
    from PIL import Image, ImageDraw

    from styleavatar_jax.data.formats import open_dataset
    from styleavatar_jax.export.grid import write_png

    if args.num < 1 or args.cols < 1 or args.size < 16:
        raise ValueError("--num and --cols must be at least 1 and --size at least 16")
    check_output(args.out, "--out", suffixes=(".png",))
    with open_dataset(args.dir) as ds:
        picks = np.unique(np.linspace(0, len(ds) - 1, min(args.num, len(ds))).round().astype(int))
        kinds = ["image"] + (["depth", "pose"] if args.guidance else [])
        tiles = []
        for i in picks:
            item = ds[int(i)]
            for kind in kinds:
                if kind == "image":
                    pixels = item["image"]
                else:
                    path = (
                        Path(args.dir) / "guidance" / kind / Path(item["name"]).with_suffix(".png")
                    )
                    if not path.is_file():
                        raise FileNotFoundError(f"--guidance: {path} does not exist")
                    pixels = np.asarray(Image.open(path).convert("RGB"))
                tile = Image.fromarray(pixels).resize((args.size, args.size), Image.LANCZOS)
                canvas = Image.new("RGB", (args.size, args.size + 14), (255, 255, 255))
                canvas.paste(tile, (0, 0))
                caption = f"id {item['identity']} yaw {item['yaw']:.0f} pitch {item['pitch']:.0f}"
                ImageDraw.Draw(canvas).text((2, args.size + 1), caption if kind == "image"
                                            else kind, fill=(0, 0, 0))  # fmt: skip
                tiles.append(np.asarray(canvas))
    cols = args.cols * len(kinds)
    rows = -(-len(tiles) // cols)
    blank = np.full_like(tiles[0], 255)
    tiles += [blank] * (rows * cols - len(tiles))
    grid = np.stack(tiles).reshape(rows, cols, *tiles[0].shape)
    grid = grid.transpose(0, 2, 1, 3, 4).reshape(rows * tiles[0].shape[0], -1, 3)
    write_png(args.out, grid)
    print(f"preview of {len(picks)} images: {args.out}")
    return 0


def cmd_convert_dataset(args, overrides) -> int:
    from styleavatar_jax.data import tfds_format

    if args.to == "tfds":
        path = tfds_format.eg3d_to_tfds(args.src, args.dest)
    else:
        path = tfds_format.tfds_to_eg3d(args.src, args.dest)
    print(f"wrote {path}")
    return 0


def cmd_mirror_dataset(args, overrides) -> int:
    from styleavatar_jax.data import eg3d_format

    print(f"wrote {eg3d_format.write_mirrored(args.src, args.dest)}")
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make-dataset", help="render a multi-view dataset (exact cameras)")
    p.add_argument("kind", choices=("mannequin",), help="what to render")
    p.add_argument("--out", required=True, help="dataset folder (resumes if it exists)")
    p.add_argument("--num-ids", type=positive_int, default=500, help="identities")
    p.add_argument("--views-per-id", type=positive_int, default=16, help="images per identity")
    p.add_argument("--res", type=positive_int, default=128, help="image resolution")
    p.add_argument(
        "--seed", type=nonnegative_int, default=0, help="identities and cameras come from it"
    )
    p.add_argument(
        "--yaw", default="-180:180", help="yaw range MIN:MAX, degrees (write --yaw=-90:90)"
    )
    p.add_argument(
        "--pitch", default="-30:30", help="pitch range MIN:MAX, degrees (write --pitch=-30:30)"
    )
    p.add_argument("--radius", type=float, default=2.7, help="camera distance")
    p.add_argument("--fov", type=float, default=18.837, help="field of view, degrees")
    p.add_argument("--supersample", type=positive_int, default=1, help="k×k rays per pixel")
    p.add_argument("--guidance", default="depth,pose", help="depth,pose | depth | pose | none")
    p.add_argument("--format", default="png", choices=("png", "jpeg"), help="image files")
    p.add_argument("--batch", type=positive_int, default=8, help="images per render call")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(fn=cmd_make_dataset)

    p = sub.add_parser("dataset-info", help="counts, camera histograms, camera validator; "
                       "decodes every image")  # fmt: skip
    p.add_argument("dir", help="EG3D folder or zip, or tfds directory")
    p.add_argument("--plot", metavar="PNG", help="also draw the cameras around the head")
    p.add_argument("--strict", action="store_true", help="exit 1 when a label looks wrong")
    p.set_defaults(fn=cmd_dataset_info)

    p = sub.add_parser("preview", help="a captioned grid of a dataset's images")
    p.add_argument("dir", help="EG3D folder or zip, or tfds directory")
    p.add_argument("--out", required=True, help="PNG to write")
    p.add_argument("--num", type=positive_int, default=16, help="images, evenly spaced in the set")
    p.add_argument("--cols", type=positive_int, default=8, help="images per row")
    p.add_argument("--size", type=positive_int, default=128, help="tile size in pixels")
    p.add_argument("--guidance", action="store_true", help="show depth and pose beside each")
    p.set_defaults(fn=cmd_preview)

    p = sub.add_parser("convert-dataset", help="EG3D folder/zip <-> tfds (array_record)")
    p.add_argument("src", help="dataset to read")
    p.add_argument("dest", help="tfds data_dir (--to tfds) or EG3D folder (--to eg3d)")
    p.add_argument("--to", required=True, choices=("tfds", "eg3d"), help="format to write")
    p.set_defaults(fn=cmd_convert_dataset)

    p = sub.add_parser("mirror-dataset", help="add mirrored copies as EG3D's mirror_dataset.py")
    p.add_argument("src", help="EG3D folder")
    p.add_argument("dest", nargs="?", help="folder to write (default: in place)")
    p.set_defaults(fn=cmd_mirror_dataset)
