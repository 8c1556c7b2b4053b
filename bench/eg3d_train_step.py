"""One EG3D training iteration in PyTorch, timed, at an architecture given by our configs.

    python bench/eg3d_train_step.py [EG3D_SRC]   # smoke run: configs/eg3d_ffhq512.py:tiny, batch 4

A library for bench/train_step.py (the EG3D column of its table):

    t = build_eg3d_training(src, g_cfg, d_cfg, neural_res=64, batch=32, device="cuda")
    s = time_eg3d_step(t, ("Gmain", "Dmain"))                   # median s/iteration
    s = time_eg3d_step(t, ("Gmain", "Greg", "Dmain", "Dreg"))

What is measured: the body of the `while True` loop of EG3D's training/training_loop.py for
one batch, minus the data fetch: for each requested phase, in EG3D's order (Gmain, Greg,
Dmain, Dreg), `opt.zero_grad(set_to_none=True)`, `module.requires_grad_(True)`,
`StyleGAN2Loss.accumulate_gradients(phase, ..., gain=phase.interval, cur_nimg)` per
`batch_gpu` split, `requires_grad_(False)`, the flatten / `misc.nan_to_num(nan=0,
posinf=1e5, neginf=-1e5)` / split of the gradients, `opt.step()`; then the G_ema update
(EMA half-life `batch·10/32` kimg with the 0.05 ramp-up, buffers copied), `cur_nimg +=
batch`; then `torch.cuda.synchronize()` on CUDA. Timing uses wall-clock time around that.

How it is set up, as train.py --cfg=ffhq with training_loop.py:
  * G: EG3D's TriPlaneGenerator from bench/generator.py's `eg3d_kwargs` (fp32: num_fp16_res
    and sr_num_fp16_res 0, conv_clamp None), `.train()`, with the `dataset_label_std`
    buffer training_loop.py registers; G_ema a deep copy in eval mode. rendering_kwargs get
    this call's density_reg (reg_type 'l1', p_dist 0.004) and gpc_reg_prob.
  * D: training.dual_discriminator.DualDiscriminator (c_dim 25, resnet) with our
    DiscriminatorConfig's img_resolution, img_channels, channel_base, channel_max,
    conv_clamp, cmap_dim, disc_c_noise, mapping_layers and mbstd group size / channels;
    num_fp16_res 0.
  * Loss: training.loss.StyleGAN2Loss(r1_gamma, blur_init_sigma=blur_sigma,
    blur_fade_kimg=batch·200/32, gpc_reg_prob (None without pose conditioning),
    gpc_reg_fade_kimg 1000, dual_discrimination, neural_rendering_resolution_initial=
    neural_res (no final: constant), filter_mode 'antialiased', no style mixing, no
    augmentation (train.py's default --aug=noaug)).
  * Optimizers: Adam(lr 0.0025 G / 0.002 D, betas (0, 0.99), eps 1e-8) with lazy
    regularisation: lr·k/(k+1) and betas^(k/(k+1)) for k = g_reg_interval / d_reg_interval;
    Greg / Dreg run with gain = k. Without G regularisation (density_reg 0 or g_reg_interval
    None/0) training_loop.py has one unscaled 'Gboth' phase: 'Gmain' then runs as 'Gboth'
    and 'Greg' is a no-op; likewise for D with d_reg_interval None/0.
  * Global switches of training_loop.py: cudnn.benchmark, TF32 off, conv2d_gradfix on
    (it only acts on CUDA), grid_sample_gradfix off.
  * On CPU EG3D's reference ops (bench/generator.py's `load_eg3d`); on CUDA its custom ops
    when they build.

The iteration's `cur_nimg` starts at 0 (`start_nimg`) and advances by the batch, as in a
fresh run: blur sigma, generator pose-conditioning swap probability and the EMA beta are
their start-of-training values (as bench/train_step.py's JAX side, schedule at step 0).

Our configs that EG3D cannot express (plane resolution ≠ 256², plane channels ≠ 32,
decoder width ≠ 64, our non-EG3D SR, no SR noise) raise ValueError unless strict=False,
which builds EG3D's fixed architecture and lists the differences in `t.deviations`.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import statistics
import sys
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

_BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(_BENCH.parent))
if str(_BENCH) not in sys.path:
    sys.path.insert(0, str(_BENCH))

from generator import eg3d_kwargs, load_eg3d  # noqa: E402

from styleavatar_jax import cameras  # noqa: E402
from styleavatar_jax.models.discriminator import DiscriminatorConfig  # noqa: E402
from styleavatar_jax.models.superres import EG3D_SR_KINDS  # noqa: E402
from styleavatar_jax.models.triplane import GeneratorConfig  # noqa: E402

PHASES = ("Gmain", "Greg", "Dmain", "Dreg")
LABEL_DIM = 25  # EG3D's camera label: cam2world 4×4 ‖ intrinsics 3×3


@dataclasses.dataclass
class EG3DTraining:
    """Everything one EG3D training iteration touches (see build_eg3d_training)."""

    torch: Any  # the torch module
    device: Any  # torch.device
    G: Any
    D: Any
    G_ema: Any
    loss: Any  # training.loss.StyleGAN2Loss
    phases: list  # EG3D's phase list: name, module, opt, interval (training_loop.py)
    nan_to_num: Any  # torch_utils.misc.nan_to_num
    batch: int
    batch_gpu: int
    neural_res: int
    ema_kimg: float
    ema_rampup: float | None
    ops: str  # which EG3D ops run (custom CUDA / reference)
    deviations: list[str]  # our config fields EG3D could not express (strict=False)
    cur_nimg: int = 0
    batch_idx: int = 0
    settings: dict = dataclasses.field(default_factory=dict)  # the loss/optimizer settings


def eg3d_deviations(g_cfg: GeneratorConfig, d_cfg: DiscriminatorConfig) -> list[str]:
    """Fields of our configs that EG3D's TriPlaneGenerator / DualDiscriminator hard-code."""
    out = []
    if g_cfg.sr_kind not in EG3D_SR_KINDS:
        out.append(f"sr_kind={g_cfg.sr_kind!r} is not an EG3D module (EG3D: {EG3D_SR_KINDS})")
    for name, eg3d in (
        ("backbone_resolution", 256),
        ("plane_channels", 32),
        ("decoder_hidden", 64),
    ):
        if getattr(g_cfg, name) != eg3d:
            out.append(f"generator.{name}={getattr(g_cfg, name)} (EG3D: {eg3d})")
    if not g_cfg.sr_use_noise:
        out.append("generator.sr_use_noise=False (EG3D's SR always has noise inputs)")
    if g_cfg.render.plane_axes != "eg3d":
        out.append(f"render.plane_axes={g_cfg.render.plane_axes!r} (EG3D: 'eg3d'; same cost)")
    if g_cfg.c_dim != LABEL_DIM:
        out.append(f"generator.c_dim={g_cfg.c_dim} (EG3D: 25-d camera label)")
    if d_cfg.c_dim != LABEL_DIM:
        out.append(f"discriminator.c_dim={d_cfg.c_dim} (built with EG3D's 25-d camera label)")
    return out


def _d_kwargs(d_cfg: DiscriminatorConfig) -> dict:
    """Our DiscriminatorConfig -> EG3D DualDiscriminator kwargs (inverse of
    styleavatar_jax.convert.eg3d.discriminator_config), fp32, 25-d camera label."""
    return dict(
        c_dim=LABEL_DIM,
        img_resolution=d_cfg.img_resolution,
        img_channels=d_cfg.img_channels,
        architecture="resnet",
        channel_base=d_cfg.channel_base,
        channel_max=d_cfg.channel_max,
        num_fp16_res=0,
        conv_clamp=d_cfg.conv_clamp,
        cmap_dim=d_cfg.cmap_dim,
        disc_c_noise=d_cfg.disc_c_noise,
        block_kwargs=dict(freeze_layers=0),
        mapping_kwargs=dict(num_layers=d_cfg.mapping_layers),
        epilogue_kwargs=dict(
            mbstd_group_size=d_cfg.mbstd_group_size, mbstd_num_channels=d_cfg.mbstd_num_channels
        ),
    )


def random_labels(n: int, rng: np.random.Generator) -> np.ndarray:
    """[n, 25] valid EG3D camera labels (`cameras.random_labels`, seeded from rng)."""
    return cameras.random_labels(int(rng.integers(2**31)), n)


def build_eg3d_training(
    src: str,
    g_cfg: GeneratorConfig,
    d_cfg: DiscriminatorConfig,
    *,
    neural_res: int,
    batch: int,
    device: str = "cpu",
    r1_gamma: float = 1.0,
    density_reg: float = 0.25,
    g_reg_interval: int | None = 4,
    d_reg_interval: int | None = 16,
    blur_sigma: float = 0.0,
    gpc_reg_prob: float = 0.5,
    lr_g: float = 0.0025,
    lr_d: float = 0.002,
    batch_gpu: int | None = None,
    start_nimg: int = 0,
    seed: int = 0,
    strict: bool = True,
) -> EG3DTraining:
    """EG3D's G, D, G_ema, StyleGAN2Loss and the two lazily-regularised Adams, as
    training_loop.py sets them up for train.py --cfg=ffhq (see the module docstring)."""
    deviations = eg3d_deviations(g_cfg, d_cfg)
    if g_cfg.sr_kind not in EG3D_SR_KINDS or (strict and deviations):
        raise ValueError("EG3D cannot build this architecture:\n  " + "\n  ".join(deviations))
    # Networks (fp32). G and D are built with the 25-d camera label.
    g_cfg = dataclasses.replace(g_cfg, c_dim=LABEL_DIM)
    pose_cond = not g_cfg.c_gen_conditioning_zero
    g_kwargs = eg3d_kwargs(g_cfg, sr_fp16=False)
    rk = g_kwargs["rendering_kwargs"]
    rk.update(
        density_reg=density_reg,
        gpc_reg_prob=gpc_reg_prob if pose_cond else None,
        white_back=g_cfg.render.white_back,
    )
    if g_cfg.render.ray_start is None:  # our None = EG3D's 'auto'
        rk.update(ray_start="auto", ray_end="auto")
    t = build_eg3d_training_from_kwargs(
        src,
        g_kwargs,
        _d_kwargs(d_cfg),
        neural_res=neural_res,
        batch=batch,
        device=device,
        r1_gamma=r1_gamma,
        g_reg_interval=g_reg_interval,
        d_reg_interval=d_reg_interval,
        blur_sigma=blur_sigma,
        gpc_reg_prob=gpc_reg_prob if pose_cond else None,
        lr_g=lr_g,
        lr_d=lr_d,
        batch_gpu=batch_gpu,
        start_nimg=start_nimg,
        seed=seed,
    )
    t.deviations = deviations
    if deviations:
        warnings.warn(
            "EG3D built its own fixed architecture: " + "; ".join(deviations), stacklevel=2
        )
    return t


def build_eg3d_training_from_kwargs(
    src: str,
    g_kwargs: dict,
    d_kwargs: dict,
    *,
    neural_res: int,
    batch: int,
    device: str = "cpu",
    states: dict[str, dict[str, np.ndarray]] | None = None,
    r1_gamma: float = 1.0,
    g_reg_interval: int | None = 4,
    d_reg_interval: int | None = 16,
    blur_sigma: float = 0.0,
    blur_fade_kimg: float | None = None,
    gpc_reg_prob: float | None = 0.5,
    gpc_reg_fade_kimg: float = 1000,
    lr_g: float = 0.0025,
    lr_d: float = 0.002,
    batch_gpu: int | None = None,
    start_nimg: int = 0,
    seed: int = 0,
    ema_kimg: float | None = None,
    ema_rampup: float | None = 0.05,
) -> EG3DTraining:
    """EG3D's training objects from its own constructor kwargs (a snapshot's init_kwargs),
    as training_loop.py sets them up (module docstring). states: optional state dicts
    {'G', 'G_ema', 'D': {name: array}} loaded into the networks (G_ema defaults to G's), as
    training_loop.py's resume does. density_reg and its kind come from G's rendering_kwargs;
    blur_fade_kimg and ema_kimg default to train.py's batch·200/32 and batch·10/32."""
    batch_gpu = batch_gpu or batch
    if batch % batch_gpu:
        raise ValueError(f"batch={batch} must be a multiple of batch_gpu={batch_gpu}")
    mbstd = d_kwargs.get("epilogue_kwargs", {}).get("mbstd_group_size", 4)
    if mbstd and batch_gpu < mbstd:  # train.py's check
        raise ValueError(f"batch_gpu={batch_gpu} < mbstd_group_size={mbstd}")

    dev_type = device.split(":")[0]
    torch, EG3DGenerator, ops = load_eg3d(src, dev_type)
    from torch_utils import misc
    from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix
    from training.dual_discriminator import DualDiscriminator
    from training.loss import StyleGAN2Loss

    dev = torch.device(device)
    # training_loop.py's global switches.
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = True
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    conv2d_gradfix.enabled = True
    grid_sample_gradfix.enabled = False

    states = states or {}
    G = EG3DGenerator(**copy.deepcopy(g_kwargs)).train().requires_grad_(False).to(dev)
    if "dataset_label_std" in states.get("G", {}):
        label_std = states["G"]["dataset_label_std"]
    else:
        label_std = random_labels(1024, np.random.default_rng(seed)).std(0)
    G.register_buffer("dataset_label_std", torch.tensor(np.asarray(label_std)).to(dev))
    D = DualDiscriminator(**copy.deepcopy(d_kwargs)).train().requires_grad_(False).to(dev)
    to_torch = lambda sd: {k: torch.from_numpy(np.array(v)).to(dev) for k, v in sd.items()}  # noqa: E731
    if "G" in states:
        G.load_state_dict(to_torch(states["G"]))
    if "D" in states:
        D.load_state_dict(to_torch(states["D"]))
    G_ema = copy.deepcopy(G).eval()
    if "G_ema" in states:
        G_ema.load_state_dict(to_torch(states["G_ema"]))

    loss = StyleGAN2Loss(
        device=dev,
        G=G,
        D=D,
        augment_pipe=None,
        r1_gamma=r1_gamma,
        style_mixing_prob=0,
        blur_init_sigma=blur_sigma,
        blur_fade_kimg=batch * 200 / 32 if blur_fade_kimg is None else blur_fade_kimg,
        gpc_reg_prob=gpc_reg_prob,
        gpc_reg_fade_kimg=gpc_reg_fade_kimg,
        dual_discrimination=True,
        neural_rendering_resolution_initial=neural_res,
        neural_rendering_resolution_final=None,
        neural_rendering_resolution_fade_kimg=1000,
        filter_mode="antialiased",
    )

    # training_loop.py: lazy regularisation scales lr and betas by k/(k+1).
    density_reg = G.rendering_kwargs.get("density_reg", 0)
    g_interval = g_reg_interval if density_reg > 0 and g_reg_interval else None
    d_interval = d_reg_interval or None
    phases = []
    for name, module, lr, reg_interval in (("G", G, lr_g, g_interval), ("D", D, lr_d, d_interval)):
        betas = [0.0, 0.99]
        if reg_interval is None:
            opt = torch.optim.Adam(module.parameters(), lr=lr, betas=betas, eps=1e-8)
            phases.append(SimpleNamespace(name=name + "both", module=module, opt=opt, interval=1))
        else:
            mb_ratio = reg_interval / (reg_interval + 1)
            opt = torch.optim.Adam(
                module.parameters(),
                lr=lr * mb_ratio,
                betas=[b**mb_ratio for b in betas],
                eps=1e-8,
            )
            phases.append(SimpleNamespace(name=name + "main", module=module, opt=opt, interval=1))
            phases.append(
                SimpleNamespace(name=name + "reg", module=module, opt=opt, interval=reg_interval)
            )
    ema_kimg = batch * 10 / 32 if ema_kimg is None else ema_kimg  # train.py
    settings = dict(
        batch=batch,
        neural_res=neural_res,
        cur_nimg=start_nimg,
        r1_gamma=r1_gamma,
        density_reg=float(density_reg),
        density_reg_p_dist=float(G.rendering_kwargs.get("density_reg_p_dist", 0.004)),
        g_reg_interval=g_interval,
        d_reg_interval=d_interval,
        blur_init_sigma=blur_sigma,
        blur_fade_kimg=loss.blur_fade_kimg,
        gpc_reg_prob=gpc_reg_prob,
        gpc_reg_fade_kimg=gpc_reg_fade_kimg,
        lr_g=lr_g,
        lr_d=lr_d,
        ema_kimg=ema_kimg,
        ema_rampup=ema_rampup,
    )
    return EG3DTraining(
        torch=torch,
        device=dev,
        G=G,
        D=D,
        G_ema=G_ema,
        loss=loss,
        phases=phases,
        nan_to_num=misc.nan_to_num,
        batch=batch,
        batch_gpu=batch_gpu,
        neural_res=neural_res,
        ema_kimg=ema_kimg,
        ema_rampup=ema_rampup,  # training_loop.py default (train.py: None on resume)
        ops=ops,
        deviations=[],
        cur_nimg=start_nimg,
        settings=settings,
    )


def _selected(t: EG3DTraining, phases: tuple[str, ...]) -> list:
    """EG3D's phases (in its order) that the requested names run; 'Gmain' selects 'Gboth'
    when G has no lazy regulariser (then 'Greg' selects nothing); likewise for D."""
    unknown = set(phases) - set(PHASES)
    if unknown:
        raise ValueError(f"unknown phases {sorted(unknown)}; expected some of {PHASES}")
    want = set(phases) | {p[0] + "both" for p in phases if p.endswith("main")}
    return [ph for ph in t.phases if ph.name in want]


def eg3d_train_iteration(
    t: EG3DTraining, phases: tuple[str, ...], real_img, real_c, gen_z, gen_c, hooks=None
):
    """One iteration of training_loop.py's loop body over the given phases, then G_ema.

    real_img [batch, 3, R, R] float in [-1, 1] (already /127.5 - 1), real_c [batch, 25];
    gen_z [batch, z_dim] / gen_c [batch, 25], or sequences of such, one per entry of
    t.phases (training_loop.py draws fresh z and c for each phase). All on t.device.
    hooks: optional object with before_phase(name) and after_phase(name, module) (called
    once the phase's gradients are accumulated, before nan_to_num and the optimizer step).
    """
    torch = t.torch
    run = {ph.name for ph in _selected(t, phases)}
    real_imgs = real_img.split(t.batch_gpu)
    real_cs = real_c.split(t.batch_gpu)
    for i, phase in enumerate(t.phases):  # i: the phase's z and c, as training_loop.py
        if phase.name not in run:
            continue
        z = gen_z[i] if isinstance(gen_z, (list, tuple)) else gen_z
        c = gen_c[i] if isinstance(gen_c, (list, tuple)) else gen_c
        # Accumulate gradients.
        if hooks is not None:
            hooks.before_phase(phase.name)
        phase.opt.zero_grad(set_to_none=True)
        phase.module.requires_grad_(True)
        for ri, rc, gz, gc in zip(
            real_imgs, real_cs, z.split(t.batch_gpu), c.split(t.batch_gpu), strict=True
        ):
            t.loss.accumulate_gradients(
                phase=phase.name,
                real_img=ri,
                real_c=rc,
                gen_z=gz,
                gen_c=gc,
                gain=phase.interval,
                cur_nimg=t.cur_nimg,
            )
        phase.module.requires_grad_(False)
        if hooks is not None:
            hooks.after_phase(phase.name, phase.module)
        # Update weights (single GPU: no all_reduce).
        params = [p for p in phase.module.parameters() if p.numel() > 0 and p.grad is not None]
        if len(params) > 0:
            flat = torch.cat([p.grad.flatten() for p in params])
            t.nan_to_num(flat, nan=0, posinf=1e5, neginf=-1e5, out=flat)
            grads = flat.split([p.numel() for p in params])
            for p, g in zip(params, grads, strict=True):
                p.grad = g.reshape(p.shape)
        phase.opt.step()

    # Update G_ema.
    ema_nimg = t.ema_kimg * 1000
    if t.ema_rampup is not None:
        ema_nimg = min(ema_nimg, t.cur_nimg * t.ema_rampup)
    ema_beta = 0.5 ** (t.batch / max(ema_nimg, 1e-8))
    for p_ema, p in zip(t.G_ema.parameters(), t.G.parameters(), strict=True):
        p_ema.copy_(p.lerp(p_ema, ema_beta))
    for b_ema, b in zip(t.G_ema.buffers(), t.G.buffers(), strict=True):
        b_ema.copy_(b)
    t.G_ema.neural_rendering_resolution = t.G.neural_rendering_resolution
    t.G_ema.rendering_kwargs = t.G.rendering_kwargs.copy()

    t.cur_nimg += t.batch
    t.batch_idx += 1
    if t.device.type == "cuda":
        torch.cuda.synchronize(t.device)


def random_inputs(t: EG3DTraining, seed: int = 0) -> tuple:
    """Random (real_img, real_c, gen_z per phase, gen_c per phase) on t.device: images as
    uint8 values scaled to [-1, 1] at D's resolution, labels valid EG3D cameras."""
    torch = t.torch
    rng = np.random.default_rng(seed)
    b, res, n = t.batch, t.D.img_resolution, len(t.phases)
    img = rng.integers(0, 256, (b, 3, res, res)).astype(np.float32) / 127.5 - 1
    to = lambda x: torch.from_numpy(np.array(x, np.float32)).to(t.device)  # noqa: E731
    gen_z = rng.standard_normal((n, b, t.G.z_dim)).astype(np.float32)
    gen_c = random_labels(n * b, rng).reshape(n, b, LABEL_DIM)
    return (
        to(img),
        to(random_labels(b, rng)),
        [to(z) for z in gen_z],
        [to(c) for c in gen_c],
    )


def time_eg3d_step(t: EG3DTraining, phases: tuple[str, ...], *, iters: int = 3, warmup: int = 1):
    """Median wall seconds of eg3d_train_iteration over `iters` runs after `warmup` runs,
    each on fresh random inputs (made before its clock starts)."""
    times = []
    for i in range(warmup + iters):
        inputs = random_inputs(t, seed=t.batch_idx + 1000 * i)
        t0 = time.perf_counter()
        eg3d_train_iteration(t, phases, *inputs)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


if __name__ == "__main__":
    from styleavatar_jax import typed_config
    from styleavatar_jax.typed_config import load_config_file

    src = sys.argv[1] if len(sys.argv) > 1 else "/work/eg3d_src/eg3d"
    cfg = load_config_file(f"{_BENCH.parent}/configs/eg3d_ffhq512.py:tiny")
    g_cfg = typed_config.generator_config(cfg.model.generator)
    d_cfg = typed_config.discriminator_config(cfg.model.discriminator)
    t0 = time.perf_counter()
    t = build_eg3d_training(src, g_cfg, d_cfg, neural_res=32, batch=4)
    t.torch.set_num_threads(os.cpu_count())
    print(
        f"EG3D tiny (128², neural 32², batch 4): torch {t.torch.__version__}, {t.ops}, "
        f"{t.torch.get_num_threads()} threads; built in {time.perf_counter() - t0:.1f} s"
    )
    for phases in (("Gmain", "Dmain"), PHASES):
        s = time_eg3d_step(t, phases)
        print(f"{'+'.join(phases):24s} {s:.3f} s/iteration", flush=True)
