"""Metrics that need a CLIP model (any transformers CLIP folder or hub id, `convert.clip`):

- `clip_view`: pose accuracy of generated images with CLIP as a zero-shot view estimator.
  Each image's view (front / side / back) is the view prompt its embedding is closest to;
  the metric is the fraction that agrees with the view group of the camera it was rendered
  from (overall, per group, and the confusion matrix). 360° models fail exactly here: a face
  on the back of the head scores as 'front'. Chance is about 1/3.
- `clip_score`: 100 · mean(max(cos(image, prompt), 0)) (Hessel et al. 2021, as torchmetrics'
  CLIPScore) of generated images against `--clip-prompt`, e.g. the dataset's style.
"""

from __future__ import annotations

import numpy as np

from styleavatar_jax.eval.groups import GROUPS

VIEW_PROMPTS = {
    "front": "a photo of the front of a head, the face looking at the camera",
    "side": "a photo of a head in profile, seen from the side",
    "back": "a photo of the back of a head, only the hair, no face",
}


def _unit(x) -> np.ndarray:
    x = np.asarray(x, np.float64)
    return x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-12)


def view_accuracy(image_emb, view_emb, groups) -> dict:
    """image_emb [N, P], view_emb [len(GROUPS), P] (GROUPS order), groups [N] (the cameras'
    view groups) -> {'value': accuracy, 'groups': {g: {'value', 'num'}}, 'confusion'}."""
    pred = np.asarray(GROUPS)[np.argmax(_unit(image_emb) @ _unit(view_emb).T, axis=1)]
    groups = np.asarray(groups)
    out = {"value": float(np.mean(pred == groups)), "num": int(len(groups)), "groups": {},
           "confusion": {g: {p: int(np.sum((groups == g) & (pred == p))) for p in GROUPS}
                         for g in GROUPS}}  # fmt: skip
    for g in GROUPS:
        sel = groups == g
        out["groups"][g] = {"value": float(np.mean(pred[sel] == g)) if sel.any() else None,
                            "num": int(sel.sum())}  # fmt: skip
    return out


def clip_score(image_emb, text_emb) -> float:
    """image_emb [N, P], text_emb [P] -> 100 · mean(max(cos, 0))."""
    cos = _unit(image_emb) @ _unit(text_emb)
    return float(100 * np.mean(np.maximum(cos, 0)))
