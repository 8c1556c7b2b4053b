"""data_gen prompts: view words follow the camera, back views negate the face, seeded."""

import numpy as np
import pytest

from data_gen import prompts as P


@pytest.fixture(scope="module")
def data():
    return P.load_prompt_data()


def _prompt(data, yaw, pitch=0.0, seed=0):
    return P.build_prompt(data, yaw, pitch, np.random.default_rng(seed))


def test_default_lists(data):
    assert len(data.styles) == 50 and len(set(data.styles)) == 50
    assert len(data.categories) == 20 and data.per_image == 5
    names = {c.name for c in data.categories}
    assert {"hairstyle", "hair colour", "expression", "eye shape", "accessories",
            "clothing"} <= names  # fmt: skip


@pytest.mark.parametrize(
    "yaw, view",
    [(0, "front"), (44.9, "front"), (-44.9, "front"), (45, "side"), (90, "side"),
     (-134.9, "side"), (135, "back"), (180, "back"), (-170, "back"), (360, "front"),
     (-330, "front")],
)  # fmt: skip
def test_view_words_follow_yaw(data, yaw, view):
    p = _prompt(data, yaw)
    assert p.view == view == P.prompt_view(yaw)
    for v in P.PROMPT_VIEWS:
        words = ", ".join(data.view_positive[v])
        assert (words in p.positive) == (v == view)
    assert "view from above" not in p.positive


def test_view_agrees_with_camera_view_groups():
    from styleavatar_jax import cameras

    yaw = np.linspace(-360, 360, 2881)  # every 0.25°, bin edges included
    groups = cameras.view_group(np.radians(yaw))
    expected = np.where(groups == "left", "side", np.where(groups == "right", "side", groups))
    assert [P.prompt_view(y) for y in yaw] == expected.tolist()


def test_back_views_negate_the_face(data):
    for seed in range(20):
        back, front = _prompt(data, 180, seed=seed), _prompt(data, 0, seed=seed)
        neg = back.negative.split(", ")
        assert {"face", "eyes", "nose", "mouth"} <= set(neg)
        assert "face" not in front.negative.split(", ")
        assert neg[: len(data.quality)] == list(data.quality)  # quality words first
        # Face-only categories (expression, eye shape, ...) never describe a back view.
        front_only = {c.name for c in data.categories if "back" not in c.views}
        assert not front_only & set(back.attributes)


def test_overhead_words_from_pitch(data):
    assert "view from above" in _prompt(data, 90, pitch=25).positive
    assert "view from above" not in _prompt(data, 90, pitch=19.9).positive


def test_same_seed_same_prompt(data):
    a, b = _prompt(data, 30, seed=7), _prompt(data, 30, seed=7)
    assert a == b
    assert len(a.attributes) == 5 and a.positive.startswith(a.style + ", front view")
    others = {_prompt(data, 30, seed=s).positive for s in range(20)}
    assert len(others) == 20
    # Pinned: the drawing order (style, categories, words) is part of the dataset's identity.
    assert a.style == data.styles[np.random.default_rng(7).integers(50)]


def test_bad_prompt_files(tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("styles: []\n")
    with pytest.raises(ValueError, match="empty.yaml: the style list is empty"):
        P.load_prompt_data(empty)
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        P.load_prompt_data(tmp_path / "nope.yaml")
    dup = tmp_path / "dup.yaml"
    dup.write_text("- a\n- b\n- a\n")
    with pytest.raises(ValueError, match=r"more than once: \['a'\]"):
        P.load_prompt_data(dup)
    bad = tmp_path / "bad.yaml"
    bad.write_text("styles: [ok, 3]\n")
    with pytest.raises(ValueError, match="non-empty strings"):
        P.load_prompt_data(bad)
    plain = tmp_path / "plain.yaml"
    plain.write_text("- a watercolor painting\n- a toy\n")
    assert P.load_prompt_data(plain).styles == ("a watercolor painting", "a toy")
