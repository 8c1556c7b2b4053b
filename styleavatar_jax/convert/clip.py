"""A transformers CLIP directory or hub id -> `Clip`: Flax params, tokenizer, preprocessing.

    clip = load_clip("openai/clip-vit-base-patch32")        # or a local save_pretrained dir
    e_img = clip.embed_images(renders)                        # [B, H, W, 3] -> [B, 512], |e| = 1
    e_txt = clip.embed_texts(["a cartoon avatar, front view"])  # -> [B, 512], |e| = 1

Weights come from `model.safetensors` through safetensors.numpy (no torch). A torch key is
its Flax path joined by '.' (`layers_3` for `layers.3`) with `kernel` for `weight` (dense
kernels transposed to [in, out], the patch conv to HWIO), `scale` for a layernorm's weight
and `embedding` for an embedding's. Every Flax leaf must find its tensor with the right
shape and every tensor must be used (the `position_ids` buffers aside), else a ValueError
names the key. Supported: CLIPModel (both towers), CLIPVisionModelWithProjection (images
only) and CLIPTextModelWithProjection (texts only) directories.

Tokenizer: the `tokenizers` pipeline that transformers 5's CLIPTokenizer builds from the
vocabulary and merges (NFC, whitespace runs -> ' ', lowercase; CLIP's split regex; byte-level
BPE with '</w>'; <|startoftext|> ... <|endoftext|>), truncated and padded to the text
context (77). Texts past it keep the first 75 tokens, like `truncation=True`.

Images: transformers' CLIPImageProcessor (its PIL backend; torchvision is not installed)
resizes the shortest side to `size` with PIL bicubic, centre-crops `crop_size`, scales to
[0, 1] and normalises. Here the resize and crop are one `jax.image.scale_and_translate`
(Keys cubic a = -0.5, antialiased when shrinking: PIL's kernel and support), so it runs
jitted on device next to the generator and is differentiable for float inputs. uint8 inputs
also round to uint8 after each pass (PIL resizes width, then height, in uint8), which
brings the result within PIL's fixed-point rounding; float inputs are not quantised.
tests/test_clip.py measures both against the processor; notes/clip.md has the figures.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import flax
import jax
import jax.numpy as jnp
import numpy as np
import safetensors.numpy
import tokenizers
from tokenizers import Regex, normalizers, pre_tokenizers, processors

from styleavatar_jax.models.clip import (
    ClipConfig,
    ClipModel,
    TextConfig,
    VisionConfig,
    param_shapes,
)

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
PREPROCESSOR = "preprocessor_config.json"
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.json",
    "merges.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
# transformers 5's CLIPTokenizer: the pre-tokenizer split (contractions, letter runs, single
# digits, punctuation runs) and its default special tokens.
_SPLIT = (
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]"""
    r"""|[^\s\p{L}\p{N}]+"""
)
_SPECIAL = {
    "bos_token": "<|startoftext|>",
    "eos_token": "<|endoftext|>",
    "pad_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
}


# ----------------------------------------------------------------------------- configs


def _vision_config(d: Mapping[str, Any]) -> VisionConfig:
    fields = {f.name for f in dataclasses.fields(VisionConfig)}
    kw = {k: d[k] for k in fields if k in d}
    if not isinstance(kw.get("image_size", 224), int) or not isinstance(
        kw.get("patch_size", 32), int
    ):
        raise ValueError(
            f"{CONFIG}: vision image_size/patch_size must be integers (square images), got "
            f"{kw.get('image_size')}/{kw.get('patch_size')}"
        )
    return VisionConfig(**kw)


def _text_config(d: Mapping[str, Any]) -> TextConfig:
    fields = {f.name for f in dataclasses.fields(TextConfig)}
    kw = {k: d[k] for k in fields if k in d and d[k] is not None}
    if not isinstance(kw.get("eos_token_id", 0), int):
        raise ValueError(
            f"{CONFIG}: text eos_token_id must be one integer, got {kw['eos_token_id']!r}"
        )
    return TextConfig(**kw)


def clip_config(d: Mapping[str, Any]) -> ClipConfig:
    """A transformers config.json dict (clip, clip_vision_model, clip_text_model) -> ClipConfig.

    Missing fields take transformers 5's CLIP*Config defaults (which are ours)."""
    kind = d.get("model_type", "clip")
    proj = d.get("projection_dim", 512)
    if kind == "clip":
        sub = lambda name: {**d.get(f"{name}_config", {}), **(d.get(f"{name}_config_dict") or {})}
        return ClipConfig(
            _vision_config(sub("vision")),
            _text_config(sub("text")),
            proj,
            d.get("logit_scale_init_value", 2.6592),
        )
    if kind == "clip_vision_model":
        return ClipConfig(_vision_config(d), None, proj)
    if kind == "clip_text_model":
        return ClipConfig(None, _text_config(d), proj)
    raise ValueError(
        f"{CONFIG}: model_type {kind!r} is not a CLIP model "
        "(expected 'clip', 'clip_vision_model' or 'clip_text_model')"
    )


# ----------------------------------------------------------------------------- weights


def _torch_key(path: tuple[str, ...]) -> tuple[str, str]:
    """Flax path -> (torch key, kind of transform)."""
    parts = [p.replace("layers_", "layers.") if p.startswith("layers_") else p for p in path]
    leaf = parts[-1]
    if leaf == "kernel":
        kind = "conv" if parts[-2] == "patch_embedding" else "dense"
        return ".".join([*parts[:-1], "weight"]), kind
    if leaf in ("scale", "embedding"):
        return ".".join([*parts[:-1], "weight"]), "copy"
    return ".".join(parts), "copy"


def convert_state_dict(state: Mapping[str, np.ndarray], cfg: ClipConfig) -> dict:
    """transformers CLIP tensors (numpy) -> float32 Flax params of `ClipModel(cfg)`."""
    shapes = param_shapes(cfg)
    flat = flax.traverse_util.flatten_dict(shapes)
    used, out = set(), {}
    for path, spec in flat.items():
        key, kind = _torch_key(path)
        if key not in state:
            raise ValueError(f"{WEIGHTS}: missing tensor {key!r} (for Flax {'/'.join(path)})")
        x = np.asarray(state[key], np.float32)
        if kind == "dense":
            x = x.T
        elif kind == "conv":
            x = x.transpose(2, 3, 1, 0)  # [O, I, kh, kw] -> [kh, kw, I, O]
        if x.shape != spec.shape:
            raise ValueError(
                f"{WEIGHTS}: tensor {key!r} has shape {tuple(state[key].shape)}, the config "
                f"needs {spec.shape} after conversion"
            )
        used.add(key)
        out[path] = jnp.asarray(x)
    unused = sorted(k for k in state if k not in used and not k.endswith("position_ids"))
    if unused:
        raise ValueError(f"{WEIGHTS}: tensors the config does not use: {unused[:8]}")
    return flax.traverse_util.unflatten_dict(out)


# ----------------------------------------------------------------------------- tokenizer


@dataclasses.dataclass(frozen=True)
class ClipTokenizer:
    """texts -> ids [B, context] int32, as transformers 5's CLIPTokenizer with
    padding="max_length", truncation=True, max_length=context."""

    tokenizer: tokenizers.Tokenizer
    context: int

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        if isinstance(texts, str):
            raise ValueError("texts: expected a list of strings, got one string")
        enc = self.tokenizer.encode_batch(list(texts))
        return np.asarray([e.ids for e in enc], np.int32).reshape(len(enc), self.context)


def _token(value: Any) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def load_tokenizer(directory: str | os.PathLike, context: int = 77) -> ClipTokenizer:
    """vocab + merges from tokenizer.json (else vocab.json + merges.txt), special tokens from
    tokenizer_config.json / special_tokens_map.json, built like CLIPTokenizer.__init__."""
    d = Path(directory)
    if (d / "tokenizer.json").is_file():
        model = json.loads((d / "tokenizer.json").read_text(encoding="utf-8"))["model"]
        vocab = model["vocab"]
        merges = [
            tuple(m.split(" ", 1)) if isinstance(m, str) else tuple(m) for m in model["merges"]
        ]
    elif (d / "vocab.json").is_file() and (d / "merges.txt").is_file():
        vocab = json.loads((d / "vocab.json").read_text(encoding="utf-8"))
        lines = (d / "merges.txt").read_text(encoding="utf-8").split("\n")
        merges = [tuple(m.split()) for m in lines if m.strip() and not m.startswith("#version")]
    else:
        raise FileNotFoundError(
            f"{d}: no tokenizer: expected tokenizer.json or vocab.json + merges.txt"
        )
    special = dict(_SPECIAL)
    for name in ("special_tokens_map.json", "tokenizer_config.json"):
        if (d / name).is_file():
            cfg = json.loads((d / name).read_text(encoding="utf-8"))
            special.update({k: _token(cfg[k]) for k in _SPECIAL if _token(cfg.get(k))})
    for k, tok in special.items():
        if tok not in vocab:
            raise ValueError(f"{d}: {k} {tok!r} is not in the vocabulary")

    tok = tokenizers.Tokenizer(
        tokenizers.models.BPE(
            vocab=vocab,
            merges=merges,
            continuing_subword_prefix="",
            end_of_word_suffix="</w>",
            fuse_unk=False,
            unk_token=special["unk_token"],
        )
    )
    tok.normalizer = normalizers.Sequence(
        [normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "), normalizers.Lowercase()]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False),
        ]
    )
    tok.add_special_tokens(list(dict.fromkeys(special.values())))
    bos, eos, pad = (special[k] for k in ("bos_token", "eos_token", "pad_token"))
    tok.post_processor = processors.RobertaProcessing(
        (eos, vocab[eos]), (bos, vocab[bos]), trim_offsets=False, add_prefix_space=False
    )
    tok.enable_truncation(context)
    tok.enable_padding(pad_id=vocab[pad], pad_token=pad, length=context)
    return ClipTokenizer(tok, context)


# ----------------------------------------------------------------------------- images


@dataclasses.dataclass(frozen=True)
class ImagePreprocess:
    """CLIPImageProcessor's numbers: resize the shortest side to `size`, centre-crop `crop`
    (height, width), normalise with mean/std (RGB)."""

    size: int = 224
    crop: tuple[int, int] = (224, 224)
    mean: tuple[float, float, float] = OPENAI_MEAN
    std: tuple[float, float, float] = OPENAI_STD


def image_preprocess(d: Mapping[str, Any], image_size: int) -> ImagePreprocess:
    """preprocessor_config.json dict ({} when absent) -> ImagePreprocess."""
    unsupported = {
        k: d[k]
        for k, want in (("resample", 3), ("do_resize", True), ("do_center_crop", True))
        if k in d and d[k] != want
    }
    if unsupported:
        raise ValueError(
            f"{PREPROCESSOR}: {unsupported} not supported (CLIP's bicubic resize + centre crop)"
        )
    size, crop = d.get("size", image_size), d.get("crop_size", image_size)
    if isinstance(size, dict):
        if "shortest_edge" not in size:
            raise ValueError(f"{PREPROCESSOR}: size {size}: expected {{'shortest_edge': n}}")
        size = size["shortest_edge"]
    crop = (crop["height"], crop["width"]) if isinstance(crop, dict) else (crop, crop)
    if crop != (image_size, image_size):
        raise ValueError(
            f"{PREPROCESSOR}: crop_size {crop} differs from the model's image_size {image_size}"
        )
    return ImagePreprocess(
        int(size),
        crop,
        tuple(d.get("image_mean", OPENAI_MEAN)),
        tuple(d.get("image_std", OPENAI_STD)),
    )


def _resize_axis(x, axis: int, new: int, crop: int, quantise: bool):
    """Resize `axis` of x [B, H, W, C] (values in [0, 1]) to `new`, keeping the centred `crop`
    samples: PIL bicubic + transformers' centre crop offset ((new - crop) // 2)."""
    old = x.shape[axis]
    if new == old and crop == old:
        return x
    shape = list(x.shape)
    shape[axis] = crop
    scale = jnp.asarray([new / old], jnp.float32)
    shift = jnp.asarray([-((new - crop) // 2)], jnp.float32)
    y = jax.image.scale_and_translate(
        x, shape, (axis,), scale, shift, method="cubic", antialias=True
    )
    y = jnp.clip(y, 0.0, 1.0)  # PIL saturates to the uint8 range
    return jnp.round(y * 255.0) / 255.0 if quantise else y


def preprocess_images(images: jax.Array, prep: ImagePreprocess) -> jax.Array:
    """images [B, H, W, 3] uint8 or float in [0, 1] -> pixel_values [B, h, w, 3] float32."""
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images: expected [batch, height, width, 3], got {images.shape}")
    quantise = images.dtype == jnp.uint8
    x = images.astype(jnp.float32) / (255.0 if quantise else 1.0)
    h, w = x.shape[1:3]
    short, long = (w, h) if w <= h else (h, w)
    new_long = int(prep.size * long / short)  # transformers' get_resize_output_image_size
    new_h, new_w = (new_long, prep.size) if w <= h else (prep.size, new_long)
    if prep.crop[0] > new_h or prep.crop[1] > new_w:
        raise ValueError(f"crop {prep.crop} is larger than the resized image {new_h}x{new_w}")
    x = _resize_axis(x, 2, new_w, prep.crop[1], quantise)  # PIL: horizontal pass first
    x = _resize_axis(x, 1, new_h, prep.crop[0], quantise)
    return (x - jnp.asarray(prep.mean)) / jnp.asarray(prep.std)


# ----------------------------------------------------------------------------- Clip


@jax.jit
def _l2(x: jax.Array) -> jax.Array:
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


# One program per input shape; normalisation is a separate small program, so asking for
# both variants compiles the towers once.
@functools.partial(jax.jit, static_argnames=("cfg", "dtype", "prep"))
def _embed_images(params, images, *, cfg, dtype, prep):
    x = preprocess_images(images, prep)
    return ClipModel(cfg, dtype).apply({"params": params}, x, method="encode_image")


@functools.partial(jax.jit, static_argnames=("cfg", "dtype"))
def _embed_pixels(params, pixel_values, *, cfg, dtype):
    return ClipModel(cfg, dtype).apply({"params": params}, pixel_values, method="encode_image")


@functools.partial(jax.jit, static_argnames=("cfg", "dtype"))
def _embed_tokens(params, input_ids, *, cfg, dtype):
    return ClipModel(cfg, dtype).apply({"params": params}, input_ids, method="encode_text")


@dataclasses.dataclass(frozen=True)
class Clip:
    """A loaded CLIP: config, float32 params, tokenizer, preprocessing, compute dtype.

    Each method is one jitted program per input shape; params are arguments (not
    constants), so the compiled programs stay small. Embeddings are float32 [B, P] with
    P = config.projection_dim, L2-normalised unless normalize=False (then they equal
    transformers' get_image_features / get_text_features).
    """

    config: ClipConfig
    params: Any
    tokenizer: ClipTokenizer | None
    preprocess: ImagePreprocess | None
    dtype: Any = jnp.float32

    def embed_images(self, images: jax.Array, *, normalize: bool = True) -> jax.Array:
        """images [B, H, W, 3], uint8 or float in [0, 1], any size -> [B, P]."""
        self._need("vision")
        c, t, p = self.config, self.dtype, self.preprocess
        e = _embed_images(self.params, jnp.asarray(images), cfg=c, dtype=t, prep=p)
        return _l2(e) if normalize else e

    def embed_pixels(self, pixel_values: jax.Array, *, normalize: bool = True) -> jax.Array:
        """pixel_values [B, S, S, 3], already preprocessed (CLIPImageProcessor's output in
        channels-last) -> [B, P]."""
        self._need("vision")
        e = _embed_pixels(self.params, jnp.asarray(pixel_values), cfg=self.config, dtype=self.dtype)
        return _l2(e) if normalize else e

    def tokenize(self, texts: Sequence[str]) -> np.ndarray:
        """texts -> input_ids [B, 77] int32 (padded with the pad token, truncated)."""
        self._need("text")
        if self.tokenizer is None:
            raise ValueError("this CLIP directory has no tokenizer files")
        return self.tokenizer(texts)

    def embed_tokens(self, input_ids: jax.Array, *, normalize: bool = True) -> jax.Array:
        """input_ids [B, T] -> [B, P], pooled at EOS as transformers' CLIPTextModel."""
        self._need("text")
        ids = jnp.asarray(input_ids, jnp.int32)
        e = _embed_tokens(self.params, ids, cfg=self.config, dtype=self.dtype)
        return _l2(e) if normalize else e

    def embed_texts(self, texts: Sequence[str], *, normalize: bool = True) -> jax.Array:
        """texts (list of str) -> [B, P]."""
        return self.embed_tokens(self.tokenize(texts), normalize=normalize)

    @property
    def logit_scale(self) -> float:
        """exp(logit_scale): the temperature CLIP multiplies cosine similarities by."""
        return float(jnp.exp(self.params["logit_scale"]))

    def _need(self, tower: str) -> None:
        if getattr(self.config, tower) is None:
            raise ValueError(f"this CLIP checkpoint has no {tower} tower")


def resolve(path_or_hub_id: str | os.PathLike) -> Path:
    """An existing directory as is; a hub id through huggingface_hub.snapshot_download,
    fetching only the config, the safetensors weights and the tokenizer/preprocessor files."""
    p = Path(path_or_hub_id)
    if p.exists():
        if not p.is_dir():
            raise ValueError(f"{p}: expected a directory holding {CONFIG} and {WEIGHTS}")
        return p
    s = str(path_or_hub_id)
    if s.startswith((".", "/", "~")) or s.count("/") != 1:
        raise FileNotFoundError(f"{s}: no such directory (and not a hub id 'owner/name')")
    import huggingface_hub  # only for hub ids

    patterns = [CONFIG, WEIGHTS, PREPROCESSOR, *TOKENIZER_FILES]
    return Path(huggingface_hub.snapshot_download(s, allow_patterns=patterns))


def load_clip(path_or_hub_id: str | os.PathLike, *, dtype: Any = jnp.float32) -> Clip:
    """A transformers CLIP directory (save_pretrained) or hub id -> Clip.

    dtype: compute dtype (jnp.bfloat16 for speed on GPU/TPU); params stay float32."""
    d = resolve(path_or_hub_id)
    for name in (CONFIG, WEIGHTS):
        if not (d / name).is_file():
            extra = " (only safetensors weights are read)" if name == WEIGHTS else ""
            raise FileNotFoundError(f"{d / name}: not found{extra}")
    cfg = clip_config(json.loads((d / CONFIG).read_text(encoding="utf-8")))
    params = convert_state_dict(safetensors.numpy.load_file(d / WEIGHTS), cfg)
    tokenizer = prep = None
    if cfg.text is not None:
        has = (d / "tokenizer.json").is_file() or (d / "vocab.json").is_file()
        tokenizer = load_tokenizer(d, cfg.text.max_position_embeddings) if has else None
    if cfg.vision is not None:
        pj = d / PREPROCESSOR
        prep_cfg = json.loads(pj.read_text(encoding="utf-8")) if pj.is_file() else {}
        prep = image_preprocess(prep_cfg, cfg.vision.image_size)
    return Clip(cfg, params, tokenizer, prep, dtype)
