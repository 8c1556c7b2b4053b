"""Latent walks: frames between seeds in z (slerp) or w (lerp), and truncation sweeps.

A walk through seeds s0, s1, ..., sn visits each in turn and comes back to s0 (a loop, as
EG3D's gen_videos.py), `frames_per_seed` frames per leg: len(seeds)·frames_per_seed frames.
z walks slerp between Gaussian latents and map each frame (truncation after mapping); w walks
lerp between the seeds' (truncated) ws. A truncation sweep keeps one seed and moves psi.
The camera is fixed or orbits slowly: yaw(t) = yaw + orbit·sin(2πt/T).
"""

from __future__ import annotations

import numpy as np

from styleavatar_jax import sampling


def lerp(a: np.ndarray, b: np.ndarray, t) -> np.ndarray:
    """a, b [..., D], t [...] or float -> (1 − t)·a + t·b [..., D]."""
    t = np.asarray(t, np.float64)[..., None]
    return ((1 - t) * a + t * b).astype(np.result_type(a, b))


def slerp(a: np.ndarray, b: np.ndarray, t, eps: float = 1e-6) -> np.ndarray:
    """Spherical interpolation (Shoemake 1985) along the great circle from a to b [..., D],
    t [...] or float. Norms interpolate as in the formula (unit vectors stay unit); nearly
    parallel vectors fall back to lerp."""
    a64, b64 = np.asarray(a, np.float64), np.asarray(b, np.float64)
    t = np.asarray(t, np.float64)[..., None]
    na = np.linalg.norm(a64, axis=-1, keepdims=True)
    nb = np.linalg.norm(b64, axis=-1, keepdims=True)
    cos = np.clip(np.sum(a64 * b64, -1, keepdims=True) / np.maximum(na * nb, 1e-30), -1, 1)
    omega = np.arccos(cos)
    s = np.sin(omega)
    small = s < eps
    s = np.where(small, 1.0, s)
    wa = np.where(small, 1 - t, np.sin((1 - t) * omega) / s)
    wb = np.where(small, t, np.sin(t * omega) / s)
    return (wa * a64 + wb * b64).astype(np.result_type(a, b))


def walk_schedule(num_keys: int, frames_per_key: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A closed loop through num_keys keyframes -> (from [T], to [T], t [T]), T = num_keys ·
    frames_per_key; frame f blends key f // n to the next (cyclically) by (f % n) / n."""
    if num_keys < 2 or frames_per_key < 1:
        raise ValueError(f"a walk needs at least 2 seeds and 1 frame per seed, got {num_keys} "
                         f"seeds and {frames_per_key} frames per seed")  # fmt: skip
    f = np.arange(num_keys * frames_per_key)
    i = f // frames_per_key
    return i, (i + 1) % num_keys, (f % frames_per_key) / frames_per_key


def z_walk(z: np.ndarray, frames_per_key: int) -> np.ndarray:
    """Keyframe latents z [N, D] -> slerped latents [N·frames_per_key, D] (a loop)."""
    i, j, t = walk_schedule(len(z), frames_per_key)
    return slerp(z[i], z[j], t)


def w_walk(ws: np.ndarray, frames_per_key: int) -> np.ndarray:
    """Keyframe ws [N, L, w] -> lerped ws [N·frames_per_key, L, w] (a loop)."""
    i, j, t = walk_schedule(len(ws), frames_per_key)
    return lerp(ws[i], ws[j], t[:, None])


def parse_sweep(spec: str, flag: str = "--truncation-sweep") -> np.ndarray:
    """'A:B:N' -> N values from A to B inclusive (psi of each frame)."""
    parts = spec.split(":")
    try:
        a, b, n = float(parts[0]), float(parts[1]), int(parts[2])
        if len(parts) != 3 or n < 2:
            raise ValueError
    except (ValueError, IndexError):
        raise ValueError(f"{flag}={spec!r}: expected A:B:N (psi from A to B in N ≥ 2 frames, "
                         "e.g. 0:1:16)") from None  # fmt: skip
    return np.linspace(a, b, n, dtype=np.float32)


def orbit_labels(num_frames: int, camera: dict, yaw_deg: float = 0.0, pitch_deg: float = 0.0,
                 orbit_deg: float = 0.0) -> np.ndarray:  # fmt: skip
    """Cameras of a walk [T, 25]: yaw(t) = yaw + orbit·sin(2πt/T) degrees, pitch fixed."""
    t = np.arange(num_frames) / num_frames
    yaw = np.radians(yaw_deg + orbit_deg * np.sin(2 * np.pi * t)).astype(np.float32)
    pitch = np.full_like(yaw, np.radians(pitch_deg))
    return sampling.view_labels(yaw, pitch, camera)
