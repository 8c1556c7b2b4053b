#!/usr/bin/env python3
"""Write a randomly initialised CLIP (transformers format: config.json, model.safetensors,
a byte-level tokenizer, preprocessor_config.json) for offline tests and CPU demos.

    python scripts/random_clip.py OUT_DIR [--size tiny|small] [--seed 0]

Needs torch (CPU wheel) and transformers. A random CLIP embeds images as random ViT
features: deterministic and informative about the image, but not semantic, and its text
tower is meaningless. Real runs use a trained one, e.g. openai/clip-vit-base-patch32.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from data_gen.tiny_models import write_tokenizer_files

SIZES = {
    # hidden, mlp, layers, heads, image, patch, projection
    "tiny": (32, 48, 2, 4, 32, 8, 16),
    "small": (128, 256, 4, 4, 64, 8, 64),
}


def write_random_clip(out: str | Path, size: str = "tiny", seed: int = 0) -> Path:
    """Build, save (atomically: temp dir, then rename) and return `out`."""
    import torch
    import transformers

    if size not in SIZES:
        raise ValueError(f"--size {size!r}: expected one of {sorted(SIZES)}")
    hidden, mlp, layers, heads, image, patch, proj = SIZES[size]
    out = Path(out).absolute()
    if out.exists():
        raise FileExistsError(f"{out} exists; choose another OUT_DIR")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        write_tokenizer_files(tmp)  # byte-level: every character a token, no merges
        tok = transformers.CLIPTokenizer.from_pretrained(tmp)
        tok.save_pretrained(tmp)
        vocab = tok.get_vocab()
        common = dict(
            hidden_size=hidden,
            intermediate_size=mlp,
            num_hidden_layers=layers,
            num_attention_heads=heads,
        )
        text = transformers.CLIPTextConfig(
            **common,
            vocab_size=len(vocab),
            max_position_embeddings=77,
            bos_token_id=vocab["<|startoftext|>"],
            pad_token_id=vocab["<|endoftext|>"],
            eos_token_id=vocab["<|endoftext|>"],
        )
        vision = transformers.CLIPVisionConfig(**common, image_size=image, patch_size=patch)
        cfg = transformers.CLIPConfig(
            text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=proj
        )
        torch.manual_seed(seed)
        transformers.CLIPModel(cfg).eval().save_pretrained(tmp, safe_serialization=True)
        transformers.CLIPImageProcessor(
            size={"shortest_edge": image}, crop_size={"height": image, "width": image}
        ).save_pretrained(tmp)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", help="directory to create")
    parser.add_argument("--size", default="tiny", choices=sorted(SIZES))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"wrote {write_random_clip(args.out, args.size, args.seed)}")


if __name__ == "__main__":
    main()
