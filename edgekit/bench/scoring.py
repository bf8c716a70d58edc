"""Scoring a model's answer to a sample, by task type, with the rules of the field (VLMEvalKit-style option
extraction for multiple choice, normalised exact match and token F1 for short answers, Qwen2.5-VL JSON or plain
coordinate lists for boxes and points). Pure functions over text and the sample's reference."""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from typing import Sequence

from edgekit.bench.metrics import box_iou, fraction_in_mask, point_in_box, point_in_polygon
from edgekit.data.samples import Sample, point_lists, reference_points
from edgekit.errors import EdgekitError


_NUM = r"-?\d+(?:\.\d+)?"


def score(sample: Sample, prediction: str) -> float:
    """Score of one prediction in [0, 1]. Coordinates are pixels of the sample's original image.
    multiple_choice: letter match; short_answer: normalized match (yes/no by first word, short
    references also inside the prediction); open_ended: token F1; box_grounding: 1 if IoU >= 0.5;
    point_grounding: fraction of predicted points inside the mask, polygons or box, else within 5%
    of the image diagonal of the reference point."""
    if sample.answer is None and sample.box is None and sample.point is None:
        raise EdgekitError(f"{sample.where}: sample {sample.id!r} has no reference answer; it can be used for calibration only")
    if sample.task == "multiple_choice":
        return float(parse_choice(prediction, sample.choices) == sample.answer)
    if sample.task == "short_answer":
        return short_answer_match(prediction, str(sample.answer))
    if sample.task == "open_ended":
        return token_f1(prediction, str(sample.answer))
    if sample.task == "box_grounding":
        box = parse_box(prediction)
        return float(box is not None and box_iou(box, sample.box) >= 0.5)
    if sample.task == "point_grounding":
        return _score_points(sample, parse_points(prediction))
    raise EdgekitError(f"{sample.where}: task {sample.task!r} cannot be scored")


def _score_points(sample: Sample, points: list[tuple[float, float]]) -> float:
    if not points:
        return 0.0
    mask = sample.load_mask()
    if mask is not None:
        return fraction_in_mask(points, mask)
    groups = point_lists(sample.answer)
    polygons = [g for g in groups or [] if len(g) >= 3]
    if polygons:
        return sum(any(point_in_polygon(p, g) for g in polygons) for p in points) / len(points)
    if sample.box is not None:
        return sum(point_in_box(p, sample.box) for p in points) / len(points)
    radius = 0.05 * math.hypot(*sample.image_size())
    ref = reference_points(sample)
    return sum(min(math.dist(p, r) for r in ref) <= radius for p in points) / len(points)


def parse_choice(text: str, choices: Sequence[str] | None) -> str | None:
    """The option letter a free-form answer picks: 'B', '(B)', 'B. ...', 'Answer: B', 'the answer is B',
    or the only option text quoted in full. None when it cannot tell."""
    n = len(choices) if choices else 26
    letters = "".join(chr(ord("A") + i) for i in range(n))
    t = text.strip()
    for pattern in (
        rf"^\(?([{letters}])(?:[.):,]|\s*$)",  # 'B', 'B.', '(B)'; not the article in 'A car ...'

        rf"(?i:answer|option|choice)\s*(?i:is|:)?\s*\(?([{letters}])\b",  # letters stay upper case: 'answer is a car' is no pick
        rf"\(([{letters}])\)",
    ):
        m = re.search(pattern, t)
        if m:
            return m.group(1).upper()
    if choices:
        hits = [i for i, c in enumerate(choices) if normalize(c) and normalize(c) in normalize(t)]
        if len(hits) == 1:
            return chr(ord("A") + hits[0])
    return None


_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty".split())}


def normalize(text: str) -> str:
    """Lower case, no punctuation, no articles, number words as digits, single spaces (SQuAD-style)."""
    t = text.lower()
    t = "".join(" " if ch in string.punctuation else ch for ch in t)
    return " ".join(_NUMBER_WORDS.get(w, w) for w in t.split() if w not in ("a", "an", "the"))


def short_answer_match(prediction: str, reference: str) -> float:
    p, r = normalize(prediction), normalize(reference)
    if not r:
        return float(not p)
    if r.split()[0] in ("yes", "no") and len(r.split()) == 1:
        return float(bool(p) and p.split()[0] == r)
    if p == r:
        return 1.0
    # a short reference ("white", "2") counts when the prediction states it as whole words
    return float(len(r.split()) <= 3 and f" {r} " in f" {p} ")


def token_f1(prediction: str, reference: str) -> float:
    p, r = normalize(prediction).split(), normalize(reference).split()
    if not p or not r:
        return float(p == r)
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def parse_box(text: str) -> tuple[float, float, float, float] | None:
    """The first box in a prediction: {"bbox_2d": [x1, y1, x2, y2]} or any [x1, y1, x2, y2] / (x1, y1, x2, y2)."""
    m = re.search(rf'"?bbox_2d"?\s*:\s*\[\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*\]', text)
    m = m or re.search(rf"[\[(]\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*,\s*({_NUM})\s*[\])]", text)
    if not m:
        return None
    x1, y1, x2, y2 = (float(v) for v in m.groups())
    return (min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2))


def parse_points(text: str) -> list[tuple[float, float]]:
    """Every point in a prediction: {"point_2d": [x, y]} items, else (x, y) or [x, y] pairs."""
    found = re.findall(rf'"?point_2d"?\s*:\s*\[\s*({_NUM})\s*,\s*({_NUM})\s*\]', text)
    found = found or re.findall(rf"[\[(]\s*({_NUM})\s*,\s*({_NUM})\s*[\])]", text)
    return [(float(x), float(y)) for x, y in found]
