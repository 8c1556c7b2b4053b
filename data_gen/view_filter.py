"""Quality filter: CLIP zero-shot view of each image against its camera's view.

CLIP scores an image against view prompts (views.yaml `clip_prompts`: front, side, back);
a view's probability is the sum over its prompts of the softmax over all prompts. An image
is rejected when CLIP's view contradicts the camera's (`judge`): rule "opposite" (default)
rejects only front <-> back (a face drawn on a back view, a back of the head on a front
view); rule "any" rejects every disagreement, side included. `margin` asks CLIP's view to
beat the camera's view by that much probability before rejecting.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from data_gen.pipelines import ModelRef
from data_gen.prompts import PROMPT_VIEWS

RULES = ("opposite", "any")
Scorer = Callable[[np.ndarray], np.ndarray]  # uint8 [B, H, W, 3] -> probs [B, len(PROMPT_VIEWS)]


def judge(probs: np.ndarray, camera_views: list[str], *, rule: str = "opposite",
          margin: float = 0.0) -> list[str | None]:  # fmt: skip
    """probs [B, 3] over PROMPT_VIEWS, camera views [B] (PROMPT_VIEWS names) -> per image
    None (keep) or the reason it is rejected."""
    probs = np.asarray(probs, np.float64)
    reasons: list[str | None] = []
    for p, cam in zip(probs, camera_views, strict=True):
        seen = PROMPT_VIEWS[int(np.argmax(p))]
        gap = p[PROMPT_VIEWS.index(seen)] - p[PROMPT_VIEWS.index(cam)]
        clash = seen != cam and (rule == "any" or {seen, cam} == {"front", "back"})
        reasons.append(
            f"CLIP sees a {seen} view (p={p.max():.3f}) on a {cam} camera "
            f"(p={p[PROMPT_VIEWS.index(cam)]:.3f}); rule {rule}, margin {margin}"
            if clash and gap > margin
            else None
        )
    return reasons


class ClipViewScorer:
    """CLIP (transformers CLIPModel + CLIPProcessor, hub id or local folder) as a Scorer."""

    def __init__(self, ref: ModelRef, prompts: dict[str, tuple[str, ...]], device: str = "cpu"):
        import torch
        from transformers import CLIPModel, CLIPProcessor

        self.device = device
        self.model = CLIPModel.from_pretrained(ref.spec, local_files_only=ref.local)
        self.model = self.model.to(device).eval()
        self.processor = CLIPProcessor.from_pretrained(ref.spec, local_files_only=ref.local)
        texts = [t for v in PROMPT_VIEWS for t in prompts[v]]
        # prompt -> view one-hot [P, 3]: sums prompt probabilities per view.
        self.groups = np.array([[v == w for w in PROMPT_VIEWS] for v in PROMPT_VIEWS
                                for _ in prompts[v]], np.float64)  # fmt: skip
        tokens = self.processor(text=texts, return_tensors="pt", padding=True).to(device)
        with torch.no_grad():
            text = self.model.get_text_features(**tokens)
            text = getattr(text, "pooler_output", text)
        self.text = text / text.norm(dim=-1, keepdim=True)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """uint8 [B, H, W, 3] -> view probabilities [B, 3] (PROMPT_VIEWS order)."""
        import torch

        pixels = self.processor(images=list(images), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            image = self.model.get_image_features(pixel_values=pixels.to(self.device))
            image = getattr(image, "pooler_output", image)
            image = image / image.norm(dim=-1, keepdim=True)
            logits = self.model.logit_scale.exp() * image @ self.text.T  # [B, P], as CLIPModel
        probs = torch.softmax(logits.float(), dim=-1).cpu().numpy().astype(np.float64)
        return probs @ self.groups
