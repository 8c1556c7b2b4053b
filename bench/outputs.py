"""Throughput of the output paths: turntable frames/s and mesh σ queries/s.

    python bench/outputs.py                         # demo + tiny configs, chunks 8 and 16
    python bench/outputs.py --configs demo --chunks 8 --mesh-res 128,256 --json out.json

Video: one seed's planes once, then `frames` cameras rendered `chunk` at a time through
export/frames.py's jitted renderer (RGB after SR, depth, and the gradient normals with
--normals, the default); frames/s counts frames, not seeds. Mesh: σ on a res³ grid in
chunks of 65536 points (export/mesh.py), then marching cubes; both timed. Compile time is
reported apart (first call); a random init of each config (weights do not change the cost).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from styleavatar_jax import sampling, typed_config  # noqa: E402
from styleavatar_jax.export import frames  # noqa: E402
from styleavatar_jax.export import mesh as mesh_io  # noqa: E402
from styleavatar_jax.models.triplane import TriPlaneGenerator, init_variables  # noqa: E402
from styleavatar_jax.typed_config import load_config_file  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def setup(name: str):
    cfg = load_config_file(str(ROOT / "configs" / f"{name}.py"))
    G = TriPlaneGenerator(typed_config.generator_config(cfg.model.generator))
    variables = init_variables(G, jax.random.key(0))
    z = sampling.z_from_seeds([0], G.cfg.z_dim)
    c = sampling.view_labels(np.zeros(1), np.zeros(1), cfg.camera.to_dict())
    ws = np.asarray(frames.make_mapping_fn(G)(variables, z, c))
    return cfg, G, variables, ws


def bench_video(cfg, G, variables, ws, chunk: int, n_frames: int, normals: bool) -> dict:
    mesh = sampling.make_mesh(1)
    yaw = np.linspace(-np.pi, np.pi, n_frames, endpoint=False).astype(np.float32)
    c = sampling.view_labels(yaw, np.zeros_like(yaw), cfg.camera.to_dict())
    settings = frames.FrameSettings(neural_res=int(cfg.model.neural_res), chunk=chunk,
                                    normals=normals)  # fmt: skip
    key = jax.random.key(0)
    t0 = time.perf_counter()
    frames.render_orbit(G, variables, ws, c[:chunk], settings, mesh=mesh, key=key)  # compile
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    frames.render_orbit(G, variables, ws, c, settings, mesh=mesh, key=key)
    run_s = time.perf_counter() - t0
    return dict(compile_s=round(compile_s, 2), seconds=round(run_s, 2),
                frames_per_s=round(n_frames / run_s, 2))  # fmt: skip


def bench_mesh(G, variables, ws, res: int, chunk: int = 65536) -> dict:
    mesh = sampling.make_mesh(1)
    planes = jax.device_get(frames.make_planes_fn(G, "const", mesh)(variables, ws,
                                                                    jax.random.key(0)))  # fmt: skip
    field = mesh_io.generator_field(G, variables, planes, mesh)
    field(np.zeros((chunk, 3), np.float32))  # compile
    t0 = time.perf_counter()
    sigma = mesh_io.density_grid(field, res, G.cfg.render.box_warp, chunk)
    grid_s = time.perf_counter() - t0
    level = float(np.median(sigma))  # a level that always cuts (random init)
    t0 = time.perf_counter()
    verts, faces = mesh_io.marching_cubes(sigma, level, G.cfg.render.box_warp)
    mc_s = time.perf_counter() - t0
    return dict(res=res, grid_s=round(grid_s, 2), queries_per_s=round(res**3 / grid_s),
                marching_cubes_s=round(mc_s, 2), vertices=len(verts))  # fmt: skip


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="demo,tiny")
    ap.add_argument("--chunks", default="8,16")
    ap.add_argument("--frames", type=int, default=48)
    ap.add_argument("--no-normals", action="store_true")
    ap.add_argument("--mesh-res", default="128,256")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    rows = []
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"jax {jax.__version__} on {jax.devices()[0].platform}")  # fmt: skip
    for name in args.configs.split(","):
        cfg, G, variables, ws = setup(name)
        for chunk in (int(x) for x in args.chunks.split(",")):
            r = bench_video(cfg, G, variables, ws, chunk, args.frames, not args.no_normals)
            rows.append(dict(config=name, path="video", chunk=chunk, **r))
            print(f"video {name:5s} chunk {chunk:3d}: {r['frames_per_s']:7.2f} frames/s "
                  f"(compile {r['compile_s']} s)", flush=True)  # fmt: skip
        for res in (int(x) for x in args.mesh_res.split(",")):
            r = bench_mesh(G, variables, ws, res)
            rows.append(dict(config=name, path="mesh", **r))
            print(f"mesh  {name:5s} res {res:4d}: σ grid {r['grid_s']} s "
                  f"({r['queries_per_s']:.3g} queries/s), marching cubes "
                  f"{r['marching_cubes_s']} s", flush=True)  # fmt: skip
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
