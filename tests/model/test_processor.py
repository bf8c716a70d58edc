"""edgekit.model.processor against transformers' Qwen2-VL image processor (bit-for-bit).

The oracle is what AutoImageProcessor loads from the checkpoint on this host: without torchvision
that is `Qwen2VLImageProcessorPil` (Pillow resize, numpy maths), the class checked below.
"""

import json
import math

import numpy as np
import pytest
from PIL import Image

from edgekit.errors import EdgekitError
from edgekit.model.processor import (
    ImageProcessorConfig,
    load_processor_config,
    patchify,
    preprocess_image,
    preprocess_images,
    processor_config_from_dict,
    smart_resize,
)

SIZES = [(1024, 484), (56, 56), (333, 517), (517, 333), (97, 29), (1920, 1080), (13, 211)]  # (width, height)
MODES = ["RGB", "RGBA", "L", "LA", "P_transparent", "CMYK"]


@pytest.fixture(scope="module")
def ckpt(tiny_ckpt):
    return tiny_ckpt


@pytest.fixture(scope="module")
def hf_processor(ckpt):
    from transformers import AutoImageProcessor

    return AutoImageProcessor.from_pretrained(str(ckpt))


def hf_default_processor(**kw):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    return Qwen2VLImageProcessorPil(**kw)


def random_image(rng, width, height, mode):
    rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    rgba[..., 3] = np.where(rng.random((height, width)) < 0.3, 255, rgba[..., 3])  # some opaque pixels
    im = Image.fromarray(rgba, "RGBA")
    if mode == "P_transparent":
        im = im.convert("RGB").convert("P")
        im.info["transparency"] = int(rng.integers(0, 256))
        return im
    return im.convert(mode)


def hf_run(proc, images, **kw):
    out = proc(images=images, return_tensors="np", **kw)
    return out["pixel_values"], out["image_grid_thw"]


def test_oracle_is_the_pillow_path(hf_processor):
    assert type(hf_processor).__name__ == "Qwen2VLImageProcessorPil"


@pytest.mark.parametrize("width,height", SIZES)
def test_single_image_bit_exact(ckpt, hf_processor, width, height):
    rng = np.random.default_rng(1000 + width * 7 + height)
    cfg = load_processor_config(ckpt)
    for mode in MODES:
        im = random_image(rng, width, height, mode)
        patches, grid = preprocess_image(im, cfg)
        ref, ref_grid = hf_run(hf_processor, [im])
        assert grid == tuple(ref_grid[0].tolist()), mode
        assert patches.dtype == np.float32 and patches.shape == ref.shape, mode
        assert np.array_equal(patches, ref), (mode, float(np.abs(patches - ref).max()))


@pytest.mark.parametrize("width,height", [(1024, 484), (2000, 1500), (333, 517), (4000, 30)])
def test_default_limits_and_large_images(width, height):
    """HF defaults (max 1280 tokens), where big images are scaled down rather than up."""
    rng = np.random.default_rng(width + height)
    im = random_image(rng, width, height, "RGB")
    patches, grid = preprocess_image(im, ImageProcessorConfig())
    ref, ref_grid = hf_run(hf_default_processor(), [im])
    assert grid == tuple(ref_grid[0].tolist())
    assert np.array_equal(patches, ref)


def test_several_images_concatenate(ckpt, hf_processor):
    rng = np.random.default_rng(7)
    cfg = load_processor_config(ckpt)
    images = [random_image(rng, w, h, m) for (w, h), m in zip(SIZES[:5], MODES)]
    patches, grid = preprocess_images(images, cfg)
    ref, ref_grid = hf_run(hf_processor, images)
    assert grid.dtype == np.int64 and np.array_equal(grid, ref_grid)
    assert np.array_equal(patches, ref)
    assert patches.shape[0] == int(grid.prod(axis=1).sum())


@pytest.mark.parametrize("channels", [3, 4])
def test_numpy_input_matches_hf(hf_processor, ckpt, channels):
    rng = np.random.default_rng(30 + channels)
    arr = rng.integers(0, 256, (171, 257, channels), dtype=np.uint8)
    patches, grid = preprocess_image(arr, load_processor_config(ckpt))
    ref, ref_grid = hf_run(hf_processor, [arr])
    assert grid == tuple(ref_grid[0].tolist())
    assert np.array_equal(patches, ref)


def test_greyscale_array_equals_greyscale_image(ckpt):
    rng = np.random.default_rng(5)
    grey = rng.integers(0, 256, (83, 141), dtype=np.uint8)
    cfg = load_processor_config(ckpt)
    a, ga = preprocess_image(grey, cfg)
    b, gb = preprocess_image(Image.fromarray(grey, "L"), cfg)
    assert ga == gb and np.array_equal(a, b)


@pytest.mark.parametrize("resize_to", [(224, 224), (336, 504), (56, 840)])
def test_fixed_resolution_equals_hf_on_pre_resized_image(ckpt, hf_processor, resize_to):
    """resize_to = Pillow bicubic to (h, w), then HF's steps without its own resize."""
    rng = np.random.default_rng(sum(resize_to))
    cfg = load_processor_config(ckpt)
    for width, height in [(1024, 484), (333, 517), (56, 56)]:
        im = random_image(rng, width, height, "RGBA")
        patches, grid = preprocess_image(im, cfg, resize_to=resize_to)
        h, w = resize_to
        assert grid == (1, h // 14, w // 14)
        pre = im.convert("RGBA")
        pre = Image.alpha_composite(Image.new("RGBA", pre.size, (255, 255, 255, 255)), pre).convert("RGB")
        ref, _ = hf_run(hf_processor, [pre.resize((w, h), Image.Resampling.BICUBIC)], do_resize=False)
        assert np.array_equal(patches, ref)


def test_fixed_resolution_at_smart_size_equals_dynamic(ckpt):
    rng = np.random.default_rng(11)
    cfg = load_processor_config(ckpt)
    im = random_image(rng, 517, 333, "RGB")
    dyn, grid = preprocess_image(im, cfg)
    fixed, grid2 = preprocess_image(im, cfg, resize_to=(grid[1] * 14, grid[2] * 14))
    assert grid == grid2 and np.array_equal(dyn, fixed)


@pytest.mark.parametrize("bad", [(100, 224), (224, 0), (-28, 56)])
def test_fixed_resolution_rejects_sizes_off_the_grid(bad):
    im = Image.new("RGB", (64, 64))
    with pytest.raises(EdgekitError, match="multiples of patch_size\\*merge_size = 28"):
        preprocess_image(im, ImageProcessorConfig(), resize_to=bad)


def test_smart_resize_matches_hf_on_random_sizes():
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize as hf_smart_resize

    rng = np.random.default_rng(3)
    for _ in range(3000):
        height, width = (int(v) for v in rng.integers(1, 5000, 2))
        if max(height, width) / min(height, width) > 200:
            continue
        factor = int(rng.choice([28, 32, 16, 56]))
        lo = int(rng.integers(1, 200_000))
        hi = lo + int(rng.integers(0, 3_000_000))
        assert smart_resize(height, width, factor, lo, hi) == hf_smart_resize(height, width, factor, lo, hi)


def test_smart_resize_bounds_and_aspect_limit():
    h, w = smart_resize(484, 1024, 28, 3136, 1003520)
    assert (h % 28, w % 28) == (0, 0) and 3136 <= h * w <= 1003520
    assert smart_resize(56, 56, 28, 3136, 1003520) == (56, 56)
    with pytest.raises(EdgekitError, match="aspect ratio"):
        smart_resize(10, 2500, 28, 3136, 1003520)


def test_patchify_rows_are_merge_windows():
    """Independent check of the layout: row r of token k is patch (2*wy + dy, 2*wx + dx)."""
    rng = np.random.default_rng(9)
    c, p, m, t = 3, 14, 2, 2
    gh, gw = 6, 10
    img = rng.standard_normal((c, gh * p, gw * p)).astype(np.float32)
    rows, h, w = patchify(img, p, m, t)
    assert (h, w) == (gh, gw) and rows.shape == (gh * gw, c * t * p * p)
    r = 0
    for wy in range(gh // m):
        for wx in range(gw // m):
            for dy in range(m):
                for dx in range(m):
                    y, x = (wy * m + dy) * p, (wx * m + dx) * p
                    patch = img[:, y : y + p, x : x + p]  # [C, P, P]
                    expect = np.broadcast_to(patch[:, None], (c, t, p, p)).reshape(-1)
                    assert np.array_equal(rows[r], expect)
                    r += 1


def test_config_reads_both_key_styles(tmp_path, ckpt):
    flat = json.loads((ckpt / "preprocessor_config.json").read_text())
    nested = {k: v for k, v in flat.items() if k not in ("min_pixels", "max_pixels")}
    nested["size"] = {"shortest_edge": 5000, "longest_edge": 200_704}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(nested))
    cfg = load_processor_config(tmp_path)
    assert (cfg.min_pixels, cfg.max_pixels) == (5000, 200_704)

    from transformers import AutoImageProcessor

    hf = AutoImageProcessor.from_pretrained(str(tmp_path))
    im = random_image(np.random.default_rng(2), 1024, 484, "RGB")
    patches, grid = preprocess_image(im, cfg)
    ref, ref_grid = hf_run(hf, [im])
    assert grid == tuple(ref_grid[0].tolist()) and np.array_equal(patches, ref)

    # top-level min/max_pixels win over "size", as in HF's constructor
    both = dict(nested, max_pixels=100_352)
    assert processor_config_from_dict(both).max_pixels == 100_352


def test_config_errors_name_file_and_field(tmp_path):
    with pytest.raises(EdgekitError, match="preprocessor_config.json: not found"):
        load_processor_config(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_mean": [0.5, 0.5]}))
    with pytest.raises(EdgekitError, match="preprocessor_config.json: field 'image_mean'"):
        load_processor_config(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"min_pixels": 9000, "max_pixels": 4000}))
    with pytest.raises(EdgekitError, match="min_pixels 9000 exceeds max_pixels 4000"):
        load_processor_config(tmp_path)
    (tmp_path / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(EdgekitError, match="not valid JSON"):
        load_processor_config(tmp_path)


def test_bad_inputs_raise_edgekit_errors():
    cfg = ImageProcessorConfig()
    with pytest.raises(EdgekitError, match="uint8"):
        preprocess_image(np.zeros((30, 30, 3), np.float32), cfg)
    with pytest.raises(EdgekitError, match="shape"):
        preprocess_image(np.zeros((30, 30, 2), np.uint8), cfg)
    with pytest.raises(EdgekitError, match="no images"):
        preprocess_images([], cfg)


def test_token_count_formula(ckpt):
    """N patches = t*h*w and the LM sees N / merge^2 tokens; the image keeps its aspect within a factor."""
    cfg = load_processor_config(ckpt)
    for width, height in SIZES:
        _, (t, gh, gw) = preprocess_image(Image.new("RGB", (width, height)), cfg)
        assert t == 1 and gh % cfg.merge_size == 0 and gw % cfg.merge_size == 0
        assert cfg.min_pixels <= gh * gw * 14 * 14 <= cfg.max_pixels
        if min(width, height) >= 112:
            assert math.isclose(gw / gh, width / height, rel_tol=0.25)


def test_real_sample_images_bit_exact(shared_samples):
    """Real driving / embodied JPEGs (a 6-camera frame included), decoded once and fed to both."""
    from edgekit.data.images import load_image

    rows = []
    for name in ("driving", "embodied"):
        rows += [json.loads(line) for line in (shared_samples / f"{name}.jsonl").read_text().splitlines() if line]
    rng = np.random.default_rng(2026)
    picked = [rows[i] for i in rng.choice(len(rows), 4, replace=False)]
    multi = next(r for r in rows if len(r.get("images", [])) >= 6)
    groups = [[r["image"]] for r in picked] + [multi["images"]]
    hf = hf_default_processor()
    for paths in groups:
        images = [load_image(shared_samples / p) for p in paths]
        patches, grid = preprocess_images(images, ImageProcessorConfig())
        ref, ref_grid = hf_run(hf, images)
        assert np.array_equal(grid, ref_grid), paths
        assert np.array_equal(patches, ref), paths
