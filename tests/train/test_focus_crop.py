"""The focus-crop curriculum: which questions carry a focus, what a crop keeps, and when the crops stop."""

from __future__ import annotations

import random

import pytest

from edgekit.data.scene import LAMP_COLORS, OBJECT_COLORS
from edgekit.data.synthetic import make_scene
from edgekit.errors import EdgekitError
from edgekit.model.processor import ImageProcessorConfig, target_size
from edgekit.train.focus_crop import crop_fraction, focus_crop
from edgekit.train.recipe import TRAIN_MAX_PIXELS, Recipe


def _has_colour(image, colour, tolerance: int = 24) -> bool:
    """Some pixel within `tolerance` of `colour` in every channel (bicubic resizing blurs the object's edges only)."""
    return any(max(abs(a - b) for a, b in zip(rgb, colour)) <= tolerance for _, rgb in image.getcolors(1 << 20))


def test_the_crop_grows_linearly_to_the_whole_image_and_is_off_without_steps():
    assert crop_fraction(0.2, 100, 0) == 0.2
    assert crop_fraction(0.2, 100, 50) == pytest.approx(0.6)
    assert crop_fraction(0.2, 100, 100) == 1.0 == crop_fraction(0.2, 100, 10_000)
    assert crop_fraction(0.2, 0, 0) == 1.0


def test_focus_marks_the_one_object_a_local_answer_depends_on():
    seen = 0
    for i in range(40):
        driving = make_scene("driving", "test/focus", i)
        light = next(t for t in driving.things if t.kind == "traffic_light")
        mc = next(q for q in driving.questions if q.task == "multiple_choice")
        assert mc.focus == light.box
        embodied = make_scene("embodied", "test/focus", i)
        mc = next(q for q in embodied.questions if q.task == "multiple_choice")
        if mc.question.startswith("What colour is the"):
            thing = next(t for t in embodied.things if t.box == mc.focus)
            assert thing.attrs["color"] == mc.answer_text and f" {thing.kind} " in mc.question
            seen += 1
        else:  # "furthest to the left" depends on every object: no focus, never cropped
            assert mc.focus is None
        for q in driving.questions + embodied.questions:
            if q.task in ("box_grounding", "point_grounding", "open_ended"):
                assert q.focus is None  # coordinates and descriptions change with a crop
    assert seen >= 5


@pytest.mark.parametrize("fraction", [0.15, 0.5, 0.9])
def test_a_crop_keeps_the_lit_lamp_at_the_seen_scale_on_the_token_grid(fraction):
    processor = ImageProcessorConfig(max_pixels=TRAIN_MAX_PIXELS)
    for i in range(12):
        scene = make_scene("driving", "test/crop", i)
        light = next(t for t in scene.things if t.kind == "traffic_light")
        h, w = target_size(scene.image.size[1], scene.image.size[0], processor)
        crop = focus_crop(scene.image, processor, light.box, fraction, random.Random(i))
        cw, ch, grid = *crop.size, processor.factor
        assert grid == 28  # Qwen2.5-VL's patch 14 x merge 2
        assert cw % grid == 0 and ch % grid == 0 and 2 * grid <= cw <= w and 2 * grid <= ch <= h
        assert cw >= min(w, fraction * w) - grid and ch >= min(h, fraction * h) - grid
        assert target_size(ch, cw, processor) == (ch, cw)  # the processor takes it as it is
        lit = LAMP_COLORS[light.attrs["state"]]
        assert _has_colour(crop, lit), (i, light.attrs["state"])


def test_a_crop_of_a_table_top_keeps_the_named_object():
    processor = ImageProcessorConfig(max_pixels=TRAIN_MAX_PIXELS)
    checked = 0
    for i in range(30):
        scene = make_scene("embodied", "test/crop", i)
        q = next(q for q in scene.questions if q.task == "multiple_choice")
        if q.focus is None:
            continue
        crop = focus_crop(scene.image, processor, q.focus, 0.15, random.Random(i))
        colour = OBJECT_COLORS[q.answer_text]
        assert _has_colour(crop, colour), i
        checked += 1
    assert checked >= 5


def test_the_recipe_carries_the_curriculum_and_refuses_a_bad_one():
    recipe = Recipe("tiny", focus_crop_steps=500, focus_crop_start=0.3)
    assert Recipe.from_dict(recipe.as_dict()) == recipe
    with pytest.raises(EdgekitError, match="focus_crop_start"):
        Recipe("tiny", focus_crop_start=0.0)
    with pytest.raises(EdgekitError, match="focus_crop_steps"):
        Recipe("tiny", focus_crop_steps=-1)


def test_the_curriculum_crops_only_focus_questions_and_only_before_its_last_step(tmp_path):
    from edgekit.model.fixtures import make_tiny
    from edgekit.model.processor import load_processor_config
    from edgekit.train.examples import training_sample
    from edgekit.train.loop import curriculum_sample

    make_tiny(tmp_path / "init", "tiny", 0, plant_outliers=False, max_pixels=TRAIN_MAX_PIXELS)
    processor = load_processor_config(tmp_path / "init")
    recipe = Recipe("tiny", focus_crop_steps=100, focus_crop_start=0.15)
    weights = {"multiple_choice": 1.0, "box_grounding": 1.0}
    cropped = 0
    for index in range(16):
        plain = training_sample(recipe.seed, index, weights)
        early = curriculum_sample(recipe, processor, 0, index, weights)
        again = curriculum_sample(recipe, processor, 0, index, weights)
        assert early.image.tobytes() == again.image.tobytes()  # a function of (seed, index, step)
        assert early.sample == plain.sample
        if plain.focus is None:
            assert early.image.tobytes() == plain.image.tobytes()
        else:
            assert early.image.size[0] * early.image.size[1] < 0.1 * plain.image.size[0] * plain.image.size[1]
            cropped += 1
        assert curriculum_sample(recipe, processor, 100, index, weights).image.tobytes() == plain.image.tobytes()
    assert cropped >= 3
