"""What each variant is shown (edgekit/bench/harness.py frame_images) and which samples a run answers
(edgekit/bench/sample_set.py): camera choice, resize to the variant's size, bad lines and unreadable images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekit.bench.harness import frame_images
from edgekit.bench.sample_set import select_samples
from edgekit.bench.variants import InputSpec
from edgekit.data.samples import Sample
from edgekit.errors import EdgekitError
from edgekit.model.processor import ImageProcessorConfig, smart_resize


def _cameras(tmp_path: Path, sizes) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i, (w, h) in enumerate(sizes):
        p = tmp_path / f"cam{i}.png"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def test_all_cameras_when_the_graph_takes_that_many_else_the_front_one(tmp_path):
    cams = _cameras(tmp_path, [(160, 90), (97, 61), (333, 517)])
    s = Sample(id="f", domain="driving", task="open_ended", image=cams[0], question="q", answer="a", images=tuple(cams))
    cfg = ImageProcessorConfig()
    images, used = frame_images(s, InputSpec((112, 56), 3), cfg)
    assert used == "all" and [im.size for im in images] == [(112, 56)] * 3
    front = Image.open(cams[0]).convert("RGB").resize((112, 56), resample=cfg.resample)
    assert np.array_equal(np.asarray(images[0]), np.asarray(front))  # the processor's filter, from the original
    images, used = frame_images(s, InputSpec((112, 56), 1), cfg)
    assert used == "front" and len(images) == 1 and np.array_equal(np.asarray(images[0]), np.asarray(front))
    images, used = frame_images(s, InputSpec(None, 6), cfg)  # no bundle fixes a size: the processor's own resize
    h, w = smart_resize(90, 160, cfg.factor, cfg.min_pixels, cfg.max_pixels)
    assert used == "front" and images[0].size == (w, h)


def _line(i: int, image: str, **extra) -> str:
    return json.dumps(
        {
            "id": f"s{i}",
            "domain": "embodied",
            "task": "short_answer",
            "image": image,
            "question": "q",
            "answer": "yes",
            "split": "eval",
            **extra,
        }
    )


def test_bad_lines_and_unreadable_images_stop_the_run_or_are_skipped(tmp_path):
    _cameras(tmp_path, [(40, 30)])
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    f = tmp_path / "s.jsonl"
    f.write_text("\n".join([_line(0, "cam0.png"), "{not json", _line(2, "broken.png"), _line(3, "cam0.png")]) + "\n")
    with pytest.raises(EdgekitError) as e:
        select_samples(str(f), split_name="eval", n=None, seed=0, skip_bad=False)
    assert f"{f}:2: bad JSON" in e.value.message and f"{f}:3:" in e.value.message and "--skip-bad" in e.value.message
    got = select_samples(str(f), split_name="eval", n=None, seed=0, skip_bad=True)
    assert sorted(s.id for s in got.samples) == ["s0", "s3"] and len(got.skipped) == 2
    with pytest.raises(EdgekitError, match="no sample with a reference answer"):
        select_samples(str(f), split_name="calib", n=None, seed=0, skip_bad=True)
