"""Chat-template frames (edgekit/model/chat_frames.py): assembled prompts equal the rendered template, and a
template that rewrites the question gets no frames."""

from __future__ import annotations

import random

from edgekit.model.chat_frames import IMAGE_PLACEHOLDER, chat_frames, prompt_from_frames
from edgekit.model.fixtures import chat_template as default_chat_template
from edgekit.model.prompt import IMAGE, build_prompt_parts


def _questions(seed: int) -> list[str]:
    rng = random.Random(seed)
    alphabet = "abc XYZ ,.?!\n\t{}%#\"'\\/<>|é漢🚗"
    out = ["", " ", "Is the light red?", "Stop now /no_think", "trailing /no_think  ", "{{ not jinja }}"]
    out += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(30)]
    return out


def test_frames_reassemble_the_rendered_template(test_seed):
    template = default_chat_template()
    record = chat_frames(template)
    assert record is not None and record["image_placeholder"] == IMAGE_PLACEHOLDER
    for q in _questions(test_seed):
        for think in (True, False):
            for images in (0, 1, 2, 3):  # several cameras: the placeholder repeated (images_in_a_row)
                want = build_prompt_parts(template, [IMAGE] * images + [q], think=think)
                assert prompt_from_frames(record, q, think=think, images=images) == want, (q, think, images)
    assert record["images_in_a_row"] is True
    got = prompt_from_frames(record, "q", think=False, images=2, marker="<__media__>")
    assert got.count("<__media__>") == 2 and IMAGE_PLACEHOLDER not in got and got.endswith("<think>\n\n</think>\n\n")


def test_no_think_is_not_asked_twice():
    template = default_chat_template()
    once = build_prompt_parts(template, ["Stop? /no_think"], think=False)
    assert once.count("/no_think") == 1
    assert prompt_from_frames(chat_frames(template), "Stop? /no_think", think=False, images=0) == once


def test_a_template_that_numbers_its_images_keeps_one_image_frames_only():
    import pytest

    from edgekit.errors import EdgekitError

    template = default_chat_template().replace(
        "<|vision_start|><|image_pad|><|vision_end|>",
        "Picture {{ loop.index }}: <|vision_start|><|image_pad|><|vision_end|>",
    )
    record = chat_frames(template)
    assert record is not None and record["images_in_a_row"] is False
    assert prompt_from_frames(record, "q", think=False, images=1) == build_prompt_parts(
        template, [IMAGE, "q"], think=False
    )
    with pytest.raises(EdgekitError, match="several images in a row"):
        prompt_from_frames(record, "q", think=False, images=2)


def test_a_template_that_rewrites_the_question_gets_no_frames():
    template = default_chat_template()
    rewriting = template.replace("{{ part.text }}", "{{ part.text | upper }}")
    assert rewriting != template and chat_frames(rewriting) is None
