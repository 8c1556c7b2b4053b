"""Prompts per image (DESIGN §5): positive = style + view words + attributes; negative =
quality words + view-dependent words (back views: face, eyes, nose, mouth).

Word lists live in editable YAML files (`prompt_data/`: styles.yaml, attributes.yaml,
views.yaml). `build_prompt` is a pure function of the data, the camera angles and a numpy
Generator, so the same per-image seed gives the same prompt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import yaml

DATA_DIR = Path(__file__).parent / "prompt_data"
PROMPT_VIEWS = ("front", "side", "back")  # coarse views of prompts and the CLIP filter
FRONT_MAX, BACK_MIN = 45.0, 135.0  # |yaw| degrees: cameras.view_group's bin edges


@dataclasses.dataclass(frozen=True)
class Category:
    name: str
    words: tuple[str, ...]
    views: tuple[str, ...] = PROMPT_VIEWS  # views this category may describe


@dataclasses.dataclass(frozen=True)
class PromptData:
    styles: tuple[str, ...]
    categories: tuple[Category, ...]
    per_image: int  # attribute categories drawn per image
    quality: tuple[str, ...]  # negative words of every image
    view_positive: dict[str, tuple[str, ...]]  # PROMPT_VIEWS + "overhead"
    view_negative: dict[str, tuple[str, ...]]
    overhead_pitch: float  # degrees
    clip_prompts: dict[str, tuple[str, ...]]  # PROMPT_VIEWS -> zero-shot prompts

    def digest(self) -> str:
        """sha256 of the data: a resumed run must draw from the same lists."""
        doc = json.dumps(dataclasses.asdict(self), sort_keys=True).encode()
        return hashlib.sha256(doc).hexdigest()


@dataclasses.dataclass(frozen=True)
class Prompt:
    positive: str
    negative: str
    style: str
    view: str  # a PROMPT_VIEWS name
    attributes: dict[str, str]  # category -> word


def _read_yaml(path: Path) -> Any:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such prompt data file")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{path}: not valid YAML ({e})") from None


def _words(value: Any, where: str, allow_empty: bool = False) -> tuple[str, ...]:
    ok = isinstance(value, list) and all(isinstance(w, str) and w.strip() for w in value)
    if not ok or (not value and not allow_empty):
        raise ValueError(f"{where}: expected a {'' if allow_empty else 'non-empty '}list of "
                         f"non-empty strings, got {value!r:.80}")  # fmt: skip
    return tuple(w.strip() for w in value)


def load_styles(path: str | Path) -> tuple[str, ...]:
    """A YAML list of style phrases, or {"styles": [...]} -> styles (non-empty, unique)."""
    path = Path(path)
    doc = _read_yaml(path)
    styles = doc.get("styles") if isinstance(doc, dict) else doc
    if styles is None or styles == []:
        raise ValueError(f"{path}: the style list is empty; expected at least one style")
    styles = _words(styles, f"{path}: styles")
    dup = sorted({s for s in styles if styles.count(s) > 1})
    if dup:
        raise ValueError(f"{path}: styles listed more than once: {dup[:5]}")
    return styles


def _categories(path: Path) -> tuple[tuple[Category, ...], int]:
    doc = _read_yaml(path)
    if not isinstance(doc, dict) or not isinstance(doc.get("categories"), dict):
        raise ValueError(f"{path}: expected 'categories: {{name: [words] or {{views, words}}}}'")
    cats = []
    for name, value in doc["categories"].items():
        where = f"{path}: categories.{name}"
        views = PROMPT_VIEWS
        if isinstance(value, dict):
            unknown = sorted(set(value) - {"views", "words"})
            if unknown:
                raise ValueError(f"{where}: unknown keys {unknown}; expected 'views', 'words'")
            views = _words(value.get("views", list(PROMPT_VIEWS)), f"{where}.views")
            bad = sorted(set(views) - set(PROMPT_VIEWS))
            if bad:
                raise ValueError(f"{where}.views: {bad} not in {PROMPT_VIEWS}")
            value = value.get("words")
        cats.append(Category(str(name), _words(value, where), views))
    per_image = doc.get("per_image", 5)
    if not isinstance(per_image, int) or not 0 <= per_image <= len(cats):
        raise ValueError(f"{path}: per_image={per_image!r}; expected 0..{len(cats)}")
    return tuple(cats), per_image


def load_prompt_data(
    styles: str | Path | None = None, data_dir: str | Path = DATA_DIR
) -> PromptData:
    """Read the prompt lists: styles from `styles` (default data_dir/styles.yaml),
    attributes.yaml and views.yaml from data_dir -> PromptData."""
    data_dir = Path(data_dir)
    style_list = load_styles(styles if styles is not None else data_dir / "styles.yaml")
    cats, per_image = _categories(data_dir / "attributes.yaml")
    path = data_dir / "views.yaml"
    doc = _read_yaml(path)
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected an object with quality, views, clip_prompts")
    views = doc.get("views") or {}
    need = set(PROMPT_VIEWS) | {"overhead"}
    if not isinstance(views, dict) or set(views) != need:
        raise ValueError(f"{path}: 'views' must have exactly the keys {sorted(need)}")
    clip = doc.get("clip_prompts") or {}
    if not isinstance(clip, dict) or set(clip) != set(PROMPT_VIEWS):
        raise ValueError(f"{path}: 'clip_prompts' must have exactly the keys {list(PROMPT_VIEWS)}")
    overhead = doc.get("overhead_pitch", 20.0)
    if not isinstance(overhead, int | float) or not -90 <= overhead <= 90:
        raise ValueError(f"{path}: overhead_pitch={overhead!r}; expected degrees in [-90, 90]")
    return PromptData(
        styles=style_list, categories=cats, per_image=per_image,
        quality=_words(doc.get("quality"), f"{path}: quality"),
        view_positive={k: _words(v.get("positive"), f"{path}: views.{k}.positive")
                       for k, v in views.items()},
        view_negative={k: _words(v.get("negative", []), f"{path}: views.{k}.negative", True)
                       for k, v in views.items()},
        overhead_pitch=float(overhead),
        clip_prompts={k: _words(clip[k], f"{path}: clip_prompts.{k}") for k in PROMPT_VIEWS},
    )  # fmt: skip


def prompt_view(yaw_deg: float) -> str:
    """Yaw (degrees, any turn) -> 'front' (|yaw| < 45°), 'side' or 'back' (|yaw| >= 135°);
    the edges are cameras.view_group's (front/left/back/right with left, right = side)."""
    a = abs((float(yaw_deg) + 180.0) % 360.0 - 180.0)
    return "front" if a < FRONT_MAX else "back" if a >= BACK_MIN else "side"


def build_prompt(data: PromptData, yaw_deg: float, pitch_deg: float, rng: np.random.Generator,
                 ) -> Prompt:  # fmt: skip
    """One image's prompts. Draws, in order: the style, `per_image` categories among those
    allowed on the view (without replacement, kept in file order), one word from each."""
    view = prompt_view(yaw_deg)
    views = [view] + (["overhead"] if pitch_deg >= data.overhead_pitch else [])
    style = data.styles[int(rng.integers(len(data.styles)))]
    allowed = [c for c in data.categories if view in c.views]
    k = min(data.per_image, len(allowed))
    picked = sorted(rng.choice(len(allowed), size=k, replace=False).tolist())
    attributes = {allowed[i].name: allowed[i].words[int(rng.integers(len(allowed[i].words)))]
                  for i in picked}  # fmt: skip
    positive = [style, *(w for v in views for w in data.view_positive[v]), *attributes.values()]
    negative = [*data.quality, *(w for v in views for w in data.view_negative[v])]
    return Prompt(", ".join(positive), ", ".join(negative), style, view, attributes)
