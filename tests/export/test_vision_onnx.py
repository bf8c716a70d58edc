"""Vision tower -> static ONNX, checked in onnxruntime against transformers' own vision tower."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit.export.vision_onnx import check_graph, export_float
from edgekit.model.checkpoint import open_checkpoint
from edgekit.runtime.onnx_vision import OnnxVision


@pytest.fixture(scope="module")
def hf_model(tiny_ckpt):
    from edgekit.quant.evaluate import load_reference

    return load_reference(tiny_ckpt)


def _reference(model, patches: np.ndarray, grid: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model.model.get_image_features(
            pixel_values=torch.from_numpy(patches), image_grid_thw=torch.from_numpy(grid)
        )
    feats = out.pooler_output if hasattr(out, "pooler_output") else out
    return torch.cat(list(feats)).numpy() if isinstance(feats, (list, tuple)) else feats.numpy()


def _images(n, h, w, rng):
    from PIL import Image

    return [Image.fromarray((rng.random((h, w, 3)) * 255).astype("uint8")) for _ in range(n)]


@pytest.mark.parametrize(
    "width,height,images", [(448, 448, 1), (224, 672, 1), (1024, 484, 1), (56, 56, 1), (448, 448, 3), (333, 517, 2)]
)
def test_fp32_matches_transformers(tiny_ckpt, hf_model, tmp_path, width, height, images):
    from edgekit.model.processor import load_processor_config, preprocess_images

    ck = open_checkpoint(tiny_ckpt)
    path = tmp_path / "v.onnx"
    info = export_float(ck, width, height, images, "fp32", path)
    ops = check_graph(path)  # onnx.checker full + strict shape inference, no Loop/If/Scan
    assert not {"Loop", "If", "Scan"} & set(ops)
    rng = np.random.default_rng()
    pix, grid = preprocess_images(
        _images(images, info.height, info.width, rng),
        load_processor_config(tiny_ckpt),
        resize_to=(info.height, info.width),
    )
    got = OnnxVision(path).encode(pix, grid)
    ref = _reference(hf_model, pix, grid)
    assert got.shape == ref.shape
    cos = (got * ref).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(ref, axis=-1))
    assert cos.min() >= 0.99999, cos.min()
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_fp16_and_int8_stay_close_to_fp32(small_ckpt, tmp_path):
    """FP16 and INT8 QDQ (calibrated on the built-in calib images) vs FP32 on held-out sample images."""
    import onnx
    from onnx import numpy_helper

    from edgekit.export.calibration_images import patch_batches, sample_images, split_calibration
    from edgekit.export.vision_int8 import FLOAT_PARTS, calibrate_ranges, part_matmuls, quantize_int8, weight_matmuls
    from edgekit.model.processor import load_processor_config

    ck = open_checkpoint(small_ckpt)
    fp32 = tmp_path / "fp32.onnx"
    info = export_float(ck, 448, 448, 1, "fp32", fp32)
    export_float(ck, 448, 448, 1, "fp16", tmp_path / "fp16.onnx")
    calib, held = split_calibration(sample_images(["driving", "embodied"]), 16, 8)
    proc = load_processor_config(small_ckpt)
    batches = patch_batches(calib, info, proc)
    ranges = calibrate_ranges(fp32, batches, tmp_path / "ranges.json", method="percentile")  # once for all three
    quantize_int8(fp32, tmp_path / "int8.onnx", batches, method="percentile", ranges=ranges)
    quantize_int8(
        fp32, tmp_path / "int8_ends_float.onnx", batches, method="percentile", float_parts=FLOAT_PARTS, ranges=ranges
    )
    report = quantize_int8(
        fp32,
        tmp_path / "int8_bundle.onnx",
        batches,
        method="percentile",
        float_parts=FLOAT_PARTS,
        gptq=True,
        ranges=ranges,
    )
    from edgekit.export.vision_int8_cpu import write_integer_graph

    assert write_integer_graph(tmp_path / "int8_bundle.onnx", tmp_path / "int8_integer.onnx") == {
        "integer_matmuls": report["quantized_matmuls"]
    }
    assert report["gptq_layers"] == report["quantized_matmuls"] and report["gptq_median_error_reduction"] > 2
    ops = check_graph(tmp_path / "int8.onnx")
    assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0
    # the kept parts read float inputs; every other weight product reads a DequantizeLinear output
    float_graph = onnx.load(str(fp32))
    weights, _ = weight_matmuls(float_graph)
    kept = {n for part in FLOAT_PARTS for n in part_matmuls(float_graph, part)}
    graph = onnx.load(str(tmp_path / "int8_ends_float.onnx")).graph
    producer = {o: n.op_type for n in graph.node for o in n.output}
    reads_dq = {n.name: producer.get(n.input[0]) == "DequantizeLinear" for n in graph.node if n.name in weights}
    assert len(kept) == 3 and len(reads_dq) == len(weights)
    assert all(reads_dq[name] == (name not in kept) for name in weights), reads_dq
    # GPTQ changes int8 weight codes only: same nodes, same scales, some codes moved
    rtn, rounded = (
        onnx.load(str(tmp_path / "int8_ends_float.onnx")).graph,
        onnx.load(str(tmp_path / "int8_bundle.onnx")).graph,
    )
    assert [(n.op_type, list(n.input)) for n in rtn.node] == [(n.op_type, list(n.input)) for n in rounded.node]
    a = {i.name: numpy_helper.to_array(i) for i in rtn.initializer}
    b = {i.name: numpy_helper.to_array(i) for i in rounded.initializer}
    changed = [k for k in a if not np.array_equal(a[k], b[k])]
    assert changed and all(b[k].dtype == np.int8 for k in changed)
    grid = np.asarray([[1, info.grid_h, info.grid_w]])
    held_batches = patch_batches(held, info, proc)
    ref_rt = OnnxVision(fp32)
    refs = [ref_rt.encode(batch, grid) for batch in held_batches]  # the FP32 answers, once for every variant
    means = {}
    for name, floor in (
        ("fp16", 0.999),
        ("int8", 0.99),
        ("int8_ends_float", 0.99),
        ("int8_bundle", 0.99),
        ("int8_integer", 0.99),
    ):
        rt = OnnxVision(tmp_path / f"{name}.onnx")
        cos = []
        for batch, b in zip(held_batches, refs):
            a = rt.encode(batch, grid)
            cos.append(float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b))))
        print(name, "mean cosine", np.mean(cos), "worst", np.min(cos))
        assert np.mean(cos) >= floor, (name, cos)
        means[name] = np.mean(cos)
    # measured: 1 - cosine 7e-4 with everything INT8, 1.1e-4 with the patch embedding and merger in float,
    # 7.6e-5 with GPTQ codes on top
    assert 1 - means["int8_ends_float"] < 0.5 * (1 - means["int8"]), means
    assert 1 - means["int8_bundle"] < 0.85 * (1 - means["int8_ends_float"]), means
    # the CPU graph (same codes and scales on integer kernels, no second rounding of the outputs): measured 5.1e-5
    assert 1 - means["int8_integer"] < 1 - means["int8_bundle"], means
