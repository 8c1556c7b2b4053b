"""Parity with the official EG3D code (tests/fixtures: eg3d_tiny.pkl and its outputs).

Tolerances (issue 2): ws/planes 1e-4·max|ref|; images, depth, logits 1e-3 absolute;
gradients 1e-3 relative to max|ref|.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from styleavatar_jax.convert import check
from styleavatar_jax.models.discriminator import DualDiscriminator
from styleavatar_jax.models.triplane import TriPlaneGenerator
from styleavatar_jax.render.rays import pixel_rays
from styleavatar_jax.render.renderer import RenderUniforms


def _uniforms(io):
    return RenderUniforms(
        jnp.asarray(io["rng/00_stratified_jitter"]), jnp.asarray(io["rng/01_pdf_u"])
    )


def test_every_output_matches_eg3d(converted, io, neural_res):
    _, nets, (G, D) = converted
    rows = check.compare(
        check.run_reference_inputs(G, nets["G_ema"], D, nets["D"], io, neural_res), io
    )
    assert {r[0] for r in rows} == set(check.RELATIVE + check.ABSOLUTE)
    bad = [(n, e, t) for n, e, t in rows if not e <= t]
    assert not bad, f"outputs off the EG3D reference (name, err, tol): {bad}"


def test_d_on_our_own_images_matches(converted, io, neural_res):
    _, nets, (G, D) = converted

    @jax.jit
    def logits(g_vars, d_vars, z, c, u):
        out = G.apply(g_vars, z, c, neural_res=neural_res, noise_mode="const", uniforms=u)
        return D.apply(d_vars, out["image"], out["image_raw"], c)

    np.testing.assert_allclose(
        logits(nets["G_ema"], nets["D"], io["z"], io["c"], _uniforms(io)), io["logits"], atol=1e-3
    )


def test_gradients_match(converted, io, neural_res):
    """L = mean D(G_ema(z, c)) logits; d/dz and d/d(three parameters) as EG3D's autograd."""
    _, nets, (G, D) = converted
    g_vars, d_vars, c = nets["G_ema"], nets["D"], io["c"]

    def loss(params, z):
        out = G.apply(
            {**g_vars, "params": params},
            z,
            c,
            neural_res=neural_res,
            noise_mode="const",
            uniforms=_uniforms(io),
        )
        return D.apply(d_vars, out["image"], out["image_raw"], c).mean()

    L, (g_params, g_z) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(
        g_vars["params"], io["z"]
    )
    np.testing.assert_allclose(L, io["grad/L"], atol=1e-4)
    ours = {
        "grad/z": g_z,
        "grad/G_ema/decoder.net.0.weight": g_params["decoder"]["fc0"]["kernel"].T,
        "grad/G_ema/backbone.synthesis.b32.conv0.weight": g_params["backbone"]["synthesis"]["b32"][
            "conv0"
        ]["kernel"].transpose(3, 2, 0, 1),
        "grad/G_ema/superresolution.block0.conv0.affine.bias": g_params["superresolution"][
            "block0"
        ]["conv0"]["affine"]["bias"],
    }
    for key, value in ours.items():
        ref = io[key]
        rel = np.abs(np.asarray(value) - ref).max() / np.abs(ref).max()
        assert rel <= 1e-3, f"{key}: relative error {rel:.2e}"


def test_renderer_internals_match(converted, io, neural_res):
    """Sample 0's rays, coarse/fine depths, densities and weights (fixture debug/*)."""
    _, nets, (G, _) = converted
    v = nets["G_ema"]

    @jax.jit
    def internals(v, z, c, u):
        ws = G.apply(v, z, c, method=G.mapping)
        planes = G.apply(v, ws, noise_mode="const", method=G.planes)
        return G.apply(v, planes, c, neural_res=neural_res, uniforms=u, method=G.render_planes)

    out = internals(v, io["z"], io["c"], _uniforms(io))
    first = lambda x: np.asarray(x)[0].reshape(neural_res**2, -1)
    pairs = {
        "depths_coarse": first(out["depths_coarse"]),
        "sigma_coarse": first(out["sigma_coarse"]),
        "weights_coarse": first(out["weights_coarse"]),
        "depths_fine": first(out["depths_fine"]),
        "sigma_fine": first(out["sigma_fine"]),
        "depths_all": first(out["depths_all"]),
        "weights_final": first(out["weights"]),
        "depth_samples": first(out["depth"]),
    }
    report = []
    for key, value in pairs.items():
        ref = io[f"debug/{key}"]
        # Fine samples sit where the CDF puts them: a 4e-5 shift in depth (float32 noise in
        # the planes) moves the raw density of this steep fixture by up to 1e-3·max on CPU
        # (measured 7.6e-4) and the final weights by 1.4e-4·max; an H200 measured 1.0e-3 and
        # 4.1e-4. The outputs the issue pins (images, depth) stay within 1e-3 on both.
        rel = {"sigma_fine": 2e-3, "weights_final": 6e-4}.get(key, 1e-4)
        err, tol = float(np.abs(value - ref).max()), rel * float(np.abs(ref).max())
        report.append((key, err, tol))
    assert all(err <= tol for _, err, tol in report), f"(name, max abs err, tol): {report}"
    c = io["c"][:1]
    origins, dirs = pixel_rays(c[:, :16].reshape(1, 4, 4), c[:, 16:].reshape(1, 3, 3), neural_res)
    np.testing.assert_allclose(origins[0], io["debug/ray_origins"], atol=1e-6)
    np.testing.assert_allclose(dirs[0], io["debug/ray_directions"], atol=1e-6)


def test_bf16_compute_stays_within_documented_bound(converted, io, neural_res):
    """bf16 backbone, SR and D (float32 params, mapping, decoder, renderer) against the
    float32 EG3D outputs. Measured on the committed fixture (seed 0): image 0.237 (2.2% of
    max|image| = 10.6), logits 0.0046; image_raw per pixel: mean 0.0033, 99th percentile
    0.021, max 0.111 (on the earlier harness's weights: 0.0035, 0.024, 0.062: the same
    distribution, the max is its tail). Bound (DESIGN.md): image ≤ 5% of max|image|,
    image_raw mean ≤ 0.01, 99th percentile ≤ 0.05 and max ≤ 0.15, logits ≤ 0.02.
    """
    cfg, nets, (G, D) = converted
    G16 = TriPlaneGenerator(dataclasses.replace(G.cfg, backbone_bf16=True, sr_bf16=True))
    D16 = DualDiscriminator(dataclasses.replace(D.cfg, bf16=True))
    run = jax.jit(
        lambda v, z, c, u: G16.apply(v, z, c, neural_res=neural_res, noise_mode="const", uniforms=u)
    )
    out = run(nets["G_ema"], io["z"], io["c"], _uniforms(io))
    assert out["image"].dtype == jnp.float32
    img_err = np.abs(np.asarray(out["image"]).transpose(0, 3, 1, 2) - io["image"]).max()
    raw = np.abs(np.asarray(out["image_raw"]).transpose(0, 3, 1, 2) - io["image_raw"])
    raw_err = (raw.mean(), np.quantile(raw, 0.99), raw.max())
    nhwc = lambda x: x.transpose(0, 2, 3, 1)
    logit_err = np.abs(
        np.asarray(D16.apply(nets["D"], nhwc(io["image"]), nhwc(io["image_raw"]), io["c"]))
        - io["logits"]
    ).max()
    bound = 0.05 * np.abs(io["image"]).max()
    raw_ok = raw_err[0] <= 0.01 and raw_err[1] <= 0.05 and raw_err[2] <= 0.15
    assert img_err <= bound and raw_ok and logit_err <= 0.02, (img_err, raw_err, logit_err)
    assert img_err > 0  # bf16 really ran


@pytest.mark.parametrize("axes", ["corrected"])
def test_corrected_plane_axes_change_the_render(converted, io, neural_res, axes):
    _, nets, (G, _) = converted
    G2 = TriPlaneGenerator(
        dataclasses.replace(G.cfg, render=dataclasses.replace(G.cfg.render, plane_axes=axes))
    )
    run = lambda g: jax.jit(
        lambda v, z, c, u: g.apply(v, z, c, neural_res=neural_res, noise_mode="const", uniforms=u)
    )
    a = run(G)(nets["G_ema"], io["z"], io["c"], _uniforms(io))
    b = run(G2)(nets["G_ema"], io["z"], io["c"], _uniforms(io))
    np.testing.assert_allclose(a["planes"], b["planes"], atol=1e-4)  # separate compilations
    assert np.abs(np.asarray(a["image_raw"]) - np.asarray(b["image_raw"])).max() > 1e-3
