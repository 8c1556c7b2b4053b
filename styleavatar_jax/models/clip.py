"""OpenAI CLIP, both towers, as transformers' `CLIPModel` (models/clip/modeling_clip.py, v5).

Module and parameter names mirror transformers' attribute names (`vision_model.encoder.
layers_0.self_attn.q_proj`, ...), so a Flax path joined by '.' is the torch key with
`layers_i` for `layers.i` (convert/clip.py does the mapping). Images are channels last.

Vision: patches (conv without bias) ‖ class token + position embeddings -> pre-layernorm ->
pre-LN transformer -> post-layernorm of the class token -> visual projection (no bias).
Text: token + position embeddings -> causal pre-LN transformer -> final layernorm -> the
state at the EOS token -> text projection (no bias).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

ACTIVATIONS = {
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),  # OpenAI's CLIP
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # torch's exact erf GELU
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


@dataclasses.dataclass(frozen=True)
class VisionConfig:
    """transformers' CLIPVisionConfig fields that shape the network (defaults: ViT-B/32)."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5


@dataclasses.dataclass(frozen=True)
class TextConfig:
    """transformers' CLIPTextConfig fields that shape the network (defaults: ViT-B/32's)."""

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77  # the context length
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    # Pooling: 2 (pre-2023 configs) = argmax of the ids (EOS has the largest id in OpenAI's
    # vocabulary), else the first position of this id; transformers' CLIPTextModel does this.
    eos_token_id: int = 49407


@dataclasses.dataclass(frozen=True)
class ClipConfig:
    """Both towers (either may be None for a one-tower checkpoint) and the shared space."""

    vision: VisionConfig | None = VisionConfig()
    text: TextConfig | None = TextConfig()
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592  # log(1 / 0.07)


class Attention(nn.Module):
    """x [B, T, D] -> [B, T, D]: multi-head self-attention, causal when asked."""

    num_heads: int
    causal: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        b, t, d = x.shape
        if d % self.num_heads:
            raise ValueError(f"hidden size {d} is not divisible by {self.num_heads} heads")
        dense = lambda name: nn.Dense(d, dtype=self.dtype, name=name)
        split = lambda y: y.reshape(b, t, self.num_heads, d // self.num_heads)  # [B, T, N, H]
        q, k, v = (split(dense(n)(x)) for n in ("q_proj", "k_proj", "v_proj"))
        # Logits and softmax in float32 whatever the compute dtype (as transformers' eager path).
        y = jax.nn.dot_product_attention(q, k, v, is_causal=self.causal)
        return dense("out_proj")(y.reshape(b, t, d))


class Mlp(nn.Module):
    """x [B, T, D] -> [B, T, D]: fc1 -> activation -> fc2."""

    intermediate_size: int
    hidden_act: str
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(
                f"hidden_act={self.hidden_act!r}: expected one of {sorted(ACTIVATIONS)}"
            )
        h = nn.Dense(self.intermediate_size, dtype=self.dtype, name="fc1")(x)
        return nn.Dense(x.shape[-1], dtype=self.dtype, name="fc2")(ACTIVATIONS[self.hidden_act](h))


class EncoderLayer(nn.Module):
    """x [B, T, D] -> [B, T, D]: pre-LN block, x + attn(ln1(x)), then x + mlp(ln2(x))."""

    intermediate_size: int
    num_heads: int
    hidden_act: str
    layer_norm_eps: float
    causal: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        ln = lambda name: nn.LayerNorm(self.layer_norm_eps, dtype=self.dtype, name=name)
        attn = Attention(self.num_heads, self.causal, self.dtype, name="self_attn")
        x = x + attn(ln("layer_norm1")(x))
        mlp = Mlp(self.intermediate_size, self.hidden_act, self.dtype, name="mlp")
        return x + mlp(ln("layer_norm2")(x))


class Encoder(nn.Module):
    """x [B, T, D] -> [B, T, D] through `num_layers` EncoderLayers (`layers_0`, ...)."""

    num_layers: int
    intermediate_size: int
    num_heads: int
    hidden_act: str
    layer_norm_eps: float
    causal: bool = False
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.num_layers):
            x = EncoderLayer(
                self.intermediate_size,
                self.num_heads,
                self.hidden_act,
                self.layer_norm_eps,
                self.causal,
                self.dtype,
                name=f"layers_{i}",
            )(x)
        return x


def _encoder(cfg: VisionConfig | TextConfig, causal: bool, dtype: jnp.dtype) -> Encoder:
    return Encoder(
        cfg.num_hidden_layers,
        cfg.intermediate_size,
        cfg.num_attention_heads,
        cfg.hidden_act,
        cfg.layer_norm_eps,
        causal,
        dtype,
        name="encoder",
    )


class VisionEmbeddings(nn.Module):
    """pixel_values [B, S, S, C] -> tokens [B, 1 + (S/p)², D]: class token ‖ patches, + pos."""

    cfg: VisionConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, pixel_values: jax.Array) -> jax.Array:
        cfg, d = self.cfg, self.cfg.hidden_size
        b, h, w, _ = pixel_values.shape
        if (h, w) != (cfg.image_size, cfg.image_size):
            raise ValueError(
                f"pixel_values: expected {cfg.image_size}x{cfg.image_size} images, got {h}x{w}"
            )
        p = cfg.patch_size
        patches = nn.Conv(
            d,
            (p, p),
            strides=(p, p),
            padding="VALID",
            use_bias=False,
            dtype=self.dtype,
            name="patch_embedding",
        )(pixel_values)  # [B, S/p, S/p, D], rows then columns as torch's flatten(2)
        cls = self.param("class_embedding", nn.initializers.normal(d**-0.5), (d,))
        cls = jnp.broadcast_to(cls.astype(patches.dtype), (b, 1, d))
        x = jnp.concatenate([cls, patches.reshape(b, -1, d)], axis=1)
        pos = nn.Embed(x.shape[1], d, dtype=self.dtype, name="position_embedding")
        return x + pos(jnp.arange(x.shape[1]))[None]


class VisionTransformer(nn.Module):
    """pixel_values [B, S, S, C] (normalised) -> last_hidden [B, T, D], pooled [B, D]."""

    cfg: VisionConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, pixel_values: jax.Array) -> tuple[jax.Array, jax.Array]:
        cfg = self.cfg
        ln = lambda name: nn.LayerNorm(cfg.layer_norm_eps, dtype=self.dtype, name=name)
        x = VisionEmbeddings(cfg, self.dtype, name="embeddings")(pixel_values)
        x = ln("pre_layrnorm")(x)  # sic: transformers' spelling
        x = _encoder(cfg, False, self.dtype)(x)
        return x, ln("post_layernorm")(x[:, 0])


def eos_positions(input_ids: jax.Array, eos_token_id: int) -> jax.Array:
    """input_ids [B, T] -> [B] index of the pooled token, as transformers' CLIPTextModel."""
    if eos_token_id == 2:  # legacy configs: EOS is the largest id of each sequence
        return jnp.argmax(input_ids, axis=-1)
    return jnp.argmax(input_ids == eos_token_id, axis=-1)  # first EOS (0 when none)


class TextEmbeddings(nn.Module):
    """input_ids [B, T] -> [B, T, D]: token + position embeddings."""

    cfg: TextConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jax.Array) -> jax.Array:
        d, n = self.cfg.hidden_size, self.cfg.max_position_embeddings
        tok = nn.Embed(self.cfg.vocab_size, d, dtype=self.dtype, name="token_embedding")
        pos = nn.Embed(n, d, dtype=self.dtype, name="position_embedding")
        return tok(input_ids) + pos(jnp.arange(input_ids.shape[-1]))[None]


class TextTransformer(nn.Module):
    """input_ids [B, T] (T ≤ max_position_embeddings) -> last_hidden [B, T, D], pooled [B, D]."""

    cfg: TextConfig
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, input_ids: jax.Array) -> tuple[jax.Array, jax.Array]:
        cfg = self.cfg
        if input_ids.ndim != 2 or input_ids.shape[1] > cfg.max_position_embeddings:
            raise ValueError(
                f"input_ids: expected [batch, ≤{cfg.max_position_embeddings}], "
                f"got {tuple(input_ids.shape)}"
            )
        x = TextEmbeddings(cfg, self.dtype, name="embeddings")(input_ids)
        x = _encoder(cfg, True, self.dtype)(x)
        x = nn.LayerNorm(cfg.layer_norm_eps, dtype=self.dtype, name="final_layer_norm")(x)
        idx = eos_positions(input_ids, cfg.eos_token_id)
        return x, x[jnp.arange(x.shape[0]), idx]


class ClipModel(nn.Module):
    """CLIP: `encode_image` and `encode_text` into one projection_dim space (unnormalised).

    `__call__` runs whichever towers exist (for init); params stay float32, `dtype` is the
    compute dtype (bfloat16 keeps layernorm statistics and attention softmax in float32).
    """

    cfg: ClipConfig
    dtype: jnp.dtype = jnp.float32

    def setup(self):
        cfg = self.cfg
        if cfg.vision is not None:
            self.vision_model = VisionTransformer(cfg.vision, self.dtype)
            self.visual_projection = nn.Dense(cfg.projection_dim, use_bias=False, dtype=self.dtype)
        if cfg.text is not None:
            self.text_model = TextTransformer(cfg.text, self.dtype)
            self.text_projection = nn.Dense(cfg.projection_dim, use_bias=False, dtype=self.dtype)
        if cfg.vision is not None and cfg.text is not None:
            init = nn.initializers.constant(cfg.logit_scale_init_value)
            self.logit_scale = self.param("logit_scale", init, ())

    def encode_image(self, pixel_values: jax.Array) -> jax.Array:
        """pixel_values [B, S, S, 3] (CLIP-normalised) -> image features [B, P] float32."""
        _, pooled = self.vision_model(pixel_values)
        return self.visual_projection(pooled).astype(jnp.float32)

    def encode_text(self, input_ids: jax.Array) -> jax.Array:
        """input_ids [B, T] int -> text features [B, P] float32 (pooled at EOS)."""
        _, pooled = self.text_model(input_ids)
        return self.text_projection(pooled).astype(jnp.float32)

    def __call__(
        self, pixel_values: jax.Array | None, input_ids: jax.Array | None
    ) -> tuple[jax.Array | None, jax.Array | None]:
        """-> (image features [B, P] or None, text features [B', P] or None)."""
        image = None if pixel_values is None else self.encode_image(pixel_values)
        text = None if input_ids is None else self.encode_text(input_ids)
        if self.cfg.vision is not None and self.cfg.text is not None:
            _ = self.logit_scale  # registered at init even when one tower is called
        return image, text


def init_params(cfg: ClipConfig, key: jax.Array) -> dict:
    """Random float32 params of `ClipModel(cfg)` (for tests and benchmarks; real weights
    come from convert/clip.py)."""
    s = cfg.vision.image_size if cfg.vision is not None else 1
    pixels = jnp.zeros((1, s, s, 3 if cfg.vision is None else cfg.vision.num_channels))
    ids = jnp.zeros((1, 1 if cfg.text is None else cfg.text.max_position_embeddings), jnp.int32)
    return ClipModel(cfg).init(key, pixels if cfg.vision else None, ids if cfg.text else None)[
        "params"
    ]


def param_shapes(cfg: ClipConfig) -> dict:
    """The params tree of `ClipModel(cfg)` as jax.ShapeDtypeStructs (no compute)."""
    return jax.eval_shape(lambda k: init_params(cfg, k), jax.random.key(0))
