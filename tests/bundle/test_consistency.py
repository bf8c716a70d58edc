"""One number, one source: what the build was asked for reaches every artifact that depends on it, and the plan's
numbers are the bundle's (each test here fails on the code before formats had one vocabulary)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import require, seed_for
from edgekit.bundle.build import BuildConfig, build_bundle
from edgekit.model.checkpoint import open_checkpoint
from edgekit.targets.sizes import part_of
from edgekit.model.processor import ImageProcessorConfig, preprocess_image
from edgekit.targets import get_target
from edgekit.targets.plan import make_plan, vision_tokens

gguf = require("gguf")


def _shapes(ckpt):
    ck = open_checkpoint(ckpt)
    return ck, {n: i.shape for n, i in ck.tensors.items()}


def test_vision_precision_override_reaches_build_engines_script(tiny_ckpt, tmp_path):
    out = build_bundle(
        tiny_ckpt,
        tmp_path / "b",
        BuildConfig(target="orin-agx-64", backend="gguf", precision="int4", method="rtn", vision_precision="fp32"),
    )
    manifest = json.loads((out / "edgekit.json").read_text())
    script = (out / "build-engines.sh").read_text()
    assert manifest["parts"]["vision"]["precision"] == manifest["plan"]["vision_precision"] == "fp32"
    assert "edgekit's static-shape ONNX (fp32)" in script and "--int8" not in script
    from edgekit.bundle.engines_script import engines_script

    ck, shapes = _shapes(tiny_ckpt)
    target = get_target("orin-agx-64")
    int8 = make_plan(ck.text, ck.vision, shapes, target, "int4", vision_precision="int8")
    assert int8.vision_precision == "int8"
    assert "--fp16 --int8" in engines_script(
        target, "gguf", BuildConfig(target="orin-agx-64", vision_precision="int8"), int8
    )


def test_group_size_reaches_the_plan_and_the_plan_counts_the_unified_files(tiny_ckpt, tmp_path):
    from safetensors import safe_open

    ck, shapes = _shapes(tiny_ckpt)
    target = get_target("orin-agx-64")
    g32, g128 = (make_plan(ck.text, ck.vision, shapes, target, "int4", group_size=g) for g in (32, 128))
    assert g32.weights_gb["decoder"] > g128.weights_gb["decoder"]
    out = build_bundle(
        tiny_ckpt, tmp_path / "b", BuildConfig(target="orin-agx-64", precision="int4", method="rtn", group_size=32)
    )
    manifest = json.loads((out / "edgekit.json").read_text())
    assert manifest["parts"]["decoder"]["group_size"] == 32
    assert manifest["plan"]["weights_gb"]["decoder"] == pytest.approx(g32.weights_gb["decoder"], rel=1e-12)
    stored = 0
    for f in sorted((out / "decoder" / "unified").glob("*.safetensors")):
        with safe_open(str(f), framework="pt") as h:
            for name in h.keys():
                if part_of(name) == "decoder":
                    t = h.get_slice(name)
                    stored += (
                        int(np.prod(t.get_shape())) * {"U8": 1, "I8": 1, "F32": 4, "BF16": 2, "F16": 2}[t.get_dtype()]
                    )
    assert stored == round(g32.weights_gb["decoder"] * 1e9)


def test_plan_counts_the_gguf_files_bytes(tiny_ckpt, tmp_path):
    out = build_bundle(tiny_ckpt, tmp_path / "b", BuildConfig(target="cpu", precision="int4", method="rtn"))
    plan = json.loads((out / "edgekit.json").read_text())["plan"]["weights_gb"]
    tensors = gguf.GGUFReader(str(out / "decoder" / "decoder.gguf")).tensors
    stored = sum(int(t.n_bytes) for t in tensors)
    assert stored == round((plan["decoder"] + plan["embeddings"] + plan["lm_head"]) * 1e9)


@pytest.mark.parametrize("limits", [(3136, 1003520), (50_000, 120_000), (200_000, 400_000)])
def test_plan_visual_tokens_equal_the_processors_for_odd_sizes(tiny_ckpt, limits, test_seed):
    """One smart_resize: the plan's visual tokens per image are the processor's, min/max pixels included."""
    ck = open_checkpoint(tiny_ckpt)
    v = ck.vision
    cfg = ImageProcessorConfig(
        patch_size=v.patch,
        merge_size=v.merge,
        temporal_patch_size=v.temporal_patch,
        min_pixels=limits[0],
        max_pixels=limits[1],
    )
    rng = np.random.default_rng(seed_for(f"visual-tokens:{limits}"))
    sizes = [(int(w), int(h)) for w, h in rng.integers(29, 1400, size=(6, 2))] + [(1021, 37), (33, 29), (1399, 1397)]
    for w, h in sizes:
        if max(w, h) / min(w, h) > 200:
            continue
        _, grid = preprocess_image(Image.new("RGB", (w, h)), cfg)
        t, gh, gw = (int(x) for x in grid)
        want = t * gh * gw // (v.merge * v.merge)
        assert vision_tokens(v, (w, h), cfg)[1] == want, (w, h, limits, f"seed {test_seed}")
    target = get_target("cpu")
    plan = make_plan(
        ck.text,
        ck.vision,
        {n: i.shape for n, i in ck.tensors.items()},
        target,
        "int4",
        resolution=(1399, 1397),
        processor=cfg,
    )
    _, grid = preprocess_image(Image.new("RGB", (1399, 1397)), cfg)
    assert plan.visual_tokens_per_image == int(np.prod(grid)) // (v.merge * v.merge)


def test_int4_build_is_calibrated_by_default_and_a_rebuild_reuses_the_calibration(tiny_ckpt, tmp_path):
    cache = tmp_path / "calib-cache"
    first = build_bundle(tiny_ckpt, tmp_path / "a", BuildConfig(target="cpu", precision="int4"), calib_cache=cache)
    manifest = json.loads((first / "edgekit.json").read_text())
    assert manifest["build"]["method"] == manifest["parts"]["decoder"]["method"] == "gptq"
    assert manifest["calibration"]["config"]["method"] == "gptq"
    entries = sorted(p for p in cache.iterdir() if p.is_dir())
    assert len(entries) == 1 and not (entries[0] / "hidden.safetensors").exists()  # a finished entry: codes only
    stamps = {p.name: p.stat().st_mtime_ns for p in entries[0].glob("layer_*.safetensors")}
    second = build_bundle(
        tiny_ckpt, tmp_path / "b", BuildConfig(target="cpu", precision="int4", method="gptq"), calib_cache=cache
    )
    assert {p.name: p.stat().st_mtime_ns for p in entries[0].glob("layer_*.safetensors")} == stamps  # not recomputed
    assert (first / "decoder" / "decoder.gguf").read_bytes() == (second / "decoder" / "decoder.gguf").read_bytes()
    rtn = build_bundle(
        tiny_ckpt, tmp_path / "c", BuildConfig(target="cpu", precision="int4", method="rtn"), calib_cache=cache
    )
    assert (rtn / "decoder" / "decoder.gguf").read_bytes() != (first / "decoder" / "decoder.gguf").read_bytes()
    assert json.loads((rtn / "edgekit.json").read_text())["calibration"] is None
