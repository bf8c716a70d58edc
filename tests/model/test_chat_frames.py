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
            for image in (False, True):
                want = build_prompt_parts(template, [IMAGE, q] if image else [q], think=think)
                assert prompt_from_frames(record, q, think=think, image=image) == want, (q, think, image)
    got = prompt_from_frames(record, "q", think=False, image=True, marker="<__media__>")
    assert "<__media__>" in got and IMAGE_PLACEHOLDER not in got and got.endswith("<think>\n\n</think>\n\n")


def test_no_think_is_not_asked_twice():
    template = default_chat_template()
    once = build_prompt_parts(template, ["Stop? /no_think"], think=False)
    assert once.count("/no_think") == 1
    assert prompt_from_frames(chat_frames(template), "Stop? /no_think", think=False, image=False) == once


def test_a_template_that_rewrites_the_question_gets_no_frames():
    template = default_chat_template()
    rewriting = template.replace("{{ part.text }}", "{{ part.text | upper }}")
    assert rewriting != template and chat_frames(rewriting) is None
