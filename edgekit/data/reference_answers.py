"""A sample's reference answer as a model would write it (teacher forcing: calibration, training) and the points that
answer a point-grounding sample (scoring)."""

from __future__ import annotations

import json
from typing import Sequence

from edgekit.data.samples import Sample, point_lists
from edgekit.errors import EdgekitError


def format_answer_for_teacher_forcing(sample: Sample) -> str:
    """The reference answer as the text a Qwen2.5-VL model would emit; '' when there is none.
    Boxes: {"bbox_2d": [x1, y1, x2, y2]}; points: {"point_2d": [x, y]} (a JSON list when several)."""
    if sample.answer is None and sample.box is None and sample.point is None:
        return ""
    if sample.task == "multiple_choice":
        text = sample.answer_text
        if text is None and sample.choices:
            text = sample.choices[ord(sample.answer) - ord("A")]
        return f"{sample.answer}. {text}" if text else sample.answer
    if sample.task == "box_grounding":
        return json.dumps({"bbox_2d": [round(v) for v in sample.box]})
    if sample.task == "point_grounding":
        points = reference_points(sample)
        items = [{"point_2d": [round(x), round(y)]} for x, y in points]
        return json.dumps(items[0] if len(items) == 1 else items)
    return str(sample.answer)


def reference_points(sample: Sample) -> list[tuple[float, float]]:
    """Points that answer a point-grounding sample: its `point`, else one interior point per
    answer polygon (or the given points when fewer than 3), else the centre of its `box`."""
    if sample.point is not None:
        return [sample.point]
    groups = point_lists(sample.answer)
    if groups:
        out = []
        for g in groups:
            out += [interior_point(g)] if len(g) >= 3 else list(g)
        return out
    if sample.box is not None:
        x1, y1, x2, y2 = sample.box
        return [((x1 + x2) / 2, (y1 + y2) / 2)]
    raise EdgekitError(f"{sample.where}: sample {sample.id!r} has no reference point, box or polygon")


def interior_point(polygon: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """A point inside a simple polygon: the middle of the widest inside interval on the scanline
    through the vertex mean (the mean itself can fall outside a concave shape)."""
    ys = sorted(p[1] for p in polygon)
    y = sum(ys) / len(ys)
    if y in ys:  # a scanline through a vertex counts crossings ambiguously; nudge it
        y += 1e-3 * (ys[-1] - ys[0] or 1.0)
    xs = []
    for (x1, y1), (x2, y2) in zip(polygon, list(polygon[1:]) + [polygon[0]]):
        if (y1 <= y) != (y2 <= y):
            xs.append(x1 + (y - y1) * (x2 - x1) / (y2 - y1))
    xs.sort()
    spans = [(xs[i], xs[i + 1]) for i in range(0, len(xs) - 1, 2)]
    if not spans:
        return (sum(p[0] for p in polygon) / len(polygon), y)
    a, b = max(spans, key=lambda s: s[1] - s[0])
    return ((a + b) / 2, y)
