"""CLIP port vs transformers 5 (torch): tiny random CLIPModels saved with save_pretrained,
an offline byte-level tokenizer with a few real merges, a CLIPImageProcessor at 32²."""

import json
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from data_gen.tiny_models import bytes_to_unicode  # noqa: E402
from styleavatar_jax.convert import clip as clip_convert  # noqa: E402
from styleavatar_jax.convert.clip import load_clip, load_tokenizer  # noqa: E402

# Dozens of tiny programs: compile time dominates (semantics unchanged).
pytestmark = pytest.mark.usefixtures("fast_compile")

# A few of OpenAI's first merges, so BPE joins pieces (the, and, in, ing, of, photo).
MERGES = [
    ("i", "n"), ("t", "h"), ("a", "n"), ("r", "e"), ("a", "r"), ("e", "r"), ("th", "e</w>"),
    ("in", "g</w>"), ("o", "u"), ("o", "n"), ("s", "t"), ("o", "r"), ("e", "n"), ("o", "n</w>"),
    ("an", "d</w>"), ("o", "f</w>"), ("p", "h"), ("ph", "o"), ("t", "o</w>"), ("pho", "to</w>"),
    ("a", "t</w>"), ("c", "at</w>"),
]  # fmt: skip
TEXTS = [
    "a photo of a cat",
    "Hello, World! It's THE best -- isn't it?!?",
    "  multiple   spaces\tand\nnew lines  ",
    "numbers 12345 and 3.14, 1st 2nd",
    "Émigré naïve CAFÉ señor",
    "they'll we've I'm you'd she's THEY'RE",
    'emoji 😀 and symbols #@$%^&*()[]{} ~ `quotes` "double"',
    "",
    "<|endoftext|> inside <|startoftext|>",
    "and the ring " * 40,  # 120 words: truncated to 77 tokens
]


def _write_tokenizer(d):
    symbols = list(bytes_to_unicode().values())
    merged = ["".join(m) for m in MERGES]
    # Specials before the last merge ('cat</w>'): pooling at the first EOS (new configs) and
    # at the argmax of the ids (eos_token_id = 2) then differ for 'a photo of a cat'.
    tokens = symbols + [s + "</w>" for s in symbols] + merged[:-1]
    tokens += ["<|startoftext|>", "<|endoftext|>", merged[-1]]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in MERGES))
    tok = transformers.CLIPTokenizer.from_pretrained(d)
    tok.save_pretrained(d)
    return tok, vocab


def _tiny_config(vocab, hidden_act="quick_gelu", eos_token_id=None):
    common = dict(
        hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
        hidden_act=hidden_act,
    )  # fmt: skip
    text = transformers.CLIPTextConfig(
        **common, vocab_size=len(vocab), max_position_embeddings=77,
        bos_token_id=vocab["<|startoftext|>"], pad_token_id=vocab["<|endoftext|>"],
        eos_token_id=vocab["<|endoftext|>"] if eos_token_id is None else eos_token_id,
    )  # fmt: skip
    vision = transformers.CLIPVisionConfig(**common, image_size=32, patch_size=8)
    return transformers.CLIPConfig(
        text_config=text.to_dict(), vision_config=vision.to_dict(), projection_dim=16
    )


def _save(d, model, tok):
    torch.manual_seed(0)
    model.save_pretrained(d, safe_serialization=True)
    tok.save_pretrained(d)
    proc = transformers.CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )
    proc.save_pretrained(d)
    return transformers.CLIPImageProcessor.from_pretrained(d)


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("clip_tok")
    tok, vocab = _write_tokenizer(d)
    return d, tok, vocab


@pytest.fixture(scope="module", params=["quick_gelu", "gelu", "legacy_eos"])
def saved(request, tok_dir, tmp_path_factory):
    """(dir, torch CLIPModel, transformers tokenizer, image processor) per hidden_act;
    'legacy_eos': quick_gelu with eos_token_id = 2 (pooling at argmax of the ids)."""
    src, tok, vocab = tok_dir
    act = "quick_gelu" if request.param == "legacy_eos" else request.param
    eos = 2 if request.param == "legacy_eos" else None
    torch.manual_seed({"quick_gelu": 0, "gelu": 1, "legacy_eos": 2}[request.param])
    model = transformers.CLIPModel(_tiny_config(vocab, act, eos)).eval()
    with torch.no_grad():  # random layernorm affines and logit scale: catch swapped params
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layrnorm" in name or name == "logit_scale":
                p.add_(0.1 * torch.randn_like(p))
    d = tmp_path_factory.mktemp(f"clip_{request.param}")
    proc = _save(d, model, tok)
    return d, model, tok, proc, load_clip(d)


def _images(seed, h, w, n=3):
    """Smooth-ish uint8 images (so resampling error is typical, not worst case)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    base = np.stack([np.sin(6 * xx + c) * np.cos(4 * yy - c) for c in range(3)], -1)
    imgs = 127.5 + 100 * base[None] + 30 * rng.standard_normal((n, h, w, 3))
    return np.clip(np.round(imgs), 0, 255).astype(np.uint8)


def test_tokenizer_matches_transformers(tok_dir, tmp_path):
    d, tok, _ = tok_dir
    ref = tok(TEXTS, padding="max_length", truncation=True, max_length=77)["input_ids"]
    ref = np.asarray(ref)
    ours = load_tokenizer(d)(TEXTS)
    np.testing.assert_array_equal(ours, ref)
    assert ours.shape == (len(TEXTS), 77)
    assert (ref[0] != ref[0, -1]).sum() < 10  # merges applied: 'a photo of a cat' is short
    # The same from vocab.json + merges.txt only (no tokenizer.json, no tokenizer_config).
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(d / name, tmp_path / name)
    np.testing.assert_array_equal(load_tokenizer(tmp_path)(TEXTS), ref)


def test_image_features_match_torch(saved):
    d, model, _, proc, clip = saved
    pv = proc(images=list(_images(0, 32, 32)), return_tensors="np")["pixel_values"]
    with torch.no_grad():
        ref = model.get_image_features(pixel_values=torch.from_numpy(pv)).pooler_output.numpy()
    ours = clip.embed_pixels(pv.transpose(0, 2, 3, 1), normalize=False)
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)
    normed = clip.embed_pixels(pv.transpose(0, 2, 3, 1))
    np.testing.assert_allclose(normed, ref / np.linalg.norm(ref, axis=1, keepdims=True), atol=1e-6)
    np.testing.assert_allclose(clip.logit_scale, model.logit_scale.exp().item(), rtol=1e-6)


def test_text_features_match_torch(saved):
    d, model, tok, _, clip = saved
    ids = tok(TEXTS, padding="max_length", truncation=True, max_length=77)["input_ids"]
    with torch.no_grad():
        ref = model.get_text_features(input_ids=torch.tensor(ids)).pooler_output.numpy()
    np.testing.assert_allclose(clip.embed_texts(TEXTS, normalize=False), ref, atol=1e-5, rtol=0)
    # Pooling is at the EOS token, not the last one: padding length does not matter.
    short = tok(TEXTS[:3], padding=True)["input_ids"]
    with torch.no_grad():
        ref_short = model.get_text_features(input_ids=torch.tensor(short)).pooler_output.numpy()
    np.testing.assert_allclose(clip.embed_tokens(short, normalize=False), ref_short, atol=1e-5)
    e = clip.embed_texts(TEXTS)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize("saved", ["quick_gelu"], indirect=True)
def test_raw_images_end_to_end(saved):
    """uint8 images of other sizes and aspect ratios through our on-device bicubic resize +
    crop vs the processor (PIL): pixel values within PIL's uint8 rounding, embeddings close."""
    d, model, _, proc, clip = saved
    prep = jax.jit(clip_convert.preprocess_images, static_argnums=1)
    for seed, (h, w) in enumerate([(45, 60), (20, 24)]):  # shrink (landscape), enlarge
        imgs = _images(seed, h, w)
        pv = proc(images=list(imgs), return_tensors="np")["pixel_values"]  # [B, 3, 32, 32]
        ours_pv = np.asarray(prep(jnp.asarray(imgs), clip.preprocess)).transpose(0, 3, 1, 2)
        err = np.abs(ours_pv - pv) * np.asarray(clip.preprocess.std)[:, None, None]  # in [0, 1]
        # Equal but for PIL's fixed-point rounding: measured ≤ 0.3% of values off by 1/255
        # (2/255 seen once when enlarging), mean ≤ 0.002/255.
        assert err.max() <= 2.01 / 255, (h, w, err.max() * 255)
        assert err.mean() < 0.01 / 255, (h, w, err.mean() * 255)
        with torch.no_grad():
            ref = model.get_image_features(pixel_values=torch.from_numpy(pv)).pooler_output
        ref = ref.numpy() / np.linalg.norm(ref.numpy(), axis=1, keepdims=True)
        np.testing.assert_allclose(clip.embed_images(imgs), ref, atol=2e-4)  # measured 6e-5
    # float [0, 1] input: not rounded to uint8 as PIL does (mean 0.3/255 apart), still close.
    np.testing.assert_allclose(clip.embed_images(imgs / 255.0), ref, atol=3e-3)  # measured 1e-3


@pytest.mark.parametrize("saved", ["quick_gelu"], indirect=True)
def test_bfloat16_close_to_float32(saved):
    d, *_, f32 = saved
    bf16 = load_clip(d, dtype=jnp.bfloat16)
    imgs = _images(3, 32, 32)
    cos_img = np.sum(f32.embed_images(imgs) * bf16.embed_images(imgs), axis=1)
    cos_txt = np.sum(f32.embed_texts(TEXTS) * bf16.embed_texts(TEXTS), axis=1)
    assert cos_img.min() > 0.995 and cos_txt.min() > 0.995, (cos_img, cos_txt)
    assert bf16.params["text_projection"]["kernel"].dtype == jnp.float32


def test_vision_only_checkpoint(tok_dir, tmp_path):
    _, _, vocab = tok_dir
    torch.manual_seed(3)
    cfg = _tiny_config(vocab).vision_config
    cfg.projection_dim = 16
    model = transformers.CLIPVisionModelWithProjection(cfg).eval()
    model.save_pretrained(tmp_path, safe_serialization=True)
    clip = load_clip(tmp_path)  # no preprocessor_config.json: OpenAI mean/std, image_size
    assert clip.preprocess.size == 32 and clip.preprocess.mean[0] == pytest.approx(0.48145466)
    pv = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    with torch.no_grad():
        ref = model(pixel_values=torch.from_numpy(pv)).image_embeds.numpy()
    ours = clip.embed_pixels(pv.transpose(0, 2, 3, 1), normalize=False)
    np.testing.assert_allclose(ours, ref, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="no text tower"):
        clip.embed_texts(["a cat"])


@pytest.mark.parametrize("saved", ["quick_gelu"], indirect=True)
def test_errors(saved, tmp_path, monkeypatch):
    d, *_, clip = saved
    with pytest.raises(FileNotFoundError, match="no such directory"):
        load_clip(tmp_path / "missing")
    shutil.copy(d / "config.json", tmp_path / "config.json")
    (tmp_path / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors: not found"):
        load_clip(tmp_path)
    (tmp_path / "config.json").unlink()
    shutil.copy(d / "model.safetensors", tmp_path / "model.safetensors")
    with pytest.raises(FileNotFoundError, match=r"config\.json: not found"):
        load_clip(tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["text_config"]["num_hidden_layers"] = 3
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"missing tensor 'text_model\.encoder\.layers\.2"):
        load_clip(tmp_path)
    cfg["text_config"]["num_hidden_layers"] = 1
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"does not use: \['text_model\.encoder\.layers\.1"):
        load_clip(tmp_path)
    with pytest.raises(ValueError, match="expected a list of strings"):
        clip.embed_texts("a cat")

    # A hub id (not a path) goes to snapshot_download with only the files we read.
    import huggingface_hub

    calls = []
    monkeypatch.setattr(
        huggingface_hub,
        "snapshot_download",
        lambda repo, allow_patterns: calls.append((repo, allow_patterns)) or str(d),
    )
    load_clip("someone/clip-tiny")
    assert calls[0][0] == "someone/clip-tiny"
    assert set(calls[0][1]) >= {"config.json", "model.safetensors", "tokenizer.json"}
    assert not any(p.endswith((".bin", ".pt", ".msgpack", ".h5")) for p in calls[0][1])


def test_package_stays_torch_free():
    import subprocess
    import sys

    code = (
        "import sys; import styleavatar_jax.convert.clip, styleavatar_jax.models.clip; "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    root = str(Path(__file__).resolve().parent.parent)
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, env={"JAX_PLATFORMS": "cpu"})
