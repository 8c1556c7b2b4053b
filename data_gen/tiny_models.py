"""Tiny randomly initialised SD-1.5-shaped models (the real diffusers/transformers classes),
saved as a user's local model folders would be: for the tests and bench/data_gen.py.

    save_tiny_models(root) -> {"base": root/sd, "pose": root/cn_pose, "depth": root/cn_depth,
                               "clip": root/clip}

Nothing is downloaded: the CLIP tokenizer is byte-level (every byte its own token, no
merges), written from scratch. Images are 64² at most (VAE factor 2, sample size 32).
"""

from __future__ import annotations

import json
from pathlib import Path

CROSS_DIM = 32  # text hidden size = UNet/ControlNet cross-attention width
MAX_TOKENS = 77  # SD's CLIP context length


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
          *range(ord("®"), ord("ÿ") + 1)]  # fmt: skip
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def write_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """vocab.json (256 byte symbols, their </w> forms, <|startoftext|>, <|endoftext|>) and a
    merges.txt with no merges -> their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({s: i for i, s in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder / "vocab.json", folder / "merges.txt"


def _tokenizer(folder: Path):
    from transformers import CLIPTokenizer

    vocab, merges = write_tokenizer_files(folder)
    return CLIPTokenizer(str(vocab), str(merges), model_max_length=MAX_TOKENS)


def _text_config(tokenizer):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=CROSS_DIM, intermediate_size=37,
        num_attention_heads=4, num_hidden_layers=2, max_position_embeddings=MAX_TOKENS,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, projection_dim=16,
    )  # fmt: skip


def _controlnet(seed: int):
    import torch
    from diffusers import ControlNetModel

    torch.manual_seed(seed)
    net = ControlNetModel(
        block_out_channels=(8, 16), layers_per_block=1, in_channels=4,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), cross_attention_dim=CROSS_DIM,
        conditioning_embedding_out_channels=(8, 16), norm_num_groups=4, attention_head_dim=2,
    )  # fmt: skip
    # A new ControlNet's output convolutions start at zero (the guidance has no effect until
    # trained): draw them too, so that the guidance image changes the picture.
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.startswith(("controlnet_", "controlnet_cond_embedding.conv_out")):
                param.normal_(0.0, 0.3)
    return net


def save_tiny_models(root: str | Path) -> dict[str, Path]:
    """Build, save (safetensors) and return the folders of a tiny SD pipeline, a pose and a
    depth ControlNet matching it, and a tiny CLIP (model + processor) for the view filter."""
    import torch
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTextModel,
        CLIPVisionConfig,
    )

    root = Path(root)
    tokenizer = _tokenizer(root / "_tokenizer_files")
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16), layers_per_block=1, sample_size=32, in_channels=4,
        out_channels=4, down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=CROSS_DIM,
        norm_num_groups=4, attention_head_dim=2,
    )  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=(8, 16), in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=4, sample_size=64,
    )  # fmt: skip
    text_encoder = CLIPTextModel(_text_config(tokenizer))
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    paths = dict(
        base=root / "sd", pose=root / "cn_pose", depth=root / "cn_depth", clip=root / "clip"
    )
    pipe.save_pretrained(paths["base"])
    _controlnet(1).save_pretrained(paths["pose"])
    _controlnet(2).save_pretrained(paths["depth"])
    torch.manual_seed(3)
    vision = CLIPVisionConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        projection_dim=16,
    )
    clip = CLIPModel(CLIPConfig(text_config=_text_config(tokenizer).to_dict(),
                                vision_config=vision.to_dict(), projection_dim=16))  # fmt: skip
    clip.save_pretrained(paths["clip"])
    image_processor = CLIPImageProcessor(size={"shortest_edge": 32},
                                         crop_size={"height": 32, "width": 32})  # fmt: skip
    CLIPProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(
        paths["clip"]
    )
    return paths
