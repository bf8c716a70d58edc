"""What a synthetic scene is made of: the painter (flat colours, exact per-object masks), the things it painted
with their boxes, and the questions asked about them. Shared by the driving and table-top generators."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

DRIVING_SIZE = (448, 252)  # 16 x 9 patches of 28 px
EMBODIED_SIZE = (392, 308)  # 14 x 11 patches of 28 px
TASK_ORDER = ("multiple_choice", "short_answer", "box_grounding", "point_grounding", "open_ended")
SOURCE = "edgekit_synthetic"

# Object colours are exact RGB values used by nothing else in a scene (tests rely on it).
VEHICLE_COLORS = {
    "red": (196, 28, 36),
    "blue": (32, 72, 188),
    "white": (236, 236, 232),
    "black": (22, 22, 26),
    "yellow": (232, 196, 24),
    "green": (28, 128, 60),
    "orange": (228, 112, 20),
    "silver": (168, 172, 178),
}
CLOTHING_COLORS = {"purple": (120, 40, 150), "cyan": (20, 170, 190), "pink": (226, 90, 150), "brown": (110, 70, 40)}
LAMP_COLORS = {"red": (250, 40, 40), "yellow": (250, 210, 30), "green": (40, 230, 90)}
OBJECT_COLORS = {
    "red": (200, 30, 40),
    "green": (40, 160, 70),
    "blue": (40, 80, 200),
    "yellow": (230, 200, 30),
    "orange": (235, 120, 30),
    "purple": (130, 50, 160),
    "pink": (230, 100, 160),
    "cyan": (30, 180, 200),
}
CONTAINER_COLORS = {"grey": (120, 124, 130), "white": (238, 238, 236), "black": (34, 34, 38), "brown": (100, 66, 36)}
TABLE = (156, 116, 74)
SKIN = (224, 182, 150)


@dataclass(frozen=True)
class Thing:
    """One drawn object and its ground truth (pixel coordinates, boxes inclusive of both ends)."""

    kind: str  # car, truck, pedestrian, traffic_light, sign, cube, ball, cup, block, bowl, basket
    name: str  # how questions refer to it: "red car", "pedestrian in purple", "blue bowl"
    color: tuple[int, int, int]  # exact RGB at `point`
    box: tuple[int, int, int, int]
    point: tuple[int, int]
    attrs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Question:
    task: str
    question: str
    answer: object
    choices: list[str] | None = None
    answer_text: str | None = None
    box: tuple[int, int, int, int] | None = None  # region that counts as correct (grounding)
    point: tuple[int, int] | None = None
    target: str | None = None
    focus: tuple[int, int, int, int] | None = None  # the one object the answer depends on: a crop keeping it keeps it


@dataclass
class Scene:
    domain: str
    image: object  # PIL.Image RGB
    things: list[Thing]
    questions: list[Question]
    facts: dict


class Painter:
    """Draws on the image and reports the exact pixels each object covered."""

    def __init__(self, size: tuple[int, int]):
        from PIL import Image, ImageDraw, ImageFont

        self.size = size
        self.img = Image.new("RGB", size)
        self.draw = ImageDraw.Draw(self.img)
        self.draw.fontmode = "1"  # no anti-aliasing: only the colours we choose appear
        self.font = ImageFont.load_default(size=10)
        self.taken: list[tuple[int, int, int, int]] = []

    def _mask(self, parts):
        from PIL import Image, ImageDraw

        mask = Image.new("L", self.size, 0)
        md = ImageDraw.Draw(mask)
        md.fontmode = "1"
        for op, xy, style in parts:
            self._apply(
                md, op, xy, {k: (255 if k in ("fill", "outline") and v is not None else v) for k, v in style.items()}
            )
        return mask

    def _apply(self, d, op, xy, style):
        if op == "text":  # xy is the centre of the text
            x0, y0, x1, y1 = self.font.getbbox(style["text"])
            d.text((xy[0] - (x0 + x1) // 2, xy[1] - (y0 + y1) // 2), style["text"], fill=style["fill"], font=self.font)
        else:
            getattr(d, op)(xy, **style)

    def place(self, parts, margin: int = 3) -> tuple[int, int, int, int] | None:
        """Paint `parts` [(op, xy, style)] if they touch no earlier object (within `margin`);
        return the inclusive box of the painted pixels, or None when rejected."""
        bbox = self._mask(parts).getbbox()
        if bbox is None:
            return None
        box = (bbox[0], bbox[1], bbox[2] - 1, bbox[3] - 1)
        w, h = self.size
        if box[0] < 1 or box[1] < 1 or box[2] > w - 2 or box[3] > h - 2:
            return None
        for t in self.taken:
            if (
                box[0] <= t[2] + margin
                and t[0] <= box[2] + margin
                and box[1] <= t[3] + margin
                and t[1] <= box[3] + margin
            ):
                return None
        for op, xy, style in parts:
            self._apply(self.draw, op, xy, style)
        self.taken.append(box)
        return box

    def gradient(self, y0: int, y1: int, top, bottom) -> None:
        for y in range(y0, y1):
            f = (y - y0) / max(1, y1 - y0 - 1)
            self.draw.line([(0, y), (self.size[0], y)], fill=tuple(round(a + (b - a) * f) for a, b in zip(top, bottom)))


def lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def _letters(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)]


def multiple_choice(
    rng: random.Random,
    question: str,
    correct: str,
    wrong: list[str],
    k: int = 4,
    focus: tuple[int, int, int, int] | None = None,
) -> Question:
    options = [correct] + rng.sample(wrong, min(k - 1, len(wrong)))
    rng.shuffle(options)
    letter = _letters(len(options))[options.index(correct)]
    listed = " ".join(f"{L}. {o}" for L, o in zip(_letters(len(options)), options))
    return Question(
        "multiple_choice",
        f"{question} {listed} Answer with the option's letter.",
        letter,
        options,
        correct,
        focus=focus,
    )


BOX_ASK = 'Output its bounding box as JSON {"bbox_2d": [x1, y1, x2, y2]} in pixel coordinates.'
POINT_ASK = 'Answer with one point as JSON {"point_2d": [x, y]} in pixel coordinates.'
