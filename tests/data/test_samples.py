"""Sample format, loader errors, synthetic scenes (pixel-exact ground truth), splits, mixing, scoring."""

from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from edgekit import metrics as M
from edgekit.bench import scoring as SC
from edgekit.data import reference_answers as R
from edgekit.data import samples as S
from edgekit.data import selection as SEL
from edgekit.data import scene as scene_parts
from edgekit.data import synthetic as syn
from edgekit.errors import EdgekitError


def _rng(name: str) -> random.Random:
    return random.Random(f"test_samples/{name}")


# ---------------------------------------------------------------- real samples


def test_shared_samples_all_load(shared_samples):
    files = sorted(shared_samples.glob("*.jsonl"))
    got = S.load_samples(shared_samples)
    lines = sum(1 for f in files for line in f.read_text().splitlines() if line.strip())
    assert len(got) == lines and len(files) >= 3
    assert {s.domain for s in got} == {"driving", "embodied"}
    assert all(s.image.is_file() and all(p.is_file() for p in s.images) for s in got)
    assert all("license" in s.extra and "source" in s.extra for s in got)  # unknown fields kept
    assert len(set(got)) == len(got)  # hashable although answers can be lists
    calib_only = [s for s in got if s.answer is None]
    assert calib_only and all(s in SEL.split(got, "calib") for s in calib_only)
    assert not any(s.answer is None for s in SEL.split(got, "eval"))
    rng = _rng("shared-decode")
    for s in rng.sample(got, 4):
        assert min(s.load_image().size) > 0


def test_shared_teacher_forcing_answers_score_full_marks(shared_samples):
    got = [s for s in S.load_samples(shared_samples) if s.answer is not None]
    per_task: dict[str, list[float]] = {}
    for s in got:
        per_task.setdefault(s.task, []).append(
            SC.score_reply(s, R.format_answer_for_teacher_forcing(s), think=False)["score"]
        )
    for task in ("multiple_choice", "short_answer", "open_ended", "box_grounding"):
        assert min(per_task[task]) == 1.0, task
    # one interior point per reference polygon, scored against the rasterized mask: edge pixels may differ
    assert np.mean(per_task["point_grounding"]) > 0.97


# ---------------------------------------------------------------- synthetic generation


def test_generation_is_byte_deterministic_and_prefix_stable(tmp_path):
    seed = _rng("det").randrange(10**6)
    a = syn.write_sample_set(tmp_path / "a", 5, seed)
    b = syn.write_sample_set(tmp_path / "b", 5, seed)
    files_a = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert files_a == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in files_a:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    short = syn.sample_records("embodied", seed, 3)
    assert [r for r, _ in short] == [r for r, _ in syn.sample_records("embodied", seed, 5)[:3]]
    other = syn.sample_records("embodied", seed + 1, 3)
    assert [png for _, png in short] != [png for _, png in other]
    assert len(a) == len(b) == 2


def test_shipped_assets_regenerate_byte_identically(tmp_path):
    syn.write_sample_set(tmp_path, 24, 0)
    shipped = sorted(p for p in S.ASSETS_DIR.iterdir() if p.suffix in (".png", ".jsonl"))
    assert sorted(p.name for p in shipped) == sorted(p.name for p in tmp_path.iterdir())
    assert sum(p.stat().st_size for p in shipped) < 2_000_000
    for p in shipped:
        fresh = tmp_path / p.name
        if p.suffix == ".png":  # pixels first, so a zlib/Pillow encoder change is told apart from a drawing change
            assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(fresh))), f"{p.name}: pixels differ"
        assert p.read_bytes() == fresh.read_bytes(), f"{p.name}: bytes differ (same pixels: PNG encoder changed?)"


def _scenes(name: str, k: int):
    rng = _rng(name)
    return [
        syn.make_scene(domain, rng.randrange(10**6), rng.randrange(1000))
        for domain in ("driving", "embodied")
        for _ in range(k)
    ]


def test_ground_truth_points_and_boxes_match_pixels():
    for scene in _scenes("gt", 6):
        px = np.asarray(scene.image)  # [H, W, 3]
        h, w, _ = px.shape
        assert (w % 28, h % 28) == (0, 0)
        for t in scene.things:
            x1, y1, x2, y2 = t.box
            assert 0 <= x1 <= x2 < w and 0 <= y1 <= y2 < h
            assert tuple(px[t.point[1], t.point[0]]) == t.color, (t.name, t.point)
            assert x1 <= t.point[0] <= x2 and y1 <= t.point[1] <= y2
            ys, xs = np.nonzero(np.all(px == np.array(t.color, np.uint8), axis=-1))
            # the object's colour appears nowhere outside its box (signs share one red: check within signs)
            assert xs.min() >= x1 and xs.max() <= x2 and ys.min() >= y1 and ys.max() <= y2, t.name
            if t.kind in ("car", "truck", "cube", "ball", "cup", "block", "bowl", "basket"):
                colour_box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
                iou = M.box_iou(colour_box, (x1, y1, x2 + 1, y2 + 1))
                assert iou >= 0.55, (
                    t.name,
                    iou,
                )  # body colour fills most of the box; the rest is outlines, wheels, windows, rims
        # boxes of separate objects never overlap (a thing inside a container may overlap that container)
        for i, a in enumerate(scene.things):
            for b in scene.things[i + 1 :]:
                if a.attrs.get("inside") == b.name or b.attrs.get("inside") == a.name:
                    continue
                assert (
                    M.box_iou(
                        (a.box[0], a.box[1], a.box[2] + 1, a.box[3] + 1),
                        (b.box[0], b.box[1], b.box[2] + 1, b.box[3] + 1),
                    )
                    == 0
                )
        if scene.domain == "embodied":
            fx1, fy1, fx2, fy2 = scene.facts["free_box"]
            assert np.all(
                px[fy1 : fy2 + 1, fx1 : fx2 + 1] == np.array(scene_parts.TABLE, np.uint8)
            )  # free space is bare table


def test_scene_questions_agree_with_ground_truth():
    for scene in _scenes("questions", 5):
        by_task = {q.task: q for q in scene.questions}
        assert set(by_task) == set(scene_parts.TASK_ORDER)
        mc = by_task["multiple_choice"]
        assert mc.choices[ord(mc.answer) - ord("A")] == mc.answer_text and len(set(mc.choices)) == len(mc.choices)
        for letter, choice in zip("ABCDEF", mc.choices):
            assert f"{letter}. {choice}" in mc.question
        box_q = by_task["box_grounding"]
        target = next(t for t in scene.things if t.name == box_q.target)
        assert box_q.answer == list(target.box) and target.name in box_q.question
        names = [t.name for t in scene.things]
        assert names.count(target.name) == 1  # the question is unambiguous
        point_q = by_task["point_grounding"]
        assert M.point_in_box(point_q.point, point_q.box)
        short = by_task["short_answer"].question
        if "How many vehicles" in short:
            assert by_task["short_answer"].answer == str(sum(t.kind in ("car", "truck") for t in scene.things))
        if "How many objects" in short:
            assert by_task["short_answer"].answer == str(sum(not t.attrs.get("container") for t in scene.things))
        if scene.domain == "driving":
            assert f"is {scene.facts['light']}." in by_task["open_ended"].answer


def test_synthetic_splits_are_disjoint_and_tasks_balanced():
    got = S.load_samples("driving,embodied")
    assert len(got) == 48
    calib, ev = SEL.split(got, "calib"), SEL.split(got, "eval")
    assert len(calib) + len(ev) == 48 and not ({s.image for s in calib} & {s.image for s in ev})
    tasks = Counter((s.domain, s.task) for s in got)
    assert len(tasks) == 10 and max(tasks.values()) - min(tasks.values()) <= 1
    for s in got:  # the shipped answers score full marks against themselves, and decode
        assert SC.score_reply(s, R.format_answer_for_teacher_forcing(s), think=False)["score"] == 1.0, s.id


# ---------------------------------------------------------------- loader errors


def _png(path: Path, size=(30, 17)) -> None:
    Image.new("RGB", size, (10, 200, 30)).save(path)


def _good(i: int, **kw) -> dict:
    r = {
        "id": f"s{i}",
        "domain": "driving",
        "task": "short_answer",
        "image": "ok.png",
        "question": "q?",
        "answer": "yes",
    }
    r.update(kw)
    return r


BAD_LINES = [
    ('{"id": "x", "domain": ', "bad JSON"),
    ("[1, 2]", "must be a JSON object"),
    (json.dumps({k: v for k, v in _good(1).items() if k != "question"}), "missing required field 'question'"),
    (json.dumps(_good(2, domain="kitchen")), "bad domain 'kitchen'"),
    (json.dumps(_good(3, task="captioning")), "bad task 'captioning'"),
    (
        json.dumps(_good(4, task="multiple_choice", choices="A or B", answer="A")),
        "'choices' must be a non-empty list of strings",
    ),
    (json.dumps(_good(5, task="box_grounding", box=[1, 2, 3])), "'box' must be 4 numbers"),
    (json.dumps(_good(6, task="box_grounding", box=[9, 2, 3, 4])), "corners must be top-left"),
    (json.dumps(_good(7, point=["a", 2])), "'point' must be 2 numbers"),
    (json.dumps(_good(8, image="nope.png")), "image file not found"),
    (json.dumps(_good(9, task="multiple_choice", choices=["x", "y"], answer="C")), "must be a letter A..B"),
    (json.dumps(_good(10, split="train")), "bad split 'train'"),
    (json.dumps({k: v for k, v in _good(11).items() if k != "answer"}), "missing required field 'answer'"),
    (json.dumps(_good(0)), "duplicate id 's0'"),
    (json.dumps(_good(12, task="point_grounding", answer="left")), "point_grounding needs"),
    (json.dumps(_good(13, images=["ok.png", "cam2.png"])), "images file not found"),
]


def test_each_malformed_line_kind_has_its_own_message(tmp_path):
    _png(tmp_path / "ok.png")
    lines = (
        [json.dumps(_good(0))]
        + [line for line, _ in BAD_LINES]
        + [json.dumps(_good(99, answer=None, task="calibration_only"))]
    )
    f = tmp_path / "mixed.jsonl"
    f.write_text("\n".join(lines) + "\n\n")
    got, errors = S.parse_jsonl(f)
    assert [s.id for s in got] == ["s0", "s99"]
    assert len(errors) == len(BAD_LINES)
    for k, ((_, expected), err) in enumerate(zip(BAD_LINES, errors)):
        assert err.startswith(f"{f}:{k + 2}: "), err
        assert expected in err, (expected, err)
        others = [e for j, (_, e) in enumerate(BAD_LINES) if j != k]
        assert not any(o in err for o in others if o not in expected), err  # each kind is told apart
    with pytest.raises(EdgekitError) as exc:
        S.load_samples(f)
    msg = exc.value.message
    assert (
        f"{len(BAD_LINES)} invalid sample line(s)" in msg and f"and {len(BAD_LINES) - S.MAX_LISTED_ERRORS} more" in msg
    )
    assert exc.value.exit_code == 2


def test_truncated_image_fails_on_decode_naming_the_file(tmp_path):
    _png(tmp_path / "ok.png", (64, 48))
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    f = tmp_path / "s.jsonl"
    f.write_text(json.dumps(_good(1, image="cut.png")) + "\n" + json.dumps(_good(2)) + "\n")
    cut, ok = S.load_samples(f)  # existence is checked at load; decoding waits
    assert ok.load_image().size == (64, 48)
    with pytest.raises(EdgekitError, match=r"s\.jsonl:1: .*cut\.png"):
        cut.load_image()


def test_unknown_spec_and_empty_directory(tmp_path):
    with pytest.raises(EdgekitError, match="not a built-in set"):
        S.load_samples(str(tmp_path / "missing.jsonl"))
    with pytest.raises(EdgekitError, match="no \\*.jsonl"):
        S.load_samples(tmp_path)


# ---------------------------------------------------------------- mixing and splits


def _fake(domain: str, task: str, i: int) -> S.Sample:
    return S.Sample(
        id=f"{domain}{task}{i}", domain=domain, task=task, image=Path(f"/x/{domain}_{i}.png"), question="q", answer="a"
    )


def test_mix_balances_domains_and_tasks():
    rng = _rng("mix")
    pool = [_fake("driving", rng.choice(["short_answer", "open_ended"]), i) for i in range(rng.randint(30, 41))]
    pool += [_fake("embodied", t, i) for i, t in enumerate(["multiple_choice"] * 7 + ["box_grounding"] * 4)]
    for n in (1, 7, 16, 22, 35, 100):
        got = SEL.mix(pool, n, seed=3)
        assert len(got) == min(n, len(pool)) and len({s.id for s in got}) == len(got)
        d = Counter(s.domain for s in got)
        assert abs(d["driving"] - d["embodied"]) <= 1 or d["embodied"] == 11  # embodied runs out at 11
        if n >= 8:
            e = Counter(s.task for s in got if s.domain == "embodied")
            assert abs(e["multiple_choice"] - e["box_grounding"]) <= 1 or e["box_grounding"] == 4
    assert SEL.mix(pool, 20, seed=3) == SEL.mix(pool, 20, seed=3)
    assert SEL.mix(pool, 20, seed=3) != SEL.mix(pool, 20, seed=4)


def test_hash_split_keeps_one_image_on_one_side():
    got = [_fake("driving", t, i % 9) for i, t in enumerate(["short_answer", "open_ended", "multiple_choice"] * 9)]
    calib, ev = SEL.split(got, "calib"), SEL.split(got, "eval")
    assert len(calib) + len(ev) == len(got) and calib and ev
    assert not ({s.image for s in calib} & {s.image for s in ev})


# ---------------------------------------------------------------- answers and scoring


def test_box_iou_matches_pixel_count():
    rng = _rng("iou")
    for _ in range(40):
        a = sorted(rng.sample(range(0, 37), 2)) + sorted(rng.sample(range(0, 29), 2))
        b = sorted(rng.sample(range(0, 37), 2)) + sorted(rng.sample(range(0, 29), 2))
        a, b = (a[0], a[2], a[1], a[3]), (b[0], b[2], b[1], b[3])
        ga, gb = np.zeros((29, 37), bool), np.zeros((29, 37), bool)
        ga[a[1] : a[3], a[0] : a[2]] = True
        gb[b[1] : b[3], b[0] : b[2]] = True
        assert M.box_iou(a, b) == pytest.approx((ga & gb).sum() / (ga | gb).sum(), abs=1e-12)


def test_polygon_interior_point_and_containment_match_rasterization():
    rng = _rng("poly")
    for _ in range(25):
        k = rng.randint(5, 11)  # a random star-shaped (often concave) polygon
        cx, cy = rng.uniform(40, 60), rng.uniform(30, 50)
        angles = sorted(rng.uniform(0, 6.283) for _ in range(k))
        poly = [(cx + rng.uniform(6, 30) * np.cos(t), cy + rng.uniform(6, 30) * np.sin(t)) for t in angles]
        img = Image.new("L", (101, 83), 0)
        ImageDraw.Draw(img).polygon(poly, fill=255)
        raster = np.asarray(img) > 0
        x, y = R.interior_point(poly)
        assert M.point_in_polygon((x, y), poly)
        for _ in range(60):
            px, py = rng.randrange(101), rng.randrange(83)
            patch = raster[max(0, py - 1) : py + 2, max(0, px - 1) : px + 2]
            if patch.all() or not patch.any():  # away from the edge, where rasterizers agree
                assert M.point_in_polygon((px, py), poly) == bool(raster[py, px])


def test_reference_answers_for_teacher_forcing():
    mc = S.Sample(
        id="m",
        domain="driving",
        task="multiple_choice",
        image=Path("/x.png"),
        question="q",
        answer="B",
        choices=("Slow down", "Keep driving", "Stop the car"),
        answer_text="Keep driving",
    )
    assert R.format_answer_for_teacher_forcing(mc) == "B. Keep driving"
    rng = _rng("box-format")
    x1, y1 = rng.randint(0, 200), rng.randint(0, 100)
    box = (x1, y1, x1 + rng.randint(20, 90), y1 + rng.randint(20, 90))
    bs = S.Sample(
        id="b", domain="driving", task="box_grounding", image=Path("/x.png"), question="q", answer=list(box), box=box
    )
    assert SC.parse_box(R.format_answer_for_teacher_forcing(bs)) == tuple(float(v) for v in box)
    ps = S.Sample(
        id="p",
        domain="embodied",
        task="point_grounding",
        image=Path("/x.png"),
        question="q",
        answer=[7, 8],
        point=(7, 8),
        box=(0, 0, 10, 10),
    )
    assert R.format_answer_for_teacher_forcing(ps) == '{"point_2d": [7, 8]}'
    assert SC.parse_points(R.format_answer_for_teacher_forcing(ps)) == [(7.0, 8.0)]


def test_point_only_reference_scores_by_distance(tmp_path):
    rng = _rng("point-distance")
    w, h = rng.randint(50, 90), rng.randint(30, 70)
    _png(tmp_path / "p.png", (w, h))
    px, py = rng.randint(10, w - 10), rng.randint(10, h - 10)
    f = tmp_path / "p.jsonl"
    f.write_text(json.dumps(_good(1, task="point_grounding", answer=[px, py], image="p.png")) + "\n")
    (s,) = S.load_samples(f)
    radius = 0.05 * (w * w + h * h) ** 0.5
    near, far = (px + 0.9 * radius, py), (px, py + 1.1 * radius)
    assert SC.point_score(s, [near, far]) == 0.5
    assert R.format_answer_for_teacher_forcing(s) == json.dumps({"point_2d": [px, py]})


# ---------------------------------------------------------------- CLI


def test_cli_make_and_check(tmp_path, capsys):
    from edgekit.cli import main

    n = _rng("cli").randint(3, 6)
    assert main(["samples", "make", str(tmp_path / "set"), "--n", str(n), "--seed", "11"]) == 0
    assert len(S.load_samples(tmp_path / "set")) == 2 * n
    capsys.readouterr()
    assert main(["samples", "check", str(tmp_path / "set")]) == 0
    out = capsys.readouterr().out
    assert f"{2 * n} valid samples" in out and "embodied" in out and "multiple_choice" in out
    bad = tmp_path / "set" / "bad.jsonl"
    bad.write_text(
        json.dumps(
            {
                "id": "z",
                "domain": "space",
                "task": "open_ended",
                "image": "driving_11_000.png",
                "question": "q",
                "answer": "a",
            }
        )
        + "\n"
    )
    assert main(["samples", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.jsonl:1" in err and "bad domain 'space'" in err
