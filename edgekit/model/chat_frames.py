"""The chat template as frames: the text before and after the question, for hosts that cannot run Jinja.

A C++ host (hosts/cpp) reads the bundle's manifest, not its Jinja template. At build time the template is rendered
here with sentinel questions, for think and no-think, with no image and with one image in front of the question,
and split around the question: prompt = before + question [+ " /no_think"] + after. Several images (cameras) are
the one-image frame with the placeholder repeated, when the template renders them so (`images_in_a_row`, checked
here on two). The split is kept only when
two different sentinels give the same frames (the template puts the question in verbatim) and the image renders
as <|vision_start|><|image_pad|><|vision_end|>, which a host replaces with libmtmd's media marker (libmtmd wraps
Qwen2.5-VL images in vision_start/vision_end itself). `prompt_from_frames` is the same assembly in Python, so the
frames are tested against the template they came from.
"""

from __future__ import annotations

from edgekit.model.prompt import IMAGE, IMAGE_TOKEN, NO_THINK, build_prompt_parts

IMAGE_PLACEHOLDER = "<|vision_start|>" + IMAGE_TOKEN + "<|vision_end|>"
_SENTINELS = ("\u27e6edgekit question one\u27e7", "\u27e6EDGEKIT Q2\u27e7")


def _split(template: str, think: bool, images: int, sentinel: str) -> tuple[str, str] | None:
    text = build_prompt_parts(template, [IMAGE] * images + [sentinel], think=think)
    asked = sentinel if think else sentinel + NO_THINK
    if text.count(asked) != 1:
        return None
    before, after = text.split(asked)
    if images and before.count(IMAGE_PLACEHOLDER) != images:
        return None
    return before, after


def _repeat(before: str, images: int) -> str:
    return before.replace(IMAGE_PLACEHOLDER, IMAGE_PLACEHOLDER * images, 1)


def chat_frames(template: str) -> dict | None:
    """{'image_placeholder', 'no_think_suffix', 'suffix_turns_thinking_off', 'frames': {'think'|'no_think': {'0'|'1':
    {'before', 'after'}}}, 'images_in_a_row'}, or None when the template does not put the question in verbatim (a host
    must then render Jinja itself)."""
    frames: dict = {}
    for mode, think in (("think", True), ("no_think", False)):
        for images in (0, 1):
            one, two = (_split(template, think, images, s) for s in _SENTINELS)
            if one is None or one != two:
                return None
            frames.setdefault(mode, {})[str(images)] = {"before": one[0], "after": one[1]}
    in_a_row = all(
        _split(template, think, 2, _SENTINELS[0])
        == (_repeat(frames[mode]["1"]["before"], 2), frames[mode]["1"]["after"])
        for mode, think in (("think", True), ("no_think", False))
    )
    # MiMo's template turns thinking off for a question that ends with /no_think, even when thinking was asked for.
    asked = _SENTINELS[0] + NO_THINK
    switches = build_prompt_parts(template, [asked], think=True) == build_prompt_parts(template, [asked], think=False)
    return {
        "image_placeholder": IMAGE_PLACEHOLDER,
        "no_think_suffix": NO_THINK,
        "suffix_turns_thinking_off": switches,
        "images_in_a_row": in_a_row,
        "frames": frames,
    }


def prompt_from_frames(record: dict, question: str, *, think: bool, images: int, marker: str | None = None) -> str:
    """The prompt a host assembles for `images` images in front of the question: frames around the question,
    ` /no_think` added unless the question already ends with it (which, with MiMo's template, also turns thinking off),
    the image placeholder repeated per image and replaced by `marker` (libmtmd's media marker) when given."""
    from edgekit.errors import EdgekitError

    images = int(images)
    if images > 1 and not record.get("images_in_a_row"):
        raise EdgekitError("this bundle's chat template does not render several images in a row; ask about one image")
    suffix = record["no_think_suffix"]
    has_suffix = question.rstrip().endswith(suffix.strip())
    think = think and not (has_suffix and record["suffix_turns_thinking_off"])
    frame = record["frames"]["think" if think else "no_think"]["1" if images else "0"]
    asked = question if think or has_suffix else question + suffix
    placeholder = record["image_placeholder"]
    before = frame["before"].replace(placeholder, (marker or placeholder) * images, 1) if images else frame["before"]
    return before + asked + frame["after"]
