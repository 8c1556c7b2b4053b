"""One training iteration of the official EG3D code and of ours from the same snapshot, with
the same random draws: per-phase losses and per-tensor errors; exits 1 past the tolerances.

    python bench/eg3d_step_parity.py --eg3d-src /path/to/eg3d/eg3d --snapshot X.pkl
        [--batch 4] [--seed K] [--cur-kimg 10] [--top 10] [--save ref.npz]

EG3D's side (bench/eg3d_step_record.py): G, G_ema and D are built from the snapshot's own
constructor kwargs (rendering kwargs included) and state dicts, read with our safe reader
(the pickle's embedded code is never run), with StyleGAN2Loss and the two lazily regularised
Adams as train.py / training_loop.py set them up when resuming at --cur-kimg; one iteration
(Gmain, Greg, Dmain, Dreg, G_ema) runs on random real images and cameras, recording every
torch random draw. Ours (styleavatar_jax/train/eg3d_parity.py): the same snapshot converted
with `convert_pickle`, the recorded draws fed to our pure phases. Compared: each phase's
loss (1e-4 relative), every parameter's gradient (1e-3·max|g| of the tensor), every leaf
after the iteration (1e-4·max|x|: G, D, G_ema, both Adam moment sets, w_avg), stepped
with EG3D's gradients (eg3d_parity.check_iteration); gradients also get 2e-4 of their
phase's largest gradient (eg3d_parity.GRAD_FLOOR). Our own iteration's state is printed too.

EG3D's own float32 rounding (default on; --no-float64 skips it, about 5× EG3D's float32 time
on CPU): each phase of EG3D runs again in float64 from the float32 run's starting G and D with
the same draws (eg3d_step_record.float64_reference); a loss's or gradient's tolerance is then
at least eg3d_parity.NOISE_K (4) times max|EG3D f32 − EG3D f64| of it, the "noise" column.

Settings EG3D keeps outside the snapshot (train.py flags) are flags here with train.py's
defaults: --gamma, --blur-sigma (blur_fade_kimg = batch·200/32), --gpc-reg-fade-kimg,
--g-reg-interval, --d-reg-interval, --lr-g, --lr-d, --ema-rampup; density_reg, its p_dist
and the swap probability come from the snapshot's rendering kwargs.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("JAX_PLATFORMS", "cpu")
_BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(_BENCH.parent))
sys.path.insert(0, str(_BENCH))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from styleavatar_jax.convert.safe_pickle import load_eg3d_pickle  # noqa: E402
from styleavatar_jax.convert.snapshot import convert_pickle  # noqa: E402
from styleavatar_jax.train import eg3d_parity  # noqa: E402

# float32 matmuls at full precision (TF32 would break parity on a GPU)
jax.config.update("jax_default_matmul_precision", "highest")


def random_inputs(seed: int, batch: int, res: int, z_dim: int, phases):
    from eg3d_train_step import random_labels

    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, (batch, res, res, 3), dtype=np.uint8)
    label = random_labels(batch, rng).astype(np.float32)
    gen_z = {p: rng.standard_normal((batch, z_dim), dtype=np.float32) for p in phases}
    gen_c = {p: random_labels(batch, rng).astype(np.float32) for p in phases}
    return image, label, gen_z, gen_c


def check_inputs(eg3d_src: str, snapshot: str):
    """(problem, snapshot, our converted networks), before any heavy work. problem: None, or
    what is wrong: EG3D's source missing or torch not importing, a snapshot that is not an
    EG3D training snapshot, or one whose architecture our converter does not support (the
    converter's message names the field)."""
    src = Path(eg3d_src)
    missing = [n for n in ("training/triplane.py", "training/loss.py", "torch_utils") if
               not (src / n).exists()]  # fmt: skip
    if missing:
        return (f"--eg3d-src {eg3d_src}: not EG3D's eg3d/ folder (no {', '.join(missing)}); "
                "expected NVlabs/eg3d's eg3d/ directory (commit 7cf1fd1)"), None, None  # fmt: skip
    try:
        import torch  # noqa: F401
    except ImportError as e:
        return f"--eg3d-src needs torch to run EG3D, which does not import here: {e}", None, None
    try:
        snap = load_eg3d_pickle(snapshot)
    except Exception as e:  # the reader's message names the file and what it expected
        return f"--snapshot: {e}", None, None
    if snap.G is None or snap.D is None or snap.G_ema is None:
        return (
            f"--snapshot {snapshot}: needs G, G_ema and D (an EG3D training snapshot)",
            None,
            None,
        )
    try:
        nets = convert_pickle(snapshot)
    except (ValueError, KeyError, TypeError) as e:
        return f"--snapshot {snapshot}: our converter does not support it: {e}", None, None
    return None, snap, nets


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--eg3d-src", required=True, help="EG3D's eg3d/ folder")
    p.add_argument("--snapshot", required=True, help="an EG3D network-snapshot-*.pkl")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seed", type=int, default=0, help="torch seed and the inputs' seed")
    p.add_argument("--cur-kimg", type=float, default=10.0, help="EG3D's cur_nimg / 1000")
    p.add_argument("--gamma", type=float, default=1.0, help="R1 γ (train.py --gamma)")
    p.add_argument("--blur-sigma", type=float, default=10.0)
    p.add_argument("--gpc-reg-fade-kimg", type=float, default=1000.0)
    p.add_argument("--g-reg-interval", type=int, default=4)
    p.add_argument("--d-reg-interval", type=int, default=16)
    p.add_argument("--lr-g", type=float, default=0.0025)
    p.add_argument("--lr-d", type=float, default=0.002)
    p.add_argument("--ema-rampup", default="0.05", help="a number, or 'none' (train.py --resume)")
    p.add_argument("--top", type=int, default=10, help="print the N worst tensors")
    p.add_argument("--save", help="also write EG3D's recorded iteration to this .npz")
    p.add_argument("--no-float64", dest="float64", action="store_false",
                   help="skip EG3D's float64 rerun (no noise floors)")  # fmt: skip
    p.add_argument("--xla-optimize", action="store_true", help="compile ours with XLA's "
                   "optimisations (default: most off, as the tests; on XLA:CPU the optimised "
                   "Greg moves its gradients by up to 10%% of max|g|: DESIGN.md §10)")  # fmt: skip
    args = p.parse_args(argv)
    jax.config.update("jax_disable_most_optimizations", not args.xla_optimize)

    from eg3d_step_record import (
        EG3D_PHASES,
        build_from_snapshot,
        float64_reference,
        noise_floors,
        record_iteration,
    )

    t0 = time.perf_counter()
    problem, snap, ours_nets = check_inputs(args.eg3d_src, args.snapshot)
    if problem:
        print(problem, file=sys.stderr)
        return 2
    kw = dict(
        batch=args.batch,
        cur_nimg=int(round(args.cur_kimg * 1000)),
        seed=args.seed,
        r1_gamma=args.gamma,
        blur_sigma=args.blur_sigma,
        gpc_reg_fade_kimg=args.gpc_reg_fade_kimg,
        g_reg_interval=args.g_reg_interval,
        d_reg_interval=args.d_reg_interval,
        lr_g=args.lr_g,
        lr_d=args.lr_d,
        ema_rampup=None if args.ema_rampup.lower() == "none" else float(args.ema_rampup),
    )
    t = build_from_snapshot(args.eg3d_src, snap, **kw)
    inputs = random_inputs(args.seed, args.batch, t.D.img_resolution, t.G.z_dim, EG3D_PHASES)
    starts = {} if args.float64 else None
    ref = record_iteration(t, *inputs, save_starts=starts)
    t64 = time.perf_counter()
    if args.float64:
        ref.update(noise_floors(ref, float64_reference(args.eg3d_src, snap, ref, starts,
                                                       inputs, **kw)))  # fmt: skip
        del starts
    t1 = time.perf_counter()
    if args.save:
        np.savez_compressed(args.save, **ref)
    rows, metrics, own = eg3d_parity.check_iteration(ref, ours_nets)
    t2 = time.perf_counter()

    s = t.settings
    print(f"{args.snapshot}: batch {args.batch}, neural res {s['neural_res']}, cur_kimg "
          f"{args.cur_kimg:g}; EG3D {t.ops} {t64 - t0:.1f} s"
          + (f" (float64 {t1 - t64:.1f} s)" if args.float64 else "")
          + f", ours {t2 - t1:.1f} s")  # fmt: skip
    noise = lambda key: float(ref.get(f"noise/{key}", np.nan))  # noqa: E731
    print(f"{'phase':8s} {'EG3D loss':>14s} {'ours':>14s} {'rel err':>9s} {'rel noise':>9s}")
    for phase in EG3D_PHASES:
        theirs = float(ref[f"loss/{phase}"])
        ours = float(metrics[phase][eg3d_parity.LOSS_METRIC[phase]])
        scale = max(abs(theirs), 1e-30)
        rel, rel_noise = abs(ours - theirs) / scale, noise(f"loss/{phase}") / scale
        print(f"{phase:8s} {theirs:14.7g} {ours:14.7g} {rel:9.2e} {rel_noise:9.2e}")
    print(f"\n{'group':20s} {'worst err/tol':>13s}  tensor")
    for group, (ratio, key) in sorted(eg3d_parity.summary(rows).items()):
        print(f"{group:20s} {ratio:13.3f}  {key}")
    print("\nstate after our own iteration (our gradients; information only):")
    for group, (ratio, key) in sorted(eg3d_parity.summary(own).items()):
        print(f"{group:20s} {ratio:13.3f}  {key}")
    ratio = lambda r: r[1] / r[2] if r[2] > 0 else (np.inf if r[1] > 0 else 0.0)
    ranked = sorted(rows, key=ratio)
    print(f"\nworst {args.top} of {len(rows)} tensors (max |Δ|, tolerance, EG3D's f32 noise):")
    for key, err, tol in ranked[::-1][: args.top]:
        print(f"  {key:70s} {err:10.3e} {tol:10.3e} {noise(key):10.3e}")
    bad = [r for r in rows if not r[1] <= r[2]]
    print(f"\n{len(bad)} of {len(rows)} tensors past the tolerances" if bad else "\nall within")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
