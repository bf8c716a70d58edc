"""The CPU INT8 vision graph computes the QDQ graph's products on integer kernels, exactly."""

from __future__ import annotations

import collections

import numpy as np
import pytest

from conftest import require
from edgekit.ort_session import session_options  # exact u8·s8 products on CPUs without VNNI too


def _without_output_rounding(model):
    """The QDQ graph with the Quantize/Dequantize pair after each weight MatMul bypassed: float products of the same
    int8 codes and scales, which is what the integer graph computes."""
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers = collections.defaultdict(list)
    for n in model.graph.node:
        for i in n.input:
            consumers[i].append(n)
    rename = {}
    for n in model.graph.node:
        if n.op_type == "MatMul" and all(
            producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input
        ):
            (q,) = consumers[n.output[0]]
            (dq,) = consumers[q.output[0]]
            rename[dq.output[0]] = n.output[0]
    for n in model.graph.node:
        for k, i in enumerate(n.input):
            if i in rename:
                n.input[k] = rename[i]
    return model


@pytest.mark.parametrize("width,height", [(308, 196)])  # odd grids: 22x14 patches, ragged windows
def test_integer_graph_equals_the_qdq_products(tiny_ckpt, tmp_path, width, height):
    require("onnxruntime")
    import onnx
    import onnxruntime as ort

    from edgekit.export.vision_int8 import FLOAT_PARTS, calibrate_ranges, quantize_int8
    from edgekit.export.vision_int8_cpu import write_integer_graph
    from edgekit.export.vision_onnx import export_float
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.model.vision_graph import INPUT

    ck = open_checkpoint(tiny_ckpt)
    info = export_float(ck, width, height, 1, "fp32", tmp_path / "fp32.onnx")
    rng = np.random.default_rng()
    patches = info.grid_h * info.grid_w
    dim = ort.InferenceSession(str(tmp_path / "fp32.onnx"), session_options()).get_inputs()[0].shape[-1]
    batches = [rng.standard_normal((patches, dim)).astype(np.float32) for _ in range(3)]
    report = quantize_int8(
        tmp_path / "fp32.onnx", tmp_path / "qdq.onnx", batches, method="percentile", float_parts=FLOAT_PARTS, gptq=True
    )
    # ranges calibrated once and handed over give the graph that calibrating inside gives
    ranges = calibrate_ranges(tmp_path / "fp32.onnx", batches, tmp_path / "ranges.json", method="percentile")
    quantize_int8(
        tmp_path / "fp32.onnx",
        tmp_path / "qdq_ranges.onnx",
        batches,
        method="percentile",
        float_parts=FLOAT_PARTS,
        gptq=True,
        ranges=ranges,
    )
    assert (tmp_path / "qdq_ranges.onnx").read_bytes() == (tmp_path / "qdq.onnx").read_bytes()
    got = write_integer_graph(tmp_path / "qdq.onnx", tmp_path / "int.onnx")
    assert got["integer_matmuls"] == report["quantized_matmuls"] > 0
    ops = collections.Counter(n.op_type for n in onnx.load(str(tmp_path / "int.onnx")).graph.node)
    assert ops["MatMulIntegerToFloat"] == got["integer_matmuls"] and ops["DequantizeLinear"] == 0
    onnx.save(_without_output_rounding(onnx.load(str(tmp_path / "qdq.onnx"))), str(tmp_path / "qdq_float_out.onnx"))
    x = rng.standard_normal((patches, dim)).astype(np.float32)  # a fresh input, not a calibration batch
    a, b, f = (
        ort.InferenceSession(str(tmp_path / f"{g}.onnx"), session_options()).run(None, {INPUT: x})[0]
        for g in ("int", "qdq_float_out", "fp32")
    )
    # Through many layers a last-bit difference can move an activation across an int8 rounding boundary, so the
    # whole tower is the QDQ products up to such flips: far closer to them than either is to FP32. Compared in RMS:
    # a flip moves a few values, which the maximum magnifies (its ratio reached 0.27-0.34 on some seeds and machines;
    # the RMS ratio stayed under 0.09 over 14 seeds here, and is 1x or more for a wrong scale or product).
    rms = lambda v: float(np.sqrt(np.mean(np.square(v, dtype=np.float64))))  # noqa: E731
    to_qdq, qdq_to_fp32 = rms(a - b) / rms(b), rms(b - f) / rms(f)
    assert to_qdq < 0.25 * qdq_to_fp32, (to_qdq, qdq_to_fp32)


def _one_matmul_qdq(rng, m: int, k: int, n: int):
    """x -> Q -> DQ -> MatMul(DQ(W int8, per column)) -> Q -> DQ -> Add(bias), as ONNX Runtime's quantizer writes it."""
    from onnx import TensorProto, helper, numpy_helper

    w = rng.integers(-127, 128, (k, n)).astype(np.int8)
    inits = [
        numpy_helper.from_array(a, name)
        for name, a in (
            ("x_scale", np.float32(0.02)),
            ("x_zero", np.int8(0)),
            ("w", w),
            ("w_scale", (rng.random(n) * 0.01 + 1e-3).astype(np.float32)),
            ("w_zero", np.zeros(n, np.int8)),
            ("y_scale", np.float32(0.05)),
            ("y_zero", np.int8(0)),
            ("bias", rng.standard_normal(n).astype(np.float32)),
        )
    ]
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "x_scale", "x_zero"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "x_scale", "x_zero"], ["xd"]),
        helper.make_node("DequantizeLinear", ["w", "w_scale", "w_zero"], ["wd"], axis=1),
        helper.make_node("MatMul", ["xd", "wd"], ["y"], name="mm"),
        helper.make_node("QuantizeLinear", ["y", "y_scale", "y_zero"], ["yq"]),
        helper.make_node("DequantizeLinear", ["yq", "y_scale", "y_zero"], ["yd"]),
        helper.make_node("Add", ["yd", "bias"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "one",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [m, n])],
        inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("m,k,n", [(13, 77, 45), (1, 256, 31)])
def test_one_rewritten_matmul_is_the_qdq_product(tmp_path, m, k, n):
    require("onnxruntime")
    import onnx
    import onnxruntime as ort

    from edgekit.export.vision_int8_cpu import write_integer_graph

    rng = np.random.default_rng()
    onnx.save(_one_matmul_qdq(rng, m, k, n), str(tmp_path / "qdq.onnx"))
    assert write_integer_graph(tmp_path / "qdq.onnx", tmp_path / "int.onnx") == {"integer_matmuls": 1}
    ops = [n.op_type for n in onnx.load(str(tmp_path / "int.onnx")).graph.node]
    assert ops == ["QuantizeLinear", "MatMulIntegerToFloat"]  # output pair and bias Add folded in
    x = (rng.standard_normal((m, k)) * 1.5).astype(np.float32)  # some values past the int8 range: clamped alike
    got = ort.InferenceSession(str(tmp_path / "int.onnx"), session_options()).run(None, {"x": x})[0]
    onnx.save(_without_output_rounding(onnx.load(str(tmp_path / "qdq.onnx"))), str(tmp_path / "ref.onnx"))
    ref = ort.InferenceSession(str(tmp_path / "ref.onnx"), session_options()).run(None, {"x": x})[0]
    # float64 from the codes, as the kernel's int32 sums make exact
    xq = np.clip(np.round(x / 0.02), -128, 127)
    model = onnx.load(str(tmp_path / "qdq.onnx"))
    init = {t.name: onnx.numpy_helper.to_array(t) for t in model.graph.initializer}
    exact = (xq.astype(np.float64) @ init["w"].astype(np.float64)) * 0.02 * init["w_scale"] + init["bias"]
    assert np.abs(got - exact).max() <= 1e-5 * np.abs(exact).max()
    assert np.abs(ref - exact).max() <= 1e-5 * np.abs(exact).max()


def test_a_float_graph_is_refused(tiny_ckpt, tmp_path):
    require("onnxruntime")
    from edgekit.errors import EdgekitError
    from edgekit.export.vision_int8_cpu import write_integer_graph
    from edgekit.export.vision_onnx import export_float
    from edgekit.model.checkpoint import open_checkpoint

    export_float(open_checkpoint(tiny_ckpt), 224, 224, 1, "fp32", tmp_path / "fp32.onnx")
    with pytest.raises(EdgekitError, match="no quantized MatMul"):
        write_integer_graph(tmp_path / "fp32.onnx", tmp_path / "int.onnx")
    assert not (tmp_path / "int.onnx").exists()
