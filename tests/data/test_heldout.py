"""The held-out set is unlike every calibration source: no shared image, no shared phrasing."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
from PIL import Image

from edgekit.data.calibration_mix import load_passages, real_samples_files
from edgekit.data.heldout import load_heldout
from edgekit.data.reference_answers import format_answer_for_teacher_forcing
from edgekit.data.samples import BUILTIN_SETS, load_samples
from edgekit.errors import EdgekitError

SHINGLE = 5  # words: a shared 5-word run is a shared template or phrase


def _shingles(text: str) -> set[tuple[str, ...]]:
    w = re.findall(r"[a-z0-9']+", text.lower())
    return {tuple(w[i : i + SHINGLE]) for i in range(len(w) - SHINGLE + 1)}


def _calibration_samples(shared_samples) -> list:
    # every real sample counts, eval split included: the held-out set must be unlike the whole real set
    return load_samples([*BUILTIN_SETS] + [str(shared_samples / f) for f in ("driving.jsonl", "embodied.jsonl")])


def _thumb(path) -> np.ndarray:
    im = Image.open(path)
    im.draft("L", (64, 64))  # JPEG: decode at reduced scale
    return np.asarray(im.convert("L").resize((16, 16), Image.BILINEAR), np.float32)


def test_heldout_set_has_both_domains_text_only_and_image_items():
    items = load_heldout()
    assert {it.domain for it in items} == {"driving", "embodied"}
    assert sum(it.image is None for it in items) >= 8 and sum(it.image is not None for it in items) >= 8
    assert len({it.id for it in items}) == len(items)
    sizes = {Image.open(it.image).size for it in items if it.image}
    assert all(w % 28 or h % 28 for w, h in sizes)  # odd sizes: the grid is not a resize of a calibration size


def test_heldout_shares_no_phrase_with_any_calibration_source(shared_samples):
    calibration: set = set()
    for s in _calibration_samples(shared_samples):
        calibration |= _shingles(s.question) | _shingles(format_answer_for_teacher_forcing(s))
    for p in load_passages():
        calibration |= _shingles(p.text)
    assert len(calibration) > 5000  # the sources were read
    for it in load_heldout():
        shared = (_shingles(it.prompt) | _shingles(it.continuation)) & calibration
        assert not shared, f"{it.id} shares {sorted(shared)[:3]} with the calibration sources"


def test_heldout_shares_no_image_with_any_calibration_source(shared_samples):
    held = {it.image: _thumb(it.image) for it in load_heldout() if it.image}
    held_bytes = {hashlib.sha256(np.asarray(Image.open(p).convert("RGB")).tobytes()).digest() for p in held}
    paths = {p for s in _calibration_samples(shared_samples) for p in (s.images or (s.image,))}
    assert len(paths) > 100
    closest = np.inf
    for p in sorted(paths):
        t = _thumb(p)
        closest = min(closest, min(float(np.abs(t - h).mean()) for h in held.values()))
        if p.suffix == ".png":
            assert hashlib.sha256(np.asarray(Image.open(p).convert("RGB")).tobytes()).digest() not in held_bytes
    assert closest > 4.0, f"a calibration image is a near-copy of a held-out one (mean |Δ| {closest:.1f} / 255)"


def test_default_calibration_reads_the_real_split_when_present(shared_samples, monkeypatch):
    monkeypatch.delenv("EDGEKIT_REAL_SAMPLES", raising=False)
    files = real_samples_files()
    assert [f.name for f in files] == ["driving.jsonl", "embodied.jsonl"] and files[0].parent.samefile(shared_samples)
    monkeypatch.setenv("EDGEKIT_REAL_SAMPLES", "off")
    assert real_samples_files() == []


def test_malformed_heldout_line_names_file_and_line(tmp_path):
    f = tmp_path / "h.jsonl"
    good = {"id": "a", "domain": "driving", "style": "s", "prompt": "p", "continuation": "c"}
    f.write_text(
        json.dumps(good)
        + "\n"
        + json.dumps({**good, "prompt": ""})
        + "\n{not json\n"
        + json.dumps({**good, "image": "missing.png"})
        + "\n"
    )
    with pytest.raises(EdgekitError) as e:
        load_heldout(f)
    msg = str(e.value)
    assert (
        f"{f}:2: missing or empty prompt" in msg and f"{f}:3:" in msg and f"{f}:4: image missing.png not found" in msg
    )
