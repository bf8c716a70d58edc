"""Synthetic driving scenes: road, lanes, vehicles, pedestrians, traffic lights and signs, with their questions."""

from __future__ import annotations

import math
import random

from edgekit.data.scene import (
    BOX_ASK,
    CLOTHING_COLORS,
    DRIVING_SIZE,
    LAMP_COLORS,
    POINT_ASK,
    SKIN,
    VEHICLE_COLORS,
    Painter,
    Question,
    Scene,
    Thing,
    lerp,
    multiple_choice,
)


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
        return lerp(vx - top_half + 2 * top_half * frac, lerp(left_b, right_b, frac), t)

    def y_at(t: float) -> float:
        return lerp(horizon, H - 1, t)

    # sidewalks, then road, then markings: scenery that objects are drawn over
    p.draw.polygon(
        [(vx - top_half - 6, horizon), (vx - top_half, horizon), (left_b, H), (left_b - 120, H)], fill=(150, 150, 146)
    )
    p.draw.polygon(
        [(vx + top_half, horizon), (vx + top_half + 6, horizon), (right_b + 120, H), (right_b, H)], fill=(150, 150, 146)
    )
    p.draw.polygon([(vx - top_half, horizon), (vx + top_half, horizon), (right_b, H), (left_b, H)], fill=(72, 72, 78))
    for i in range(n_lanes + 1):
        frac = i / n_lanes
        solid = i in (0, n_lanes)
        steps = 24
        for s in range(steps):
            t0, t1 = (s / steps) ** 1.6, ((s + 0.5 if not solid else s + 1) / steps) ** 1.6
            width = max(1, round(lerp(1, 6, t1)))
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
            v = _vehicle(
                p,
                cname,
                rng.choice(["car", "car", "truck"]),
                road_x((lane + 0.5) / n_lanes, t),
                y_at(t),
                (road_x(1, t) - road_x(0, t)) / n_lanes,
            )
            if v:
                things.append(Thing(v.kind, v.name, v.color, v.box, v.point, {**v.attrs, "lane": lane}))
                break
    for cname in rng.sample(list(CLOTHING_COLORS), rng.randint(0, 2)):
        for _ in range(20):
            t = rng.uniform(0.3, 0.85)
            side = rng.choice(["left", "right"])
            x = road_x(-0.06, t) if side == "left" else road_x(1.06, t)
            ped = _pedestrian(p, cname, x, y_at(t), lerp(6, 40, t))
            if ped:
                things.append(Thing(ped.kind, ped.name, ped.color, ped.box, ped.point, {"side": side}))
                break
    facts = {
        "lanes": n_lanes,
        "light": light_state,
        "sign": sign_kind if any(t.kind == "sign" for t in things) else None,
    }
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
        parts.append(
            (
                "ellipse",
                [x + 2, cy - 5, x + w - 3, cy + 5],
                {"fill": LAMP_COLORS[name] if name == state else (70, 70, 64)},
            )
        )
    box = p.place(parts)
    assert box is not None, "the traffic light is placed first"
    return Thing(
        "traffic_light",
        "traffic light",
        LAMP_COLORS[state],
        box,
        lamps[state],
        {"state": state, "side": "right" if right else "left"},
    )


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
            pts = [
                (cx + r * math.cos(math.pi / 8 + k * math.pi / 4), cy + r * math.sin(math.pi / 8 + k * math.pi / 4))
                for k in range(8)
            ]
            p_parts.append(("polygon", pts, {"fill": SIGN_RED}))
            p_parts.append(("text", (cx, cy + 1), {"text": "STOP", "fill": (250, 250, 250)}))
            color, point, label = SIGN_RED, (cx, cy - r + 3), "stop sign"
            attrs = {"sign": "stop"}
        elif kind == "speed_limit":
            limit = rng.choice([30, 50, 60, 80])
            p_parts.append(
                (
                    "ellipse",
                    [cx - r, cy - r, cx + r, cy + r],
                    {"fill": (250, 250, 250), "outline": SIGN_RED, "width": 3},
                )
            )
            p_parts.append(("text", (cx, cy), {"text": str(limit), "fill": (10, 10, 10)}))
            color, point, label = SIGN_RED, (cx, cy - r + 1), "speed limit sign"
            attrs = {"sign": "speed_limit", "limit": limit}
        else:
            p_parts.append(("polygon", [(cx - r, cy - r), (cx + r, cy - r), (cx, cy + r)], {"fill": SIGN_RED}))
            p_parts.append(
                (
                    "polygon",
                    [(cx - r + 6, cy - r + 3), (cx + r - 6, cy - r + 3), (cx, cy + r - 7)],
                    {"fill": (250, 250, 250)},
                )
            )
            color, point, label = SIGN_RED, (cx, cy - r + 1), "yield sign"
            attrs = {"sign": "yield"}
        box = p.place(p_parts)
        if box:
            p.draw.line(
                [(cx, box[3] + 1), (cx, horizon + 40)], fill=(90, 90, 96), width=2
            )  # post: scenery, below the box
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
        (
            "rectangle",
            [x0 + w // 5, y0 + max(1, h // 16), x0 + w - 1 - w // 5, y0 + h // 4 - 1],
            {"fill": glass},
        ),  # rear window
        ("rectangle", [x0 + 1, y0 + h - wheel_h, x0 + max(2, w // 5), y0 + h - 1], {"fill": (14, 14, 14)}),  # wheels
        ("rectangle", [x0 + w - 1 - max(2, w // 5), y0 + h - wheel_h, x0 + w - 2, y0 + h - 1], {"fill": (14, 14, 14)}),
        (
            "rectangle",
            [x0 + 1, y0 + h // 2, x0 + max(2, w // 8), y0 + h // 2 + max(1, h // 10)],
            {"fill": (255, 60, 40)},
        ),  # tail lights
        (
            "rectangle",
            [x0 + w - 1 - max(2, w // 8), y0 + h // 2, x0 + w - 2, y0 + h // 2 + max(1, h // 10)],
            {"fill": (255, 60, 40)},
        ),
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
        qs.append(
            multiple_choice(
                rng,
                "What colour is the traffic light?",
                state,
                [c for c in ("Red", "Yellow", "Green", "It is off") if c != state],
                focus=light.box,
            )
        )
    else:
        action = {
            "red": "Stop before the intersection",
            "yellow": "Slow down and prepare to stop",
            "green": "Proceed through the intersection",
        }
        qs.append(
            multiple_choice(
                rng,
                "Based on the traffic light, what should the ego vehicle do?",
                action[light.attrs["state"]],
                [a for s, a in action.items() if s != light.attrs["state"]] + ["Reverse"],
                k=4,
                focus=light.box,
            )
        )
    if sign is not None and sign.attrs["sign"] == "speed_limit" and rng.random() < 0.5:
        qs.append(
            Question(
                "short_answer",
                "What speed limit does the traffic sign show? Answer with the number.",
                str(sign.attrs["limit"]),
                focus=sign.box,
            )
        )
    elif peds and rng.random() < 0.5:
        qs.append(Question("short_answer", "How many pedestrians are visible? Answer with a number.", str(len(peds))))
    else:
        qs.append(
            Question("short_answer", "How many vehicles are on the road? Answer with a number.", str(len(vehicles)))
        )
    target = rng.choice(vehicles or [light])
    qs.append(
        Question(
            "box_grounding",
            f"Locate the {target.name} in the image. {BOX_ASK}",
            list(target.box),
            box=target.box,
            target=target.name,
        )
    )
    target = rng.choice(peds + vehicles + [light])
    what = "the lit lamp of the traffic light" if target.kind == "traffic_light" else f"the {target.name}"
    qs.append(
        Question(
            "point_grounding",
            f"Point to {what}. {POINT_ASK}",
            list(target.point),
            box=target.box,
            point=target.point,
            target=target.name,
        )
    )
    qs.append(
        Question(
            "open_ended", "Describe the traffic scene in front of the ego vehicle.", _describe_driving(things, facts)
        )
    )
    return qs


def _describe_driving(things: list[Thing], facts: dict) -> str:
    vehicles = sorted((t for t in things if t.kind in ("car", "truck")), key=lambda t: t.box[0])
    peds = [t for t in things if t.kind == "pedestrian"]
    lanes = facts["lanes"]
    parts = [f"The road has {lanes} lanes."]
    if vehicles:
        desc = ", ".join(f"a {v.name} in lane {v.attrs['lane'] + 1} from the left" for v in vehicles)
        parts.append(
            f"There {'is' if len(vehicles) == 1 else 'are'} {len(vehicles)} vehicle{'s' * (len(vehicles) != 1)}: {desc}."
        )
    if peds:
        parts.append(" ".join(f"A {t.name} stands on the {t.attrs['side']} sidewalk." for t in peds))
    parts.append(
        f"The traffic light on the {next(t for t in things if t.kind == 'traffic_light').attrs['side']} is {facts['light']}."
    )
    sign = next((t for t in things if t.kind == "sign"), None)
    if sign is not None:
        extra = f" showing {sign.attrs['limit']}" if "limit" in sign.attrs else ""
        parts.append(f"A {sign.name}{extra} is on the {sign.attrs['side']} side.")
    return " ".join(parts)
