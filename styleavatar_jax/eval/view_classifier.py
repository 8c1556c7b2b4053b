"""A small CNN that reads the camera's yaw bin off an image: pose accuracy without a download.

The classifier predicts `cameras.yaw_bin(yaw, bins)` (bin 0 centred on the front, bin k
centred at k·360°/bins towards +yaw). Default 8 bins of 45°. The metric view groups
(front / side / back, `eval.groups`) are reported per *camera* group: the bin accuracy
over the images whose camera is in that group. When the bins nest in the 4 coarse groups
(bins = 4 × an odd number: 4, 12, 20; see train/pose_labels.py) the predicted bin also
names a coarse group, and `pose_accuracy` adds the group accuracy ('view_value'); 8 bins
do not nest (the bins at ±45° straddle two groups), so there it is left out.

Training: cross-entropy with Adam on random batches, each image flipped left-right with
probability 1/2 and its yaw negated (a flip maps bin k to −k mod n exactly, see
`cameras.yaw_bin`). The returned parameters are the iterate of best validation accuracy
(ties: the earliest), so they never hinge on the last step's rounding.

File format (`save_classifier`): an .npz of the parameters (keys 'params/<path>') and
'meta', a JSON string: resolution, bins, widths, accuracies, training data, steps, seed.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from styleavatar_jax import cameras
from styleavatar_jax.eval.groups import GROUPS, metric_group
from styleavatar_jax.files import load_npz

WIDTHS = (32, 64, 128, 128)  # one stride-2 3×3 conv each: 64² -> 4² before the pooling
FORMAT = "styleavatar_jax.view_classifier/1"


class YawNet(nn.Module):
    """images [B, R, R, 3] in [−1, 1] -> yaw-bin logits [B, bins]."""

    bins: int = 8
    widths: tuple[int, ...] = WIDTHS

    @nn.compact
    def __call__(self, x):
        for i, w in enumerate(self.widths):
            x = nn.relu(nn.Conv(w, (3, 3), strides=2, name=f"conv{i}")(x))  # [B, R/2^(i+1), ., w]
        return nn.Dense(self.bins, name="head")(x.mean(axis=(1, 2)))  # global mean pool


def model_of(params) -> YawNet:
    """The YawNet whose variables `params` are: widths and bins read off the kernel shapes."""
    p = params["params"] if "params" in params else params
    convs = sorted((k for k in p if k.startswith("conv")), key=lambda k: int(k[4:]))
    return YawNet(bins=int(p["head"]["kernel"].shape[-1]),
                  widths=tuple(int(p[k]["kernel"].shape[-1]) for k in convs))  # fmt: skip


def as_float_images(images) -> jax.Array:
    """uint8 [..., 3] (0..255) or float in [−1, 1] -> float32 in [−1, 1]."""
    x = jnp.asarray(images)
    return x.astype(jnp.float32) / 127.5 - 1.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)


@jax.jit
def logits(params, images) -> jax.Array:
    """params, images [B, R, R, 3] (uint8 or [−1, 1]) -> logits [B, bins]."""
    return model_of(params).apply(params, as_float_images(images))


def predict(params, images, *, batch: int = 256) -> np.ndarray:
    """images [N, R, R, 3] (uint8 or float in [−1, 1]) -> predicted yaw bin int32 [N].
    Runs `batch` images per call; the last batch is padded so one program serves all."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images: expected [N, R, R, 3], got shape {images.shape}")
    out = []
    for start in range(0, len(images), batch):
        chunk = images[start : start + batch]
        pad = min(batch, len(images)) - len(chunk)
        chunk = np.concatenate([chunk, np.repeat(chunk[-1:], pad, 0)]) if pad else chunk
        out.append(np.asarray(jnp.argmax(logits(params, chunk), -1))[: len(chunk) - pad])
    return np.concatenate(out).astype(np.int32) if out else np.zeros(0, np.int32)


def yaw_bins(yaw, bins: int) -> np.ndarray:
    """yaw [N] (radians) -> `cameras.yaw_bin` int32 [N]."""
    return np.array(cameras.yaw_bin(np.asarray(yaw, np.float32), bins), np.int32)


def accuracy(params, images, yaw, *, batch: int = 256) -> float:
    """Fraction of images [N, R, R, 3] whose predicted bin is that of their yaw [N] (radians)."""
    bins = model_of(params).bins
    return float(np.mean(predict(params, images, batch=batch) == yaw_bins(yaw, bins)))


def pose_accuracy(pred, yaw, bins: int) -> dict:
    """Predicted bins [N] and the cameras' yaw [N] (radians) -> {'value': fraction of
    pred == yaw_bin(yaw), 'num', 'bins', 'groups': {front/side/back: {'value', 'num'}} over
    the images whose camera is in that group (value None when there is none), 'confusion':
    {true bin: [count per predicted bin]}} and, when the bins nest, 'view_value': how often
    the predicted bin's coarse group is the camera's."""
    pred, yaw = np.asarray(pred), np.asarray(yaw, np.float32)
    if pred.shape != yaw.shape or pred.ndim != 1:
        raise ValueError(f"pred {pred.shape} and yaw {yaw.shape}: expected two [N] arrays")
    true = yaw_bins(yaw, bins)
    hit = pred == true
    group = metric_group(yaw)
    out = {"value": float(hit.mean()) if len(hit) else None, "num": int(len(hit)),
           "bins": bins, "groups": {},
           "confusion": {int(t): np.bincount(pred[true == t], minlength=bins).tolist()
                         for t in range(bins)}}  # fmt: skip
    for g in GROUPS:
        sel = group == g
        out["groups"][g] = {"value": float(hit[sel].mean()) if sel.any() else None,
                            "num": int(sel.sum())}  # fmt: skip
    if cameras.yaw_bins_nest(bins) and len(hit):
        centres = np.radians(np.arange(bins) * 360.0 / bins)
        coarse = np.asarray(cameras.yaw_bin(centres, 4))  # bin -> its coarse group
        out["view_value"] = float(np.mean(coarse[pred] == yaw_bins(yaw, 4)))
    return out


# ------------------------------------------------------------------ training
def _train_step(params, opt_state, images, labels, key, *, model, opt, batch):
    """One step on `batch` random images of images [N, R, R, 3] with bins labels [N]."""
    idx_key, flip_key = jax.random.split(key)
    idx = jax.random.randint(idx_key, (batch,), 0, images.shape[0])
    x, y = as_float_images(images[idx]), labels[idx]
    flip = jax.random.bernoulli(flip_key, 0.5, (batch,))
    x = jnp.where(flip[:, None, None, None], x[:, :, ::-1], x)  # x-flip: yaw -> −yaw
    y = jnp.where(flip, jnp.mod(-y, model.bins), y)

    def loss_fn(p):
        return optax.softmax_cross_entropy_with_integer_labels(model.apply(p, x), y).mean()

    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = opt.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss


def train_view_classifier(
    images,
    yaw,
    *,
    bins: int = 8,
    steps: int = 2000,
    batch: int = 64,
    seed: int = 0,
    validation: tuple | None = None,
    validation_fraction: float = 0.1,
    lr: float = 1e-3,
    eval_every: int = 100,
    widths: tuple[int, ...] = WIDTHS,
    log: Callable[[str], None] | None = None,
) -> tuple[dict, dict]:
    """images [N, R, R, 3] (uint8 or [−1, 1]), yaw [N] (radians) -> (params, stats).

    validation: (images [M, R, R, 3], yaw [M]) to pick the best iterate by; if None, the
    *last* ceil(validation_fraction·N) images are held out of training for it (datasets
    list an identity's views together, so these are mostly unseen identities).
    stats: {'val_accuracy', 'best_step', 'num_train', 'num_val', 'seconds', 'history':
    [[step, loss, val_accuracy], ...]}."""
    if bins < 2 or steps < 1 or batch < 1 or eval_every < 1:
        raise ValueError(f"bins={bins}, steps={steps}, batch={batch}, eval_every={eval_every}: "
                         f"expected bins ≥ 2 and the others ≥ 1")  # fmt: skip
    images, yaw = np.asarray(images), np.asarray(yaw, np.float32)
    if images.ndim != 4 or images.shape[1] != images.shape[2] or images.shape[3] != 3:
        raise ValueError(f"images: expected square RGB [N, R, R, 3], got {images.shape}")
    if yaw.shape != (len(images),):
        raise ValueError(f"yaw: expected [{len(images)}] (one per image), got {yaw.shape}")
    if validation is None:
        n_val = int(np.ceil(validation_fraction * len(images)))
        if not 1 <= n_val < len(images):
            raise ValueError(f"validation_fraction={validation_fraction} of {len(images)} "
                             f"images leaves no training or no validation image")  # fmt: skip
        validation = (images[-n_val:], yaw[-n_val:])
        images, yaw = images[:-n_val], yaw[:-n_val]
    val_images, val_yaw = validation
    if np.shape(val_images)[1:] != images.shape[1:]:
        raise ValueError(f"validation images {np.shape(val_images)[1:]} differ from the "
                         f"training images {images.shape[1:]}")  # fmt: skip

    init_key, loop_key = jax.random.split(jax.random.key(seed))
    model = YawNet(bins=bins, widths=tuple(widths))
    params = model.init(init_key, jnp.zeros((1,) + images.shape[1:], jnp.float32))
    opt = optax.adam(lr)
    opt_state = opt.init(params)
    step_fn = jax.jit(partial(_train_step, model=model, opt=opt, batch=batch),
                      donate_argnums=(0, 1))  # fmt: skip
    data = jax.device_put(images if images.dtype == np.uint8 else images.astype(np.float32))
    labels = jnp.asarray(yaw_bins(yaw, bins))

    start = time.perf_counter()
    best, best_acc, best_step, history = None, -1.0, 0, []
    for step in range(1, steps + 1):
        step_key = jax.random.fold_in(loop_key, step)
        params, opt_state, loss = step_fn(params, opt_state, data, labels, step_key)
        if step % eval_every == 0 or step == steps:
            acc = accuracy(params, val_images, val_yaw)
            history.append([step, float(loss), acc])
            if acc > best_acc:
                best, best_acc, best_step = jax.device_get(params), acc, step
            if log:
                log(f"step {step}: loss {float(loss):.4f}, validation accuracy {acc:.4f}")
    stats = {"val_accuracy": best_acc, "best_step": best_step, "num_train": len(images),
             "num_val": len(val_yaw), "seconds": time.perf_counter() - start,
             "history": history}  # fmt: skip
    return best, stats


# ------------------------------------------------------------------ files
def save_classifier(path: str | Path, params, meta: dict) -> Path:
    """Write params and meta (JSON-able; 'resolution' and 'bins' required) to an .npz,
    atomically (a temporary file, then a rename)."""
    from styleavatar_jax.files import write_npz

    missing = {"resolution", "bins"} - set(meta)
    if missing:
        raise ValueError(f"meta: missing {sorted(missing)}; got keys {sorted(meta)}")
    flat = traverse_util.flatten_dict(jax.device_get(params), sep="/")
    arrays = {f"params/{k}": np.asarray(v) for k, v in flat.items()}
    text = json.dumps({"format": FORMAT} | meta, default=_json_default)
    return write_npz(path, meta=np.asarray(text), **arrays)


def load_classifier(path: str | Path, resolution: int | None = None, *, flag: str = "",
                    images: str = "the images given are") -> tuple[dict, dict]:  # fmt: skip
    """-> (params, meta) of a `save_classifier` file. resolution: that of the images it will
    see (`images` says whose, in the message); ValueError when it is not the one the
    classifier was trained at. flag: the option that named `path`, for messages."""
    where = f"{flag}={path}" if flag else str(path)
    f = load_npz(path, flag)
    if "meta" not in f:
        raise ValueError(f"{where}: not a view classifier file (no 'meta' entry)")
    meta = json.loads(str(f["meta"]))
    flat = {k[len("params/") :]: v for k, v in f.items() if k.startswith("params/")}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{where}: format {meta.get('format')!r}, expected {FORMAT!r}")
    if resolution is not None:
        check_resolution(meta, resolution, where, images)
    params = traverse_util.unflatten_dict({tuple(k.split("/")): v for k, v in flat.items()})
    return jax.tree.map(jnp.asarray, params), meta


def check_resolution(meta: dict, resolution: int, where: str,
                     images: str = "the images given are") -> None:  # fmt: skip
    if int(meta["resolution"]) != int(resolution):
        raise ValueError(f"{where}: the view classifier was trained on {meta['resolution']}² "
                         f"images, but {images} {resolution}²; train one on {resolution}² "
                         "real images (styleavatar-jax train-view-classifier)")  # fmt: skip


def _json_default(x):
    if isinstance(x, np.generic):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


# ------------------------------------------------------------------ datasets
def load_views(path: str | Path) -> tuple[np.ndarray, np.ndarray, int]:
    """A dataset (`open_dataset`) -> images uint8 [N, R, R, 3], yaw [N] (radians, of each
    label's camera about the world origin), resolution."""
    from styleavatar_jax.data.formats import open_dataset
    from styleavatar_jax.data.source import read_images

    with open_dataset(path) as source:
        images = read_images(source, np.arange(len(source)))
        yaw, _ = cameras.label_angles(source.labels)
        return images, np.asarray(yaw, np.float32), source.resolution


def main_train(
    data: str | Path,
    heldout: str | Path | None,
    out: str | Path,
    bins: int = 8,
    steps: int = 2000,
    seed: int = 0,
    *,
    batch: int = 64,
    eval_every: int = 100,
    log: Callable[[str], None] | None = print,
) -> dict:
    """Train on the dataset `data` (best iterate on its last 10% of images), measure on the
    dataset `heldout` (or report the validation accuracy when None), save to `out` -> meta
    (what the file holds, plus 'path')."""
    images, yaw, res = load_views(data)
    params, stats = train_view_classifier(images, yaw, bins=bins, steps=steps, batch=batch,
                                          seed=seed, eval_every=eval_every, log=log)  # fmt: skip
    meta = {"resolution": res, "bins": bins, "widths": list(model_of(params).widths),
            "data": str(Path(data).absolute()), "steps": steps, "batch": batch, "seed": seed,
            "val_accuracy": stats["val_accuracy"], "best_step": stats["best_step"],
            "num_train": stats["num_train"], "num_val": stats["num_val"],
            "train_seconds": round(stats["seconds"], 1)}  # fmt: skip
    if heldout is not None:
        h_images, h_yaw, h_res = load_views(heldout)
        check_resolution(meta, h_res, str(heldout))
        meta |= {"heldout": str(Path(heldout).absolute()), "num_heldout": len(h_yaw),
                 "heldout_accuracy": accuracy(params, h_images, h_yaw)}  # fmt: skip
    else:
        meta |= {"heldout": None, "heldout_accuracy": stats["val_accuracy"]}
    path = save_classifier(out, params, meta)
    if log:
        log(f"{path}: held-out accuracy {meta['heldout_accuracy']:.4f} ({bins} yaw bins, "
            f"chance {1 / bins:.3f}), trained in {meta['train_seconds']} s")  # fmt: skip
    return meta | {"path": str(path)}
