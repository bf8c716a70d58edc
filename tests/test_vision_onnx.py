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
        out = model.model.get_image_features(pixel_values=torch.from_numpy(patches), image_grid_thw=torch.from_numpy(grid))
    feats = out.pooler_output if hasattr(out, "pooler_output") else out
    return torch.cat(list(feats)).numpy() if isinstance(feats, (list, tuple)) else feats.numpy()


def _images(n, h, w, rng):
    from PIL import Image

    return [Image.fromarray((rng.random((h, w, 3)) * 255).astype("uint8")) for _ in range(n)]


@pytest.mark.parametrize("width,height,images", [(448, 448, 1), (224, 672, 1), (1024, 484, 1), (56, 56, 1), (448, 448, 3), (333, 517, 2)])
def test_fp32_matches_transformers(tiny_ckpt, hf_model, tmp_path, width, height, images):
    from edgekit.model.processor import load_processor_config, preprocess_images

    ck = open_checkpoint(tiny_ckpt)
    path = tmp_path / "v.onnx"
    info = export_float(ck, width, height, images, "fp32", path)
    ops = check_graph(path)  # onnx.checker full + strict shape inference, no Loop/If/Scan
    assert not {"Loop", "If", "Scan"} & set(ops)
    rng = np.random.default_rng()
    pix, grid = preprocess_images(_images(images, info.height, info.width, rng), load_processor_config(tiny_ckpt),
                                  resize_to=(info.height, info.width))
    got = OnnxVision(path).encode(pix, grid)
    ref = _reference(hf_model, pix, grid)
    assert got.shape == ref.shape
    cos = (got * ref).sum(-1) / (np.linalg.norm(got, axis=-1) * np.linalg.norm(ref, axis=-1))
    assert cos.min() >= 0.99999, cos.min()
    assert np.abs(got - ref).max() <= 1e-4 * np.abs(ref).max()


def test_fp16_and_int8_stay_close_to_fp32(small_ckpt, tmp_path):
    """FP16 and INT8 QDQ (calibrated on the built-in calib images) vs FP32 on held-out sample images."""
    from edgekit.export.vision_onnx import patch_batches, quantize_int8, sample_images, split_calibration
    from edgekit.model.processor import load_processor_config

    ck = open_checkpoint(small_ckpt)
    fp32 = tmp_path / "fp32.onnx"
    info = export_float(ck, 448, 448, 1, "fp32", fp32)
    export_float(ck, 448, 448, 1, "fp16", tmp_path / "fp16.onnx")
    calib, held = split_calibration(sample_images(["driving", "embodied"]), 16, 8)
    proc = load_processor_config(small_ckpt)
    quantize_int8(fp32, tmp_path / "int8.onnx", patch_batches(calib, info, proc), method="percentile")
    ops = check_graph(tmp_path / "int8.onnx")
    assert ops.get("QuantizeLinear", 0) > 0 and ops.get("DequantizeLinear", 0) > 0
    ref_rt = OnnxVision(fp32)
    for name, floor in (("fp16", 0.999), ("int8", 0.99)):
        rt = OnnxVision(tmp_path / f"{name}.onnx")
        cos = []
        for batch in patch_batches(held, info, proc):
            grid = np.asarray([[1, info.grid_h, info.grid_w]])
            a, b = rt.encode(batch, grid), ref_rt.encode(batch, grid)
            cos.append(float((a * b).sum() / (np.linalg.norm(a) * np.linalg.norm(b))))
        print(name, "mean cosine", np.mean(cos), "worst", np.min(cos))
        assert np.mean(cos) >= floor, (name, cos)
