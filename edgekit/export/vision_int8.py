"""INT8 QDQ of an FP32 vision graph, calibrated on sample images (TensorRT's explicit-quantization rules).

QuantizeLinear/DequantizeLinear pairs, symmetric int8 activations (zero point 0, per tensor) and
symmetric per-output-channel int8 weights. Only the weight MatMuls are quantized; attention's
activation x activation MatMuls, softmax, RMSNorm, rotary and (optionally) the patch embedding and
merger stay float, because their ranges are where int8 loses the most. GPTQ can then re-choose the
weight codes with the calibrated scales fixed (vision_gptq.py). ONNX Runtime's CPU provider runs a QDQ
graph mostly as dequantize + float MatMul; CPU bundles get it on integer kernels (vision_int8_cpu.py).
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.model.vision_graph import INPUT, set_metadata

CALIBRATIONS = ("minmax", "percentile", "entropy")


@contextlib.contextmanager
def _quiet_onnxruntime_quantization():
    """onnxruntime.quantization logs advice on the root logger and prints calibrator progress: silence both,
    and give the root logger its level back afterwards."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        root.setLevel(level)


class PatchReader:
    """onnxruntime CalibrationDataReader over a list of patch arrays (one graph input each)."""

    def __init__(self, batches: Sequence[np.ndarray]):
        self._batches = list(batches)
        self._next = 0

    def get_next(self):
        if self._next >= len(self._batches):
            return None
        self._next += 1
        return {INPUT: self._batches[self._next - 1]}

    def rewind(self) -> None:
        self._next = 0


def weight_matmuls(model) -> tuple[list[str], list[str]]:
    """Split MatMul/Gemm nodes into (weight products, activation x activation products) by their inputs."""
    consts = {t.name for t in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    weights, acts = [], []
    for node in model.graph.node:
        if node.op_type in ("MatMul", "Gemm"):
            (weights if any(i in consts for i in node.input) else acts).append(node.name)
    return weights, acts


# Parts that may stay in float in an INT8 graph. Measured on the small checkpoint (448x448, percentile,
# one part quantized at a time, 1 - cosine to FP32): patch embedding 2.8e-4, merger 3.2e-4, every
# block's qkv/proj/gate-up/down together 1.1e-4. The two ends carry most of the INT8 error for ~2% of
# the tower's MACs, so bundles keep both in float (FP16 under TensorRT).
FLOAT_PARTS = ("patch-embed", "merger")


def part_matmuls(model, part: str) -> list[str]:
    """A part's weight products: the patch embedding is the first, the merger's two layers the last two."""
    weights, _ = weight_matmuls(model)
    if part == "patch-embed":
        return weights[:1]
    if part == "merger":
        return weights[-2:]
    raise EdgekitError(f"--keep-float {part!r}: choose from {', '.join(FLOAT_PARTS)}")


CALIB_CHUNK_BYTES = 1 << 30  # intermediate tensors fetched per calibration run


def calibrate_streamed(
    fp32_path: Path, batches: Sequence[np.ndarray], calib, options: dict, tmp: Path, large: bool
) -> Path:
    """ONNX Runtime's own calibrator and histogram collector, fed one image and at most CALIB_CHUNK_BYTES of its
    intermediate tensors at a time (quantize_static fetches every intermediate tensor of every image at once: over
    3 GB per 448x448 image at MiMo-Embodied's size, 16 images at a time). The collector merges each chunk into its
    histograms and the tensors are dropped. Returns the ranges as ONNX Runtime's calibration cache, which
    quantize_static then reads instead of calibrating again."""
    from onnxruntime.quantization.calibrate import (
        CalibrationMethod,
        HistogramCollector,
        create_calibrator,
        save_tensors_data,
    )

    keys = {"CalibTensorRangeSymmetric": "symmetric", "CalibPercentile": "percentile"}
    cal = create_calibrator(
        fp32_path,
        ["MatMul", "Gemm"],
        augmented_model_path=str(tmp / "augmented.onnx"),
        calibrate_method=calib,
        use_external_data_format=large,
        extra_options={keys[k]: v for k, v in options.items() if k in keys},
    )
    cal.model = None  # the session has it now (2.7 GB of weights at MiMo-Embodied's size)
    if calib == CalibrationMethod.MinMax:  # reduced in the graph: only two numbers per tensor leave the session
        cal.collect_data(PatchReader(batches))
    else:
        cal.collector = HistogramCollector(
            method=cal.method,
            symmetric=cal.symmetric,
            num_bins=cal.num_bins,
            num_quantized_bins=cal.num_quantized_bins,
            percentile=cal.percentile,
            scenario=cal.scenario,
        )
        outputs = [o for o in cal.infer_session.get_outputs() if o.name in cal.tensors_to_calibrate]
        for x in batches:
            for names in _chunks(outputs, CALIB_CHUNK_BYTES):
                cal.collector.collect(dict(zip(names, cal.infer_session.run(names, {INPUT: x}))))
    cache = tmp / "ranges.json"
    save_tensors_data(cal.compute_data(), cache)
    return cache


def _chunks(outputs, budget: int) -> list[list[str]]:
    """Output names in groups of at most `budget` bytes (float32, static shapes; unknown dims count as 1)."""
    groups, size = [[]], 0
    for o in outputs:
        n = 4 * int(np.prod([d if isinstance(d, int) and d > 0 else 1 for d in o.shape]))
        if groups[-1] and size + n > budget:
            groups.append([])
            size = 0
        groups[-1].append(o.name)
        size += n
    return groups


def _gptq_round(q, float_model, base_dir: Path, batches) -> dict:
    """Re-choose the int8 weight codes of `q` by GPTQ with its scales fixed (vision_gptq.py), in place. The float
    weights are read tensor by tensor (from the graph's external data when it has one), never a second graph."""
    from onnx import numpy_helper

    from edgekit.export.vision_gptq import gptq_round

    weights = {
        i.name: numpy_helper.to_array(i, base_dir=str(base_dir))
        for i in float_model.graph.initializer
        if len(i.dims) == 2
    }
    return gptq_round(q, weights, batches, INPUT)


def _calibration(method: str, percentile: float):
    """ONNX Runtime's calibration method and the options that go with it (activations symmetric: TensorRT)."""
    from onnxruntime.quantization import CalibrationMethod

    if method not in CALIBRATIONS:
        raise EdgekitError(f"--calibration {method!r}: choose one of {', '.join(CALIBRATIONS)}")
    extra = {
        "ActivationSymmetric": True,  # TensorRT: int8 activations with zero point 0
        "WeightSymmetric": True,
        "QuantizeBias": False,  # TensorRT takes float biases; int32 bias QDQ is an ORT-only pattern
        "CalibTensorRangeSymmetric": method != "minmax",
        "CalibPercentile": percentile,
        "CalibNumBins": 2048,
    }
    calib = {
        "minmax": CalibrationMethod.MinMax,
        "percentile": CalibrationMethod.Percentile,
        "entropy": CalibrationMethod.Entropy,
    }[method]
    return calib, extra


def _is_large(fp32_path: Path, model) -> bool:
    """Whether the graph's weights live (or must live) in external data: ONNX Runtime writes it that way too."""
    from edgekit.export.onnx_files import EXTERNAL_DATA_BYTES, initializer_bytes

    return fp32_path.with_name(fp32_path.name + ".data").is_file() or initializer_bytes(model) > EXTERNAL_DATA_BYTES


def calibrate_ranges(
    fp32_path: str | Path,
    batches: Sequence[np.ndarray],
    out: str | Path,
    *,
    method: str = "minmax",
    percentile: float = 99.999,
) -> Path:
    """The activation ranges of an FP32 vision graph over `batches` (ONNX Runtime's calibration cache), written to
    `out`: several `quantize_int8` calls on one graph and one calibration set (other float parts, GPTQ or not) then
    calibrate once."""
    import onnx

    if not batches:
        raise EdgekitError("INT8 calibration needs at least one image; pass --samples with images")
    calib, extra = _calibration(method, percentile)
    fp32_path, out = Path(fp32_path), Path(out)
    large = _is_large(fp32_path, onnx.load(str(fp32_path), load_external_data=False))
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".ranges-") as work, _quiet_onnxruntime_quantization():
        from edgekit.atomic import write_bytes

        write_bytes(out, calibrate_streamed(fp32_path, batches, calib, extra, Path(work), large).read_bytes())
    return out


def quantize_int8(
    fp32_path: str | Path,
    out: str | Path,
    batches: Sequence[np.ndarray],
    *,
    method: str = "minmax",
    percentile: float = 99.999,
    float_parts: Sequence[str] = (),
    gptq: bool = False,
    ranges: str | Path | None = None,
) -> dict:
    """Static INT8 QDQ of an FP32 vision graph, calibrated on `batches` of patches; writes `out` atomically.
    `ranges`: calibrate_ranges' file for this graph, batches and method (calibrated here when None)."""
    import onnx
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    calib, extra = _calibration(method, percentile)
    if not batches:
        raise EdgekitError("INT8 calibration needs at least one image; pass --samples with images")
    from edgekit.export.onnx_files import save_graph

    fp32_path = Path(fp32_path)
    model = onnx.load(str(fp32_path), load_external_data=False)  # the graph; its weights are read when GPTQ needs them
    large = _is_large(fp32_path, model)
    weights, acts = weight_matmuls(model)
    if not weights:  # fail before calibrating: a config that matches nothing would export float silently
        raise EdgekitError(f"{fp32_path}: no weight MatMul found to quantize; is this an edgekit vision graph?")
    exclude = acts + [n for part in float_parts for n in part_matmuls(model, part)]
    quantized = [n for n in weights if n not in exclude]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".int8-") as work, _quiet_onnxruntime_quantization():
        tmp = Path(work)
        cache = Path(ranges) if ranges is not None else calibrate_streamed(fp32_path, batches, calib, extra, tmp, large)
        quantize_static(
            str(fp32_path),
            str(tmp / "qdq.onnx"),
            None,
            calibration_cache_path=str(cache),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul", "Gemm"],
            nodes_to_quantize=quantized,
            per_channel=True,
            activation_type=QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=calib,
            use_external_data_format=large,
            extra_options=extra,
        )
        q = onnx.load(str(tmp / "qdq.onnx"))
        rounded = _gptq_round(q, model, fp32_path.parent, batches) if gptq else {}
        props = {p.key: p.value for p in model.metadata_props}
        props["edgekit.precision"] = "int8"
        props["edgekit.calibration"] = method
        set_metadata(q, props)
        save_graph(q, out)
    return {
        "quantized_matmuls": len(quantized),
        "float_matmuls": len(exclude),
        "float_parts": list(float_parts),
        "method": method,
        **rounded,
        "calibration_batches": len(batches),
    }
