"""The vision tower at the model's real size, with CI-sized stand-ins (issue 28): a graph over the external-data
threshold (lowered here; MiMo-Embodied's FP32 tower is 2.7 GB, over protobuf's 2 GB) is written as exactly one
`.data` file beside it, verified, hashed and sealed like any artifact, and run by ONNX Runtime from the verified
descriptor; the FP16 overflow guard keeps a block with activations beyond FP16 in FP32 and leaves a tower without
them all FP16; the `full` preset has MiMo-Embodied-7B's exact dimensions."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from conftest import require

require("onnxruntime")

from edgekit.model.checkpoint import open_checkpoint  # noqa: E402
from edgekit.runtime.onnx_vision import OnnxVision  # noqa: E402

ASSET = "edgekit/data/assets/driving_0_001.png"


def _cos(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


@pytest.fixture(scope="module")
def external_bundle(tiny_ckpt, tmp_path_factory):
    """A CPU bundle whose FP32 vision graph is over a lowered threshold: its weights in vision/vision.onnx.data."""
    import edgekit.export.onnx_files as onnx_files
    from edgekit.bundle.build import BuildConfig, build_bundle

    saved, onnx_files.EXTERNAL_DATA_BYTES = onnx_files.EXTERNAL_DATA_BYTES, 1 << 20
    try:
        return build_bundle(
            tiny_ckpt,
            tmp_path_factory.mktemp("ext") / "b",
            BuildConfig(target="cpu", precision="int4", method="rtn", resolution=(224, 336)),
        )
    finally:
        onnx_files.EXTERNAL_DATA_BYTES = saved


def test_graph_over_the_threshold_has_one_data_file_and_runs_from_the_verified_bytes(
    external_bundle, tiny_ckpt, test_seed
):
    from edgekit.bundle.manifest import verify_bundle
    from edgekit.export.vision_static import build_static_tower, plan_for_resolution
    from edgekit.runtime.bundle_pipeline import open_bundle

    files = sorted(p.name for p in (external_bundle / "vision").iterdir())
    assert files == ["vision.onnx", "vision.onnx.data"], files  # no loose per-tensor files
    m = json.loads((external_bundle / "edgekit.json").read_text())
    assert m["parts"]["vision"]["external_data"] == "vision/vision.onnx.data"
    assert "vision/vision.onnx.data" in m["artifacts"]
    assert (
        (external_bundle / "vision/vision.onnx").stat().st_size
        < (1 << 20)
        < m["artifacts"]["vision/vision.onnx.data"]["size"]
    )
    report = verify_bundle(external_bundle)
    assert report.ok, report.errors
    assert any("weights in vision/vision.onnx.data" in c for c in report.checked)

    pipe = open_bundle(external_bundle, n_threads=2)
    try:
        info = pipe.vision.info
        ck = open_checkpoint(tiny_ckpt)
        plan, _ = plan_for_resolution(ck, info.width, info.height, 1)
        x = np.random.default_rng(test_seed).standard_normal((info.patches, info.patch_dim), dtype=np.float32)
        with torch.no_grad():
            ref = build_static_tower(ck, plan)(torch.from_numpy(x)).numpy()
        got = pipe.vision.session.run(None, {"patches": x})[0]
        assert _cos(got, ref).min() >= 0.9999
        assert pipe.answer("What is ahead?", [ASSET], max_new_tokens=4).token_ids
    finally:
        pipe.close()


def test_a_flipped_byte_in_the_data_file_fails_verify(external_bundle, tmp_path, test_seed):
    from edgekit.bundle.manifest import verify_bundle

    copy = shutil.copytree(external_bundle, tmp_path / "b")
    data = copy / "vision/vision.onnx.data"
    blob = bytearray(data.read_bytes())
    blob[np.random.default_rng(test_seed).integers(len(blob))] ^= 0x08
    data.write_bytes(bytes(blob))
    report = verify_bundle(copy)
    assert not report.ok and "vision/vision.onnx.data: sha256 differs" in report.errors[0]
    data.unlink()
    assert "vision/vision.onnx.data: listed in the manifest but missing" in verify_bundle(copy).errors[0]


def test_a_graph_cannot_point_its_weights_elsewhere(external_bundle):
    """A graph whose external reference names another file, or bytes past the end, is refused before loading."""
    import onnx

    from edgekit.errors import EdgekitError
    from edgekit.export.onnx_files import check_external_refs

    graph = onnx.load(str(external_bundle / "vision/vision.onnx"), load_external_data=False)
    size = (external_bundle / "vision/vision.onnx.data").stat().st_size
    check_external_refs(graph, "vision.onnx", size)
    with pytest.raises(EdgekitError, match="outside"):
        check_external_refs(graph, "vision.onnx", size - 1)
    t = next(t for t in graph.graph.initializer if t.external_data)
    next(e for e in t.external_data if e.key == "location").value = "../../etc/passwd"
    with pytest.raises(EdgekitError, match="refers to"):
        check_external_refs(graph, "vision.onnx", size)


@pytest.fixture(scope="module")
def planted_ckpt(tmp_path_factory):
    from edgekit.model.fixtures import make_tiny

    return make_tiny(tmp_path_factory.mktemp("planted") / "ck", "tiny", 0, plant_vision_peak=1)


def test_fp16_guard_keeps_the_planted_block_in_fp32(planted_ckpt, tmp_path, test_seed):
    """A block whose output reaches 1e5 (beyond FP16): the guard keeps it and the blocks its stream feeds in FP32,
    the graph stays finite and close to FP32; the same export without the guard overflows."""
    from edgekit.export.vision_onnx import export_float, fp16_guard
    from edgekit.model.vision_graph import read_fp32_blocks

    ck = open_checkpoint(planted_ckpt)
    guard = fp16_guard(ck, 224, 224, 1, [ASSET])
    assert guard["fp32_blocks"] == [1, 2, 3] and guard["block_peaks"][1] > 65504
    export_float(ck, 224, 224, 1, "fp32", tmp_path / "fp32.onnx")
    export_float(ck, 224, 224, 1, "fp16", tmp_path / "guarded.onnx", guard["fp32_blocks"])
    export_float(ck, 224, 224, 1, "fp16", tmp_path / "plain.onnx")
    assert read_fp32_blocks(tmp_path / "guarded.onnx") == [1, 2, 3]
    x = np.random.default_rng(test_seed).standard_normal((256, ck.vision.patch_dim), dtype=np.float32)
    ref = OnnxVision(tmp_path / "fp32.onnx").session.run(None, {"patches": x})[0]
    guarded = OnnxVision(tmp_path / "guarded.onnx").session.run(None, {"patches": x})[0]
    plain = OnnxVision(tmp_path / "plain.onnx").session.run(None, {"patches": x})[0]
    assert np.isfinite(guarded).all() and _cos(guarded, ref).min() >= 0.999
    assert not np.isfinite(plain).all(), "without the guard the FP16 graph should overflow on this tower"


def test_fp16_guard_leaves_an_ordinary_tower_all_fp16(tiny_ckpt, tmp_path):
    """An FP16 bundle of a tower without such activations: no block kept, and the manifest says so."""
    from edgekit.bundle.build import BuildConfig, build_bundle

    b = build_bundle(
        tiny_ckpt,
        tmp_path / "b",
        BuildConfig(target="cpu", precision="int4", method="rtn", vision_precision="fp16", resolution=(224, 224)),
    )
    assert json.loads((b / "edgekit.json").read_text())["parts"]["vision"]["fp32_blocks"] == []


def test_fp16_bundle_of_the_planted_tower_records_its_fp32_blocks(planted_ckpt, tmp_path):
    from edgekit.bundle.build import BuildConfig, build_bundle
    from edgekit.bundle.manifest import verify_bundle

    b = build_bundle(
        planted_ckpt,
        tmp_path / "b",
        BuildConfig(target="cpu", precision="int4", method="rtn", vision_precision="fp16", resolution=(224, 224)),
    )
    assert json.loads((b / "edgekit.json").read_text())["parts"]["vision"]["fp32_blocks"] == [1, 2, 3]
    assert verify_bundle(b).ok


def test_full_preset_has_mimo_embodied_7b_dimensions():
    """The benchmark preset (never written in CI: 16.6 GB): exact dims and 8.3 B parameters, from its config alone."""
    from edgekit.model.checkpoint import expected_shapes
    from edgekit.model.config import read_text_dims, read_vision_dims
    from edgekit.model.fixtures import PRESETS, build_config

    p = PRESETS["full"]
    names = [
        "<|endoftext|>",
        "<|im_end|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|vision_pad|>",
        "<|image_pad|>",
        "<|video_pad|>",
    ]
    cfg = build_config(p, {n: 151_000 + i for i, n in enumerate(names)}, p.vocab_size)
    t, v = read_text_dims(cfg), read_vision_dims(cfg)
    assert (t.num_layers, t.hidden, t.heads, t.kv_heads, t.head_dim, t.intermediate, t.vocab) == (
        36,
        4096,
        32,
        8,
        128,
        11008,
        151_680,
    )
    assert (v.depth, v.hidden, v.heads, v.head_dim, v.intermediate, v.fullatt_blocks, v.out_hidden) == (
        32,
        1280,
        16,
        80,
        3420,
        (7, 15, 23, 31),
        4096,
    )
    params = sum(int(np.prod(s)) for s in expected_shapes(t, v).values())
    assert 8.2e9 < params < 8.4e9, params
