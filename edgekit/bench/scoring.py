"""Scoring a model's reply to a sample, by task type, with the field's rules. Pure functions over text, the sample's
reference and the size of the image the model saw (grounding answers are pixels of that resized image).

Which part of a reply is scored: the text after the last `</think>`. In think mode a reply that never closes its
think block has no answer (scores 0); in no-think mode the prompt already carries the chat template's empty think
block (MiMo-Embodied's own evaluation prepends `<think>\\n</think>\\n` for the same reason), so the whole reply is
the answer.

  multiple_choice   the letter in `\\boxed{}`; else the one option letter that stands alone once punctuation is
                    blanked; else the one option whose text the answer contains (VLMEvalKit,
                    vlmeval/utils/matching_util.py: can_infer_option, then can_infer_text). Two letters, or two
                    option texts, pick nothing and score 0.
  short_answer      yes/no references: MME's rule (the answer is "yes"/"no", else the one of them its first four
                    characters hold; MME eval_tool/calculation.py); others: exact match after SQuAD's normalisation
                    (lower case, no punctuation, no articles, single spaces; number words as digits).
  open_ended        ROUGE-L against the reference answer (edgekit.metrics.rouge_l, beta 1.2 as pycocoevalcap).
  box_grounding     the first box, Qwen2.5-VL JSON `{"bbox_2d": [x1, y1, x2, y2]}` or a plain `[x1, y1, x2, y2]`,
                    mapped from the model's input image back to the original; IoU, and accuracy at IoU >= 0.5.
  point_grounding   every `{"point_2d": [x, y]}`, else every `(x, y)` / `[x, y]`, mapped back likewise; the fraction
                    inside the sample's ground-truth mask (RoboAfford), else its polygons, box, or reference point.
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass
from typing import Sequence

from edgekit.metrics import box_iou, fraction_in_mask, point_in_box, point_in_polygon, rouge_l
from edgekit.data.reference_answers import reference_points
from edgekit.data.samples import Sample, point_lists
from edgekit.errors import EdgekitError

THINK_END = "</think>"
_NUM = r"-?\d+(?:\.\d+)?"
# The task's headline number in reports and plots; box grounding also reports its mean IoU.
PRIMARY_METRIC = {
    "multiple_choice": "accuracy",
    "short_answer": "accuracy",
    "open_ended": "rouge_l",
    "box_grounding": "acc@0.5",
    "point_grounding": "in_mask",
}


@dataclass(frozen=True)
class ImageFrame:
    """The image a grounding answer refers to: (width, height) the model saw, and of the original file."""

    seen: tuple[int, int]
    original: tuple[int, int]

    def to_original(self, x: float, y: float) -> tuple[float, float]:
        return x * self.original[0] / self.seen[0], y * self.original[1] / self.seen[1]


def final_answer(reply: str, *, think: bool) -> str:
    """The scored part of a reply: after the last </think>; '' when a think-mode reply never closed its block."""
    if THINK_END in reply:
        return reply.rsplit(THINK_END, 1)[1].strip()
    return "" if think else reply.strip()


def score_reply(sample: Sample, reply: str, *, think: bool, frame: ImageFrame | None = None) -> dict[str, float]:
    """Scores of one reply in [0, 1]: {'score': the task's headline number, plus any secondary ones}."""
    if sample.answer is None and sample.box is None and sample.point is None:
        raise EdgekitError(
            f"{sample.where}: sample {sample.id!r} has no reference answer; it can be used for calibration only"
        )
    answer = final_answer(reply, think=think)
    task = sample.task
    if task == "multiple_choice":
        return {"score": float(extract_choice(answer, sample.choices or ()) == sample.answer)}
    if task == "short_answer":
        return {"score": short_answer_match(answer, str(sample.answer))}
    if task == "open_ended":
        return {"score": rouge_l(words(answer), words(str(sample.answer)))}
    frame = frame or _identity_frame(sample)
    if task == "box_grounding":
        box = parse_box(answer)
        iou = 0.0 if box is None else box_iou(_box_to_original(box, frame), sample.box)
        return {"score": float(iou >= 0.5), "iou": iou}
    if task == "point_grounding":
        points = [frame.to_original(x, y) for x, y in parse_points(answer)]
        return {"score": point_score(sample, points)}
    raise EdgekitError(f"{sample.where}: task {task!r} cannot be scored")


def _identity_frame(sample: Sample) -> ImageFrame:
    size = sample.image_size()
    return ImageFrame(size, size)


def _box_to_original(box, frame: ImageFrame) -> tuple[float, float, float, float]:
    (x1, y1), (x2, y2) = frame.to_original(box[0], box[1]), frame.to_original(box[2], box[3])
    return (x1, y1, x2, y2)


# ---- multiple choice -----------------------------------------------------------------------------

_BLANKED = ".()[],:;!*#{}"  # VLMEvalKit's can_infer_option replaces these with spaces before splitting


def extract_choice(answer: str, choices: Sequence[str]) -> str | None:
    """The option letter an answer picks, or None when it picks none or several."""
    letters = [chr(ord("A") + i) for i in range(len(choices) or 26)]
    boxed = re.findall(r"\\boxed\{([^{}]*)\}", answer)
    if boxed:
        inner = boxed[-1].strip()
        return _unique_letter(inner, letters) or _unique_option_text(inner, choices)
    return _unique_letter(answer, letters) or _unique_option_text(answer, choices)


def _unique_letter(text: str, letters: Sequence[str]) -> str | None:
    for ch in _BLANKED:
        text = text.replace(ch, " ")
    found = {w for w in text.split() if w in letters}
    return found.pop() if len(found) == 1 else None


def _unique_option_text(answer: str, choices: Sequence[str]) -> str | None:
    text = answer.lower()
    if not choices or len(text) > 2 * sum(len(c) for c in choices):  # a long essay mentions every option
        return None
    hits = [i for i, c in enumerate(choices) if c.strip() and c.lower().strip() in text]
    return chr(ord("A") + hits[0]) if len(hits) == 1 else None


# ---- short and open answers ----------------------------------------------------------------------

_NUMBER_WORDS = {
    w: str(i)
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
}


def normalize(text: str) -> str:
    """Lower case, no punctuation, no articles, number words as digits, single spaces (SQuAD-style)."""
    t = text.lower()
    t = "".join(" " if ch in string.punctuation else ch for ch in t)
    return " ".join(_NUMBER_WORDS.get(w, w) for w in t.split() if w not in ("a", "an", "the"))


def words(text: str) -> list[str]:
    """Tokens for ROUGE-L: lower case, punctuation removed (as the COCO tokenizer leaves them)."""
    return "".join(" " if ch in string.punctuation else ch for ch in text.lower()).split()


def yes_no(answer: str) -> str | None:
    """MME's reading of a yes/no answer: the whole answer, else whichever of yes/no its first 4 characters hold."""
    a = answer.strip().lower()
    if a in ("yes", "no"):
        return a
    head = a[:4]
    if "yes" in head:
        return "yes"
    if "no" in head:
        return "no"
    return None


def short_answer_match(answer: str, reference: str) -> float:
    ref = normalize(reference)
    if ref in ("yes", "no"):
        return float(yes_no(answer) == ref)
    return float(normalize(answer) == ref)


# ---- grounding -----------------------------------------------------------------------------------


def parse_box(text: str) -> tuple[float, float, float, float] | None:
    """The first box in an answer: {"bbox_2d": [x1, y1, x2, y2]} or any [x1, y1, x2, y2] / (x1, y1, x2, y2)."""
    m = re.search(rf'"?bbox_2d"?\s*:\s*\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]', text)
    m = m or re.search(rf"[\[(]\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*[\])]", text)
    if not m:
        return None
    x1, y1, x2, y2 = (float(v) for v in m.groups())
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def parse_points(text: str) -> list[tuple[float, float]]:
    """Every point in an answer: {"point_2d": [x, y]} items, else every (x, y) or [x, y] pair."""
    found = re.findall(rf'"?point_2d"?\s*:\s*\[\s*({_NUM})\s*,\s*({_NUM})\s*\]', text)
    found = found or re.findall(rf"[\[(]\s*({_NUM})\s*,\s*({_NUM})\s*[\])]", text)
    return [(float(x), float(y)) for x, y in found]


def point_score(sample: Sample, points: list[tuple[float, float]]) -> float:
    """Fraction of points (pixels of the original image) inside the mask, else the polygons, the box, or within 5%
    of the image diagonal of the reference point. No points: 0."""
    if not points:
        return 0.0
    mask = sample.load_mask()
    if mask is not None:
        w, h = sample.image_size()
        sx, sy = mask.shape[1] / w, mask.shape[0] / h  # a mask stored at another size than its image
        return fraction_in_mask([(x * sx, y * sy) for x, y in points], mask)
    polygons = [g for g in point_lists(sample.answer) or [] if len(g) >= 3]
    if polygons:
        return sum(any(point_in_polygon(p, g) for g in polygons) for p in points) / len(points)
    if sample.box is not None:
        return sum(point_in_box(p, sample.box) for p in points) / len(points)
    radius = 0.05 * math.hypot(*sample.image_size())
    ref = reference_points(sample)
    return sum(min(math.dist(p, r) for r in ref) <= radius for p in points) / len(points)
