"""CLIP embeddings/s: our Flax port vs transformers 5 (PyTorch), same random weights.

    python bench/clip.py                        # ViT-B/32 sizes, batch 8, CPU
    python bench/clip.py --batch 8,32 --dtype bfloat16 --iters 20 --json out.json

Rows (both sides compute the same function: the torch CLIPModel's random weights are
converted into ours through convert_state_dict):
  image model  preprocessed pixel_values [B, 224, 224, 3] -> features (get_image_features)
  image e2e    uint8 [B, 256, 320, 3] -> features: ours resizes/crops on device inside the
               jitted program; torch runs CLIPImageProcessor (PIL backend) + the model
  text model   ids [B, 77] -> features (get_text_features)
  text e2e     strings -> features, tokenizer included (the byte-level offline vocabulary
               of tests/test_clip.py: its ids are longer than the real vocabulary's, the
               model cost is the same since both pad to 77)
Each row: compile time (first call) and the median of --iters timed calls (block_until_ready).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from styleavatar_jax.convert import clip as clip_convert  # noqa: E402
from styleavatar_jax.models.clip import ClipConfig, TextConfig, VisionConfig  # noqa: E402

PROMPT = "a 3D cartoon avatar of a girl with long red hair, smiling, front view, high quality"


def time_calls(fn, iters: int) -> tuple[float, float]:
    """(first call s, median s of iters later calls)."""
    t = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - t
    times = []
    for _ in range(iters):
        t = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t)
    return first, statistics.median(times)


def machine() -> str:
    dev = jax.devices()[0]
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cpus, jax {dev}"


def make_cases(clip, model, proc, tok, b: int, rng: np.random.Generator) -> dict:
    """name -> (ours, torch) zero-argument callables at batch b."""
    import torch

    imgs = rng.integers(0, 256, (b, 256, 320, 3), dtype=np.uint8)
    pv = proc(images=list(imgs), return_tensors="np")["pixel_values"]  # [B, 3, 224, 224]
    pv_nhwc, imgs_dev = jnp.asarray(pv.transpose(0, 2, 3, 1)), jnp.asarray(imgs)
    texts = [PROMPT] * b
    ids = clip.tokenize(texts)
    return {
        "image model": (
            lambda: clip.embed_pixels(pv_nhwc, normalize=False),
            lambda: model.get_image_features(pixel_values=torch.from_numpy(pv)).pooler_output,
        ),
        "image e2e": (
            lambda: clip.embed_images(imgs_dev),
            lambda: (
                model.get_image_features(
                    pixel_values=proc(images=list(imgs), return_tensors="pt")["pixel_values"]
                ).pooler_output
            ),
        ),
        "text model": (
            lambda: clip.embed_tokens(ids, normalize=False),
            lambda: model.get_text_features(input_ids=torch.from_numpy(ids).long()).pooler_output,
        ),
        "text e2e": (
            lambda: clip.embed_texts(texts),
            lambda: (
                model.get_text_features(
                    input_ids=tok(texts, padding="max_length", max_length=77, return_tensors="pt")[
                        "input_ids"
                    ]
                ).pooler_output
            ),
        ),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", default="8", help="comma-separated batch sizes")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--no-torch", action="store_true", help="ours only")
    p.add_argument("--json", help="write the rows here")
    args = p.parse_args()

    import torch
    import transformers

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
    from test_clip import _tiny_config, _write_tokenizer  # the offline tokenizer

    cfg = ClipConfig(VisionConfig(), TextConfig(), 512)  # ViT-B/32 (openai/clip-vit-base-patch32)
    tmp = Path(tempfile.mkdtemp())
    tok, vocab = _write_tokenizer(tmp)
    tcfg = _tiny_config(vocab)  # then ViT-B/32 sizes over it
    tcfg.text_config.update(
        dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8)
    )
    tcfg.vision_config.update(
        dict(
            hidden_size=768,
            intermediate_size=3072,
            num_hidden_layers=12,
            num_attention_heads=12,
            image_size=224,
            patch_size=32,
        )
    )
    tcfg.projection_dim = 512
    torch.manual_seed(0)
    model = transformers.CLIPModel(tcfg).eval()
    state = {k: v.numpy() for k, v in model.state_dict().items()}
    cfg = clip_convert.clip_config(tcfg.to_dict())
    params = clip_convert.convert_state_dict(state, cfg)
    dtype = jnp.bfloat16 if args.dtype == "bfloat16" else jnp.float32
    clip = clip_convert.Clip(
        cfg,
        params,
        clip_convert.load_tokenizer(tmp),
        clip_convert.ImagePreprocess(224, (224, 224)),
        dtype,
    )
    proc = transformers.CLIPImageProcessor()  # 224, bicubic, OpenAI mean/std
    print(f"# {machine()}; torch {torch.__version__} ({torch.get_num_threads()} threads)")
    print(f"# ViT-B/32 sizes, random weights, ours in {args.dtype}")
    rows = []
    rng = np.random.default_rng(0)
    for b in [int(x) for x in args.batch.split(",")]:
        cases = make_cases(clip, model, proc, tok, b, rng)
        for name, (ours, theirs) in cases.items():
            first, t = time_calls(ours, args.iters)
            row = dict(case=name, batch=b, jax_compile_s=first, jax_s=t, jax_per_s=b / t)
            if not args.no_torch:
                with torch.inference_mode():
                    _, tt = time_calls(theirs, args.iters)
                    if name.endswith("model"):
                        ref, out = theirs().numpy(), np.asarray(ours())
                        row["max_abs_err"] = float(np.abs(out - ref).max())
                row.update(torch_s=tt, torch_per_s=b / tt, speedup=tt / t)
            rows.append(row)
            msg = f"{name:12s} B={b:3d}  ours {b / t:8.1f}/s (compile {first:5.1f} s)"
            if "torch_s" in row:
                msg += f"  torch {b / tt:8.1f}/s  x{tt / t:4.2f}"
            if "max_abs_err" in row:
                msg += f"  max|ours-torch| {row['max_abs_err']:.1e}"
            print(msg, flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(dict(machine=machine(), rows=rows), indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
