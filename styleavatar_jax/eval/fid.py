"""FID and KID on Inception pool3 features.

- Features: `inception.InceptionV3` (pytorch-fid's FID network), jitted once per mesh and
  image shape, run in fixed-size batches (the last padded) sharded on the `data` axis.
  Images are uint8 [N, H, W, 3] (0..255, divided by 255 as pytorch-fid's loader does) or
  float in [0, 1]; `to_uint8` quantises generator output as StyleGAN's metrics do.
- FID (Heusel et al. 2017): ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^½ on float64
  statistics (np.cov, N − 1). tr (Σ₁Σ₂)^½ = Σᵢ √λᵢ(Σ₁^½ Σ₂ Σ₁^½): the eigenvalues of
  Σ₁Σ₂ are those of that symmetric PSD matrix, so two `eigh` replace pytorch-fid's
  `scipy.linalg.sqrtm` (no complex round-off to discard; equal to it to ~1e-10 relative,
  see the tests). Eigenvalues below d·eps·λ_max are rounding noise of a rank-deficient
  covariance (N ≤ d) and count as 0.
- KID (Bińkowski et al. 2018), StyleGAN2-ADA `metrics/kernel_inception_distance.py`: the
  unbiased MMD² with kernel k(x, y) = (x·y/d + 1)³ averaged over `num_subsets` random
  subsets of m = min(N_real, N_fake, max_subset_size) rows of each set (numpy Generator).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from styleavatar_jax.models.inception import FEATURES, InceptionV3


def to_uint8(images) -> np.ndarray:
    """Generator images float [..., 3] in [−1, 1] -> uint8, as StyleGAN/EG3D metrics:
    (x·127.5 + 128) clipped to [0, 255], truncated."""
    x = np.asarray(images, np.float32) * 127.5 + 128.0
    return np.clip(x, 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=8)
def _compiled_features(mesh: Mesh):
    """jitted (variables, images [B, H, W, 3] uint8 or float in [0, 1]) -> [B, 2048]."""
    model = InceptionV3()

    def features(variables, images):
        x = images.astype(jnp.float32)
        if images.dtype == jnp.uint8:
            x = x / 255.0
        return model.apply(variables, x)

    repl, rows = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    return jax.jit(features, in_shardings=(repl, rows), out_shardings=rows)


@dataclasses.dataclass(frozen=True)
class FeatureExtractor:
    """Pool3 features of image arrays, `batch` images per call of one compiled program.

    FeatureExtractor(variables, batch=32, mesh=make_mesh())(images [N, H, W, 3]) -> float32
    [N, 2048]. Variables are placed on the mesh (replicated) once, here."""

    variables: dict
    batch: int
    mesh: Mesh

    def __post_init__(self):
        if self.batch < 1 or self.batch % self.mesh.size:
            raise ValueError(f"--batch={self.batch}: must be a positive multiple of the "
                             f"{self.mesh.size} devices of the mesh")  # fmt: skip
        placed = jax.device_put(self.variables, NamedSharding(self.mesh, P()))
        object.__setattr__(self, "variables", placed)

    def __call__(self, images) -> np.ndarray:
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype.kind not in "uf":
            raise ValueError(f"images: expected uint8 or float RGB [N, H, W, 3], got "
                             f"{images.dtype} {images.shape}")  # fmt: skip
        fn = _compiled_features(self.mesh)
        out = []
        for start in range(0, len(images), self.batch):
            chunk = images[start : start + self.batch]
            pad = self.batch - len(chunk)
            if pad:  # one compiled shape: repeat the last image, drop its features
                chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)])
            out.append(np.asarray(jax.device_get(fn(self.variables, chunk)))[: len(chunk) - pad])
        return np.concatenate(out) if out else np.zeros((0, FEATURES), np.float32)


def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """features [N, d] (N ≥ 2) -> mean float64 [d], covariance float64 [d, d] (N − 1)."""
    f = np.asarray(features, np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise ValueError(f"features: need [N, d] with N ≥ 2 for a covariance, got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def _psd_sqrt(sigma: np.ndarray) -> np.ndarray:
    lam, v = np.linalg.eigh(sigma)
    return (v * np.sqrt(np.clip(lam, 0, None))) @ v.T


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """tr (Σ₁Σ₂)^½ of two PSD matrices [d, d] = Σ √λ(Σ₁^½ Σ₂ Σ₁^½) (module docstring)."""
    root = _psd_sqrt(sigma1)
    m = root @ sigma2 @ root
    lam = np.linalg.eigvalsh(0.5 * (m + m.T))
    tol = len(lam) * np.finfo(np.float64).eps * max(float(lam.max(initial=0.0)), 0.0)
    return float(np.sqrt(lam[lam > tol]).sum())


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Fréchet distance of N(μ₁, Σ₁) and N(μ₂, Σ₂): μ [d], Σ [d, d] -> float (≥ 0)."""
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != mu1.shape * 2:
        raise ValueError(f"frechet_distance: shapes μ {mu1.shape}, {mu2.shape}, "
                         f"Σ {sigma1.shape}, {sigma2.shape} do not match")  # fmt: skip
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2)
    return float(max(value - 2.0 * trace_sqrt_product(sigma1, sigma2), 0.0))


def fid_from_features(features1, features2) -> float:
    """FID of feature sets [N1, d], [N2, d] (each N ≥ 2).

    With max(N1, N2) ≤ d (few images: per-group FIDs, tests) the d×d eigenproblems are
    replaced by an exact N1×N2 one: with centred rows A₁, A₂ and Σᵢ = AᵢᵀAᵢ/(Nᵢ − 1), the
    non-zero eigenvalues of Σ₁Σ₂ are those of (A₁A₂ᵀ)(A₁A₂ᵀ)ᵀ/((N1 − 1)(N2 − 1)), so
    tr (Σ₁Σ₂)^½ is the nuclear norm of A₁A₂ᵀ over √((N1 − 1)(N2 − 1))."""
    f1, f2 = np.asarray(features1, np.float64), np.asarray(features2, np.float64)
    n1, n2, d = len(f1), len(f2), f1.shape[-1]
    if f1.ndim != 2 or f2.ndim != 2 or f2.shape[1] != d or min(n1, n2) < 2:
        raise ValueError(f"features: need [N, d] sets of one d with N ≥ 2, got {f1.shape}, "
                         f"{f2.shape}")  # fmt: skip
    if max(n1, n2) > d:
        return frechet_distance(*feature_stats(f1), *feature_stats(f2))
    mu1, mu2 = f1.mean(0), f2.mean(0)
    a1, a2 = f1 - mu1, f2 - mu2
    diff = mu1 - mu2
    traces = (a1 * a1).sum() / (n1 - 1) + (a2 * a2).sum() / (n2 - 1)
    tr_sqrt = np.linalg.svd(a1 @ a2.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    return float(max(diff @ diff + traces - 2.0 * tr_sqrt, 0.0))


def kid_from_features(real, fake, *, num_subsets: int = 100, max_subset_size: int = 1000,
                      seed: int = 0) -> float:  # fmt: skip
    """KID of feature sets real [N, d], fake [M, d] (StyleGAN2-ADA's estimator; module
    docstring). Each subset draws fake rows, then real rows, without replacement."""
    real, fake = np.asarray(real, np.float64), np.asarray(fake, np.float64)
    if real.ndim != 2 or fake.ndim != 2 or real.shape[1] != fake.shape[1]:
        raise ValueError(f"kid: expected [N, d] features of one d, got {real.shape}, {fake.shape}")
    n = real.shape[1]
    m = min(len(real), len(fake), max_subset_size)
    if m < 2:
        raise ValueError(f"kid: need at least 2 images in each set, got {len(real)}, {len(fake)}")
    rng = np.random.default_rng(seed)
    t = 0.0
    for _ in range(num_subsets):
        x = fake[rng.choice(len(fake), m, replace=False)]
        y = real[rng.choice(len(real), m, replace=False)]
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(t / num_subsets / m)


def features_of_batches(extract: FeatureExtractor, batches: Iterable[np.ndarray]) -> np.ndarray:
    """Features of a stream of image batches (generated on the fly) -> float32 [N, 2048]."""
    out = [extract(b) for b in batches]
    return np.concatenate(out) if out else np.zeros((0, FEATURES), np.float32)
