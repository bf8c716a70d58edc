"""Drawn driving and table-top scenes with exact ground truth, for calibration and smoke evaluation.

Every object is drawn with flat colours (no anti-aliasing), and its box is read back from a
mask of exactly the pixels it painted, so grounding answers are correct to the pixel.
Image sizes are multiples of 28 (Qwen2.5-VL's patch 14 x merge 2): the model's resize keeps
them, so its pixel coordinates are the file's pixel coordinates.
Scene i of a domain depends only on (seed, domain, i), so a longer set extends a shorter one.

Regenerate the shipped set: python -m edgekit.data.synthetic --out edgekit/data/assets --n 24 --seed 0
"""

from __future__ import annotations

import argparse
import io
import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from edgekit.atomic import write_bytes, write_text

DRIVING_SIZE = (448, 252)  # 16 x 9 patches of 28 px
EMBODIED_SIZE = (392, 308)  # 14 x 11 patches of 28 px
TASK_ORDER = ("multiple_choice", "short_answer", "box_grounding", "point_grounding", "open_ended")
SOURCE = "edgekit_synthetic"

# Object colours are exact RGB values used by nothing else in a scene (tests rely on it).
VEHICLE_COLORS = {
    "red": (196, 28, 36), "blue": (32, 72, 188), "white": (236, 236, 232), "black": (22, 22, 26),
    "yellow": (232, 196, 24), "green": (28, 128, 60), "orange": (228, 112, 20), "silver": (168, 172, 178),
}
CLOTHING_COLORS = {"purple": (120, 40, 150), "cyan": (20, 170, 190), "pink": (226, 90, 150), "brown": (110, 70, 40)}
LAMP_COLORS = {"red": (250, 40, 40), "yellow": (250, 210, 30), "green": (40, 230, 90)}
OBJECT_COLORS = {
    "red": (200, 30, 40), "green": (40, 160, 70), "blue": (40, 80, 200), "yellow": (230, 200, 30),
    "orange": (235, 120, 30), "purple": (130, 50, 160), "pink": (230, 100, 160), "cyan": (30, 180, 200),
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
            self._apply(md, op, xy, {k: (255 if k in ("fill", "outline") and v is not None else v) for k, v in style.items()})
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
            if box[0] <= t[2] + margin and t[0] <= box[2] + margin and box[1] <= t[3] + margin and t[1] <= box[3] + margin:
                return None
        for op, xy, style in parts:
            self._apply(self.draw, op, xy, style)
        self.taken.append(box)
        return box

    def gradient(self, y0: int, y1: int, top, bottom) -> None:
        for y in range(y0, y1):
            f = (y - y0) / max(1, y1 - y0 - 1)
            self.draw.line([(0, y), (self.size[0], y)], fill=tuple(round(a + (b - a) * f) for a, b in zip(top, bottom)))


def _lerp(a: float, b: float, t: float) -> float:
    return a + (b - a) * t


def _letters(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)]


def _mc(rng: random.Random, question: str, correct: str, wrong: list[str], k: int = 4) -> Question:
    options = [correct] + rng.sample(wrong, min(k - 1, len(wrong)))
    rng.shuffle(options)
    letter = _letters(len(options))[options.index(correct)]
    listed = " ".join(f"{L}. {o}" for L, o in zip(_letters(len(options)), options))
    return Question("multiple_choice", f"{question} {listed} Answer with the option's letter.", letter, options, correct)


BOX_ASK = 'Output its bounding box as JSON {"bbox_2d": [x1, y1, x2, y2]} in pixel coordinates.'
POINT_ASK = 'Answer with one point as JSON {"point_2d": [x, y]} in pixel coordinates.'


# ---------------------------------------------------------------- driving


def driving_scene(rng: random.Random) -> Scene:
    W, H = DRIVING_SIZE
    p = Painter(DRIVING_SIZE)
    horizon = rng.randint(int(0.36 * H), int(0.44 * H))
    vx = W // 2 + rng.randint(-30, 30)
    p.gradient(0, horizon, (96, 150, 212), (184, 208, 232))  # sky
    p.gradient(horizon, H, (92, 132, 72), (64, 108, 52))  # grass
    n_lanes = rng.choice([2, 3, 4])
    left_b, right_b = -W * 0.25, W * 1.25  # road edges at the bottom row
    top_half = 10

    def road_x(frac: float, t: float) -> float:  # t = 0 at the horizon, 1 at the bottom row
        return _lerp(vx - top_half + 2 * top_half * frac, _lerp(left_b, right_b, frac), t)

    def y_at(t: float) -> float:
        return _lerp(horizon, H - 1, t)

    # sidewalks, then road, then markings: scenery that objects are drawn over
    p.draw.polygon([(vx - top_half - 6, horizon), (vx - top_half, horizon), (left_b, H), (left_b - 120, H)], fill=(150, 150, 146))
    p.draw.polygon([(vx + top_half, horizon), (vx + top_half + 6, horizon), (right_b + 120, H), (right_b, H)], fill=(150, 150, 146))
    p.draw.polygon([(vx - top_half, horizon), (vx + top_half, horizon), (right_b, H), (left_b, H)], fill=(72, 72, 78))
    for i in range(n_lanes + 1):
        frac = i / n_lanes
        solid = i in (0, n_lanes)
        steps = 24
        for s in range(steps):
            t0, t1 = (s / steps) ** 1.6, ((s + 0.5 if not solid else s + 1) / steps) ** 1.6
            width = max(1, round(_lerp(1, 6, t1)))
            p.draw.line([(road_x(frac, t0), y_at(t0)), (road_x(frac, t1), y_at(t1))], fill=(228, 228, 220), width=width)

    things: list[Thing] = []
    light_state = rng.choice(list(LAMP_COLORS))
    things.append(_traffic_light(p, rng, light_state, vx, horizon))
    sign_kind = rng.choice(["stop", "speed_limit", "yield", None])
    if sign_kind:
        sign = _sign(p, rng, sign_kind, horizon)
        if sign:
            things.append(sign)
    vehicle_colors = rng.sample(list(VEHICLE_COLORS), 4)
    for cname in vehicle_colors[: rng.randint(1, 4)]:
        for _ in range(20):  # rejection sampling for a free spot
            lane = rng.randrange(n_lanes)
            t = rng.uniform(0.2, 0.75)
            v = _vehicle(p, cname, rng.choice(["car", "car", "truck"]), road_x((lane + 0.5) / n_lanes, t), y_at(t),
                         (road_x(1, t) - road_x(0, t)) / n_lanes)
            if v:
                things.append(Thing(v.kind, v.name, v.color, v.box, v.point, {**v.attrs, "lane": lane}))
                break
    for cname in rng.sample(list(CLOTHING_COLORS), rng.randint(0, 2)):
        for _ in range(20):
            t = rng.uniform(0.3, 0.85)
            side = rng.choice(["left", "right"])
            x = road_x(-0.06, t) if side == "left" else road_x(1.06, t)
            ped = _pedestrian(p, cname, x, y_at(t), _lerp(6, 40, t))
            if ped:
                things.append(Thing(ped.kind, ped.name, ped.color, ped.box, ped.point, {"side": side}))
                break
    facts = {"lanes": n_lanes, "light": light_state, "sign": sign_kind if any(t.kind == "sign" for t in things) else None}
    return Scene("driving", p.img, things, _driving_questions(rng, things, facts), facts)


def _traffic_light(p: Painter, rng: random.Random, state: str, vx: int, horizon: int) -> Thing:
    right = rng.random() < 0.5
    w, h = 14, 36
    x = rng.randint(vx + 60, vx + 140) if right else rng.randint(vx - 140, vx - 60 - w)
    y = rng.randint(8, max(9, horizon - h - 20))
    p.draw.line([(x + w // 2, y + h), (x + w // 2, horizon + 30)], fill=(90, 90, 96), width=3)  # pole: scenery
    parts = [("rectangle", [x, y, x + w - 1, y + h - 1], {"fill": (28, 28, 30)})]
    lamps = {}
    for k, name in enumerate(("red", "yellow", "green")):
        cy = y + 6 + k * 12
        lamps[name] = (x + w // 2, cy)
        parts.append(("ellipse", [x + 2, cy - 5, x + w - 3, cy + 5], {"fill": LAMP_COLORS[name] if name == state else (70, 70, 64)}))
    box = p.place(parts)
    assert box is not None, "the traffic light is placed first"
    return Thing("traffic_light", "traffic light", LAMP_COLORS[state], box, lamps[state], {"state": state, "side": "right" if right else "left"})


SIGN_RED = (204, 24, 44)


def _sign(p: Painter, rng: random.Random, kind: str, horizon: int) -> Thing | None:
    W, _ = p.size
    for _ in range(10):
        r = rng.randint(14, 18)
        right = rng.random() < 0.5
        cx = rng.randint(W - 70, W - 20) if right else rng.randint(20, 70)
        cy = rng.randint(r + 4, horizon + 10)
        p_parts = []
        if kind == "stop":
            pts = [(cx + r * math.cos(math.pi / 8 + k * math.pi / 4), cy + r * math.sin(math.pi / 8 + k * math.pi / 4)) for k in range(8)]
            p_parts.append(("polygon", pts, {"fill": SIGN_RED}))
            p_parts.append(("text", (cx, cy + 1), {"text": "STOP", "fill": (250, 250, 250)}))
            color, point, label = SIGN_RED, (cx, cy - r + 3), "stop sign"
            attrs = {"sign": "stop"}
        elif kind == "speed_limit":
            limit = rng.choice([30, 50, 60, 80])
            p_parts.append(("ellipse", [cx - r, cy - r, cx + r, cy + r], {"fill": (250, 250, 250), "outline": SIGN_RED, "width": 3}))
            p_parts.append(("text", (cx, cy), {"text": str(limit), "fill": (10, 10, 10)}))
            color, point, label = SIGN_RED, (cx, cy - r + 1), "speed limit sign"
            attrs = {"sign": "speed_limit", "limit": limit}
        else:
            p_parts.append(("polygon", [(cx - r, cy - r), (cx + r, cy - r), (cx, cy + r)], {"fill": SIGN_RED}))
            p_parts.append(("polygon", [(cx - r + 6, cy - r + 3), (cx + r - 6, cy - r + 3), (cx, cy + r - 7)], {"fill": (250, 250, 250)}))
            color, point, label = SIGN_RED, (cx, cy - r + 1), "yield sign"
            attrs = {"sign": "yield"}
        box = p.place(p_parts)
        if box:
            p.draw.line([(cx, box[3] + 1), (cx, horizon + 40)], fill=(90, 90, 96), width=2)  # post: scenery, below the box
            return Thing("sign", label, color, box, point, {**attrs, "side": "right" if right else "left"})
    return None


def _vehicle(p: Painter, cname: str, kind: str, cx: float, bottom: float, lane_w: float) -> Thing | None:
    w = max(10, round(lane_w * (0.62 if kind == "car" else 0.72)))
    h = round(w * (0.62 if kind == "car" else 0.95))
    x0, y0 = round(cx - w / 2), round(bottom - h)
    body = VEHICLE_COLORS[cname]
    glass = (58, 78, 96)
    wheel_h = max(2, h // 6)
    parts = [
        ("rectangle", [x0, y0 + h // 4, x0 + w - 1, y0 + h - wheel_h - 1], {"fill": body}),  # body
        ("rectangle", [x0 + w // 6, y0, x0 + w - 1 - w // 6, y0 + h // 4], {"fill": body}),  # roof
        ("rectangle", [x0 + w // 5, y0 + max(1, h // 16), x0 + w - 1 - w // 5, y0 + h // 4 - 1], {"fill": glass}),  # rear window
        ("rectangle", [x0 + 1, y0 + h - wheel_h, x0 + max(2, w // 5), y0 + h - 1], {"fill": (14, 14, 14)}),  # wheels
        ("rectangle", [x0 + w - 1 - max(2, w // 5), y0 + h - wheel_h, x0 + w - 2, y0 + h - 1], {"fill": (14, 14, 14)}),
        ("rectangle", [x0 + 1, y0 + h // 2, x0 + max(2, w // 8), y0 + h // 2 + max(1, h // 10)], {"fill": (255, 60, 40)}),  # tail lights
        ("rectangle", [x0 + w - 1 - max(2, w // 8), y0 + h // 2, x0 + w - 2, y0 + h // 2 + max(1, h // 10)], {"fill": (255, 60, 40)}),
    ]
    box = p.place(parts)
    if box is None:
        return None
    point = (x0 + w // 2, y0 + h // 4 + max(1, (h - wheel_h - h // 4) * 2 // 3))  # lower body, between the tail lights
    return Thing(kind, f"{cname} {kind}", body, box, point, {"color": cname})


def _pedestrian(p: Painter, cname: str, cx: float, bottom: float, height: float) -> Thing | None:
    h = max(12, round(height))
    w = max(4, h // 4)
    x0, y0 = round(cx - w / 2), round(bottom - h)
    shirt = CLOTHING_COLORS[cname]
    head = max(2, h // 6)
    parts = [
        ("ellipse", [x0 + w // 2 - head // 2, y0, x0 + w // 2 + head // 2, y0 + head], {"fill": SKIN}),
        ("rectangle", [x0, y0 + head + 1, x0 + w - 1, y0 + h * 3 // 5], {"fill": shirt}),
        ("rectangle", [x0, y0 + h * 3 // 5 + 1, x0 + w // 2 - 1, y0 + h - 1], {"fill": (40, 44, 70)}),  # legs
        ("rectangle", [x0 + w // 2 + 1, y0 + h * 3 // 5 + 1, x0 + w - 1, y0 + h - 1], {"fill": (40, 44, 70)}),
    ]
    box = p.place(parts, margin=2)
    if box is None:
        return None
    point = (x0 + w // 2, (y0 + head + 1 + y0 + h * 3 // 5) // 2)
    return Thing("pedestrian", f"pedestrian in {cname}", shirt, box, point, {"color": cname})


def _driving_questions(rng: random.Random, things: list[Thing], facts: dict) -> list[Question]:
    vehicles = [t for t in things if t.kind in ("car", "truck")]
    peds = [t for t in things if t.kind == "pedestrian"]
    light = next(t for t in things if t.kind == "traffic_light")
    sign = next((t for t in things if t.kind == "sign"), None)
    qs = []
    if rng.random() < 0.5:
        state = light.attrs["state"].capitalize()
        qs.append(_mc(rng, "What colour is the traffic light?", state, [c for c in ("Red", "Yellow", "Green", "It is off") if c != state]))
    else:
        action = {"red": "Stop before the intersection", "yellow": "Slow down and prepare to stop", "green": "Proceed through the intersection"}
        qs.append(_mc(rng, "Based on the traffic light, what should the ego vehicle do?", action[light.attrs["state"]],
                      [a for s, a in action.items() if s != light.attrs["state"]] + ["Reverse"], k=4))
    if sign is not None and sign.attrs["sign"] == "speed_limit" and rng.random() < 0.5:
        qs.append(Question("short_answer", "What speed limit does the traffic sign show? Answer with the number.", str(sign.attrs["limit"])))
    elif peds and rng.random() < 0.5:
        qs.append(Question("short_answer", "How many pedestrians are visible? Answer with a number.", str(len(peds))))
    else:
        qs.append(Question("short_answer", "How many vehicles are on the road? Answer with a number.", str(len(vehicles))))
    target = rng.choice(vehicles or [light])
    qs.append(Question("box_grounding", f"Locate the {target.name} in the image. {BOX_ASK}", list(target.box), box=target.box, target=target.name))
    target = rng.choice(peds + vehicles + [light])
    what = "the lit lamp of the traffic light" if target.kind == "traffic_light" else f"the {target.name}"
    qs.append(Question("point_grounding", f"Point to {what}. {POINT_ASK}", list(target.point), box=target.box, point=target.point, target=target.name))
    qs.append(Question("open_ended", "Describe the traffic scene in front of the ego vehicle.", _describe_driving(things, facts)))
    return qs


def _describe_driving(things: list[Thing], facts: dict) -> str:
    vehicles = sorted((t for t in things if t.kind in ("car", "truck")), key=lambda t: t.box[0])
    peds = [t for t in things if t.kind == "pedestrian"]
    lanes = facts["lanes"]
    parts = [f"The road has {lanes} lanes."]
    if vehicles:
        desc = ", ".join(f"a {v.name} in lane {v.attrs['lane'] + 1} from the left" for v in vehicles)
        parts.append(f"There {'is' if len(vehicles) == 1 else 'are'} {len(vehicles)} vehicle{'s' * (len(vehicles) != 1)}: {desc}.")
    if peds:
        parts.append(" ".join(f"A {t.name} stands on the {t.attrs['side']} sidewalk." for t in peds))
    parts.append(f"The traffic light on the {next(t for t in things if t.kind == 'traffic_light').attrs['side']} is {facts['light']}.")
    sign = next((t for t in things if t.kind == "sign"), None)
    if sign is not None:
        extra = f" showing {sign.attrs['limit']}" if "limit" in sign.attrs else ""
        parts.append(f"A {sign.name}{extra} is on the {sign.attrs['side']} side.")
    return " ".join(parts)


# ---------------------------------------------------------------- embodied (table top)


def embodied_scene(rng: random.Random) -> Scene:
    W, H = EMBODIED_SIZE
    p = Painter(EMBODIED_SIZE)
    edge = rng.randint(int(0.18 * H), int(0.28 * H))
    p.gradient(0, edge, (204, 198, 188), (226, 220, 210))  # wall
    p.draw.rectangle([0, edge, W - 1, H - 1], fill=TABLE)
    p.draw.rectangle([0, edge, W - 1, edge + 3], fill=(122, 88, 54))  # table edge
    things: list[Thing] = []
    for cname in rng.sample(list(CONTAINER_COLORS), rng.randint(1, 2)):
        kind = rng.choice(["bowl", "basket"])
        for _ in range(30):
            c = _container(p, kind, cname, rng.randint(50, W - 50), rng.randint(edge + 40, H - 40), rng.randint(30, 44))
            if c:
                things.append(c)
                break
    colors = rng.sample(list(OBJECT_COLORS), rng.randint(3, 6))
    kinds = ["cube", "ball", "cup", "block"]
    for cname in colors:
        kind = rng.choice(kinds)
        for _ in range(30):
            o = _tabletop_object(p, kind, cname, rng.randint(20, W - 20), rng.randint(edge + 20, H - 20), rng.randint(9, 15))
            if o:
                things.append(o)
                break
    containers = [t for t in things if t.kind in ("bowl", "basket")]
    if containers and rng.random() < 0.6:  # one object sits inside a container
        c = containers[0]
        cname = next((k for k in OBJECT_COLORS if k not in colors), None)
        if cname:
            p.taken.remove(c.box)  # the object may overlap its container's box (not its rim)
            cx, cy = (c.box[0] + c.box[2]) // 2, (c.box[1] + c.box[3]) // 2
            o = _tabletop_object(p, "ball", cname, cx, cy, max(5, (c.box[3] - c.box[1]) // 5), margin=-10**6)
            p.taken.append(c.box)
            if o:
                things.append(Thing(o.kind, o.name, o.color, o.box, o.point, {**o.attrs, "inside": c.name}))
    free = _free_space(p, edge)
    facts = {"table_top": edge, "free_box": free}
    return Scene("embodied", p.img, things, _embodied_questions(rng, things, facts), facts)


def _container(p: Painter, kind: str, cname: str, cx: int, cy: int, r: int) -> Thing | None:
    color = CONTAINER_COLORS[cname]
    inner = (186, 178, 166)
    if kind == "bowl":
        parts = [("ellipse", [cx - r, cy - r * 2 // 3, cx + r, cy + r * 2 // 3], {"fill": inner, "outline": color, "width": 5})]
    else:
        parts = [("rectangle", [cx - r, cy - r * 2 // 3, cx + r, cy + r * 2 // 3], {"fill": inner, "outline": color, "width": 5})]
    box = p.place(parts, margin=6)
    if box is None:
        return None
    return Thing(kind, f"{cname} {kind}", color, box, (cx, box[1] + 2), {"color": cname, "container": True})


def _tabletop_object(p: Painter, kind: str, cname: str, cx: int, cy: int, r: int, margin: int = 6) -> Thing | None:
    color = OBJECT_COLORS[cname]
    shade = tuple(max(0, v - 60) for v in color)
    if kind == "cube":
        parts = [("rectangle", [cx - r, cy - r, cx + r, cy + r], {"fill": color, "outline": shade, "width": 2})]
    elif kind == "ball":
        parts = [("ellipse", [cx - r, cy - r, cx + r, cy + r], {"fill": color})]
    elif kind == "cup":
        parts = [("rectangle", [cx - r * 2 // 3, cy - r, cx + r * 2 // 3, cy + r], {"fill": color}),
                 ("ellipse", [cx - r * 2 // 3, cy - r - r // 3, cx + r * 2 // 3, cy - r + r // 3], {"fill": shade})]
    else:  # block: a long brick
        parts = [("rectangle", [cx - r * 3 // 2, cy - r // 2, cx + r * 3 // 2, cy + r // 2], {"fill": color})]
    box = p.place(parts, margin=margin)
    if box is None:
        return None
    return Thing(kind, f"{cname} {kind}", color, box, (cx, cy + (r // 3 if kind == "cup" else 0)), {"color": cname})


def _free_space(p: Painter, edge: int) -> tuple[int, int, int, int]:
    """The largest empty square of table (on a coarse grid), away from every object by 4 px."""
    W, H = p.size
    best = None
    for side in (96, 80, 64, 48, 36, 28):
        for y in range(edge + 8, H - side - 4, 8):
            for x in range(4, W - side - 4, 8):
                box = (x, y, x + side - 1, y + side - 1)
                if all(box[2] + 4 < t[0] or t[2] + 4 < box[0] or box[3] + 4 < t[1] or t[3] + 4 < box[1] for t in p.taken):
                    best = box
                    break
            if best:
                return best
    return (4, H - 24, 27, H - 5)  # cannot happen with the object counts above; a strip of table


def _embodied_questions(rng: random.Random, things: list[Thing], facts: dict) -> list[Question]:
    objects = [t for t in things if not t.attrs.get("container")]
    containers = [t for t in things if t.attrs.get("container")]
    inside = [t for t in objects if "inside" in t.attrs]
    qs = []
    kinds = [t.kind for t in objects]
    unique = [t for t in objects if kinds.count(t.kind) == 1]
    if unique and rng.random() < 0.5:
        t = rng.choice(unique)
        colour = t.attrs["color"]
        qs.append(_mc(rng, f"What colour is the {t.kind} on the table?", colour, [c for c in OBJECT_COLORS if c != colour]))
    else:
        leftmost = min(objects, key=lambda t: t.box[0])
        qs.append(_mc(rng, "Which object is furthest to the left on the table?", leftmost.name, [t.name for t in objects if t is not leftmost]
                      + [f"{c} {k}" for c in OBJECT_COLORS for k in ("cube", "ball") if f"{c} {k}" not in [t.name for t in objects]][:3]))
    if containers and rng.random() < 0.5:
        c = containers[0]
        held = [t for t in inside if t.attrs["inside"] == c.name]
        qs.append(Question("short_answer", f"What is inside the {c.name}? Answer with the object's colour and name, or 'nothing'.",
                           held[0].name if held else "nothing"))
    else:
        qs.append(Question("short_answer", "How many objects are on the table, not counting containers? Answer with a number.", str(len(objects))))
    t = rng.choice(objects + containers)
    qs.append(Question("box_grounding", f"Locate the {t.name} in the image. {BOX_ASK}", list(t.box), box=t.box, target=t.name))
    if rng.random() < 0.35:
        fb = facts["free_box"]
        centre = ((fb[0] + fb[2]) // 2, (fb[1] + fb[3]) // 2)
        qs.append(Question("point_grounding", f"Point to a free spot on the table where the robot could put an object down. {POINT_ASK}",
                           list(centre), box=fb, point=centre, target="free space"))
    else:
        t = rng.choice(objects)
        qs.append(Question("point_grounding", f"Point to the {t.name}. {POINT_ASK}", list(t.point), box=t.box, point=t.point, target=t.name))
    qs.append(Question("open_ended", "Describe the objects on the table from left to right.", _describe_table(objects, containers)))
    return qs


def _describe_table(objects: list[Thing], containers: list[Thing]) -> str:
    items = []
    for t in sorted(objects + containers, key=lambda t: (t.box[0], t.box[1])):
        where = f" inside the {t.attrs['inside']}" if "inside" in t.attrs else ""
        items.append(f"a {t.name}{where}")
    listed = f"{', '.join(items[:-1])} and {items[-1]}" if len(items) > 1 else items[0]
    return f"From left to right there is {listed}."



# ---------------------------------------------------------------- sample sets


def scene_rng(domain: str, seed: int, index: int) -> random.Random:
    return random.Random(f"edgekit-synthetic/{domain}/{seed}/{index}")  # str seeds hash with SHA-512: stable across runs


def make_scene(domain: str, seed: int, index: int) -> Scene:
    rng = scene_rng(domain, seed, index)
    return driving_scene(rng) if domain == "driving" else embodied_scene(rng)


def sample_records(domain: str, seed: int, n: int) -> list[tuple[dict, bytes]]:
    """`n` JSONL records of one domain with their PNG bytes. Scene i gives one sample, task
    TASK_ORDER[i % 5]; even scenes are calib, odd ones eval, so the splits share no image."""
    out = []
    for i in range(n):
        scene = make_scene(domain, seed, i)
        task = TASK_ORDER[i % len(TASK_ORDER)]
        q = next(q for q in scene.questions if q.task == task)
        name = f"{domain}_{seed}_{i:03d}.png"
        w, h = scene.image.size
        rec = {
            "id": f"synthetic_{domain}_{seed}_{i:03d}_{task}",
            "domain": domain,
            "task": task,
            "image": name,
            "question": q.question,
            "answer": q.answer,
            "split": "calib" if i % 2 == 0 else "eval",
            "source": SOURCE,
            "coords": f"absolute pixels, {w}x{h} image; boxes include both end pixels",
            "seed": seed,
            "scene": i,
        }
        if q.choices is not None:
            rec["choices"], rec["answer_text"] = q.choices, q.answer_text
        if q.box is not None:
            rec["box"] = list(q.box)
        if q.point is not None:
            rec["point"] = list(q.point)
        if q.target is not None:
            rec["target"] = q.target
        buf = io.BytesIO()
        scene.image.save(buf, format="PNG", optimize=True)  # no timestamps or text chunks: same pixels, same bytes
        out.append((rec, buf.getvalue()))
    return out


def write_sample_set(out: str | Path, n: int, seed: int = 0, domains: tuple[str, ...] = ("driving", "embodied")) -> list[Path]:
    """Write <domain>.jsonl plus PNGs into `out` (flat, so package data globs pick them up)."""
    out = Path(out)
    written = []
    for domain in domains:
        lines = []
        for rec, png in sample_records(domain, seed, n):
            write_bytes(out / rec["image"], png)
            lines.append(json.dumps(rec, sort_keys=True))
        path = out / f"{domain}.jsonl"
        write_text(path, "\n".join(lines) + "\n")
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Generate the synthetic driving + embodied sample set.")
    ap.add_argument("--out", required=True, help="output directory")
    ap.add_argument("--n", type=int, default=24, help="samples per domain")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    for path in write_sample_set(args.out, args.n, args.seed):
        print(path)


if __name__ == "__main__":
    main()
