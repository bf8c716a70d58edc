"""Synthetic table-top scenes for embodied questions: objects, containers and free space, with their questions."""

from __future__ import annotations

import random

from edgekit.data.scene import (
    BOX_ASK,
    CONTAINER_COLORS,
    EMBODIED_SIZE,
    OBJECT_COLORS,
    POINT_ASK,
    TABLE,
    Painter,
    Question,
    Scene,
    Thing,
    multiple_choice,
)


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
            o = _tabletop_object(
                p, kind, cname, rng.randint(20, W - 20), rng.randint(edge + 20, H - 20), rng.randint(9, 15)
            )
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
            o = _tabletop_object(p, "ball", cname, cx, cy, max(5, (c.box[3] - c.box[1]) // 5), margin=-(10**6))
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
        parts = [
            (
                "ellipse",
                [cx - r, cy - r * 2 // 3, cx + r, cy + r * 2 // 3],
                {"fill": inner, "outline": color, "width": 5},
            )
        ]
    else:
        parts = [
            (
                "rectangle",
                [cx - r, cy - r * 2 // 3, cx + r, cy + r * 2 // 3],
                {"fill": inner, "outline": color, "width": 5},
            )
        ]
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
        parts = [
            ("rectangle", [cx - r * 2 // 3, cy - r, cx + r * 2 // 3, cy + r], {"fill": color}),
            ("ellipse", [cx - r * 2 // 3, cy - r - r // 3, cx + r * 2 // 3, cy - r + r // 3], {"fill": shade}),
        ]
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
                if all(
                    box[2] + 4 < t[0] or t[2] + 4 < box[0] or box[3] + 4 < t[1] or t[3] + 4 < box[1] for t in p.taken
                ):
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
        qs.append(
            multiple_choice(
                rng,
                f"What colour is the {t.kind} on the table?",
                colour,
                [c for c in OBJECT_COLORS if c != colour],
                focus=t.box,
            )
        )
    else:
        leftmost = min(objects, key=lambda t: t.box[0])
        qs.append(
            multiple_choice(
                rng,
                "Which object is furthest to the left on the table?",
                leftmost.name,
                [t.name for t in objects if t is not leftmost]
                + [
                    f"{c} {k}"
                    for c in OBJECT_COLORS
                    for k in ("cube", "ball")
                    if f"{c} {k}" not in [t.name for t in objects]
                ][:3],
            )
        )
    if containers and rng.random() < 0.5:
        c = containers[0]
        held = [t for t in inside if t.attrs["inside"] == c.name]
        qs.append(
            Question(
                "short_answer",
                f"What is inside the {c.name}? Answer with the object's colour and name, or 'nothing'.",
                held[0].name if held else "nothing",
                focus=c.box,
            )
        )
    else:
        qs.append(
            Question(
                "short_answer",
                "How many objects are on the table, not counting containers? Answer with a number.",
                str(len(objects)),
            )
        )
    t = rng.choice(objects + containers)
    qs.append(
        Question("box_grounding", f"Locate the {t.name} in the image. {BOX_ASK}", list(t.box), box=t.box, target=t.name)
    )
    if rng.random() < 0.35:
        fb = facts["free_box"]
        centre = ((fb[0] + fb[2]) // 2, (fb[1] + fb[3]) // 2)
        qs.append(
            Question(
                "point_grounding",
                f"Point to a free spot on the table where the robot could put an object down. {POINT_ASK}",
                list(centre),
                box=fb,
                point=centre,
                target="free space",
            )
        )
    else:
        t = rng.choice(objects)
        qs.append(
            Question(
                "point_grounding",
                f"Point to the {t.name}. {POINT_ASK}",
                list(t.point),
                box=t.box,
                point=t.point,
                target=t.name,
            )
        )
    qs.append(
        Question(
            "open_ended", "Describe the objects on the table from left to right.", _describe_table(objects, containers)
        )
    )
    return qs


def _describe_table(objects: list[Thing], containers: list[Thing]) -> str:
    items = []
    for t in sorted(objects + containers, key=lambda t: (t.box[0], t.box[1])):
        where = f" inside the {t.attrs['inside']}" if "inside" in t.attrs else ""
        items.append(f"a {t.name}{where}")
    listed = f"{', '.join(items[:-1])} and {items[-1]}" if len(items) > 1 else items[0]
    return f"From left to right there is {listed}."
