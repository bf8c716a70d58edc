"""The INT8 vision graph for ONNX Runtime on a CPU: the calibrated QDQ graph with its weight products on integer kernels.

ONNX Runtime's CPU provider fuses a QDQ MatMul into an integer QLinearMatMul only when its output is quantized
again; the others (attention output and MLP down projections, whose outputs feed float residual adds) run as
dequantize + float MatMul, which is why the QDQ graph is hardly faster than FP32 there. This rewrite replaces
every `DequantizeLinear(a_q), DequantizeLinear(W_q) -> MatMul` with one com.microsoft `MatMulIntegerToFloat(a_q, W_q,
a_scale, w_scale, a_zero, w_zero)`: the same int8 weight codes and the same calibrated scales, int32 accumulation,
one float scale at the end. Activations are quantized to uint8 with zero point 128 instead of int8 with 0 (the
same codes shifted by 128: x86's VNNI dot product multiplies u8 by s8; MLAS's s8·s8 path measured 5x slower than
u8·s8 here). What it computes is the QDQ graph's product exactly up to float32 summation order, so the
calibration, the GPTQ-chosen codes and the accuracy of the QDQ graph carry over; the QDQ graph itself stays
what TensorRT gets.
"""

from __future__ import annotations

from pathlib import Path

from edgekit.atomic import atomic_path
from edgekit.errors import EdgekitError


def integer_matmuls(model):
    """Rewrite `model` (onnx.ModelProto, a QDQ graph) in place; returns how many MatMuls became integer."""
    import onnx
    from onnx import helper

    consts = {t.name for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    nodes, rewritten, activation_zeros, weight_zeros = [], 0, set(), set()
    for node in model.graph.node:
        dq = [producer.get(i) for i in node.input] if node.op_type == "MatMul" else []
        if len(dq) == 2 and all(d is not None and d.op_type == "DequantizeLinear" for d in dq):
            (a, w) = dq
            a_from_q = producer.get(a.input[0]) is not None and producer[a.input[0]].op_type == "QuantizeLinear"
            if a_from_q and w.input[0] in consts and len(a.input) == 3 and len(w.input) == 3:
                nodes.append(
                    helper.make_node(
                        "MatMulIntegerToFloat",
                        [a.input[0], w.input[0], a.input[1], w.input[1], a.input[2], w.input[2]],
                        list(node.output),
                        name=node.name + "_int",
                        domain="com.microsoft",
                    )
                )
                rewritten += 1
                activation_zeros |= {a.input[2], producer[a.input[0]].input[2]}
                weight_zeros.add(w.input[2])
                continue
        nodes.append(node)
    _shift_to_uint8(model, activation_zeros, weight_zeros)
    nodes = _fuse_outputs(nodes, consts, {t.name: t for t in model.graph.initializer})
    used = {i for n in nodes for i in n.input} | {o.name for o in model.graph.output}
    kept = [n for n in nodes if n.op_type != "DequantizeLinear" or any(o in used for o in n.output)]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    needed = {i for n in kept for i in n.input}
    unused = [t for t in model.graph.initializer if t.name not in needed]  # the dropped output pairs' scales
    for t in unused:
        model.graph.initializer.remove(t)
    if not any(op.domain == "com.microsoft" for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    onnx.checker.check_model(model)
    return rewritten


def _fuse_outputs(nodes: list, consts: set[str], inits: dict) -> list:
    """After each integer MatMul: drop the output's Quantize/Dequantize pair (a second int8 rounding the QDQ graph
    puts there for TensorRT's fusions; unrounded float is closer to FP32) and take a following bias Add in as the
    kernel's bias input, as ONNX Runtime's own fused kernels do."""
    consumers: dict[str, list] = {}
    for n in nodes:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    dropped = set()
    for n in nodes:
        if n.op_type != "MatMulIntegerToFloat":
            continue
        nxt = consumers.get(n.output[0], [])
        if len(nxt) == 1 and nxt[0].op_type == "QuantizeLinear":
            deq = consumers.get(nxt[0].output[0], [])
            if len(deq) == 1 and deq[0].op_type == "DequantizeLinear":
                dropped |= {id(nxt[0]), id(deq[0])}
                n.output[0] = deq[0].output[0]
                nxt = consumers.get(n.output[0], [])
        if len(nxt) == 1 and nxt[0].op_type == "Add":
            add = nxt[0]
            other = [i for i in add.input if i != n.output[0]]
            if len(other) == 1 and other[0] in consts and len(inits[other[0]].dims) == 1:
                n.input.append(other[0])  # MatMulIntegerToFloat's optional bias
                n.output[0] = add.output[0]
                dropped.add(id(add))
    return [n for n in nodes if id(n) not in dropped]


def _shift_to_uint8(model, zero_points: set[str], weight_zeros: set[str]) -> None:
    """int8 activation codes with zero point z -> uint8 codes with z + 128 (every Q/DQ sharing them follows)."""
    import numpy as np
    from onnx import numpy_helper

    if zero_points & weight_zeros:
        raise EdgekitError("an activation zero point is shared with a weight: not an edgekit INT8 QDQ graph")
    for init in model.graph.initializer:
        if init.name in zero_points:
            z = numpy_helper.to_array(init)
            if z.dtype == np.int8:
                init.CopyFrom(numpy_helper.from_array((z.astype(np.int16) + 128).astype(np.uint8), init.name))


def write_integer_graph(qdq_path: str | Path, out: str | Path) -> dict:
    """The integer-kernel graph of a QDQ vision graph (vision_int8.quantize_int8's output), written atomically."""
    import onnx

    from edgekit.model.vision_graph import set_metadata

    model = onnx.load(str(qdq_path))
    n = integer_matmuls(model)
    if n == 0:
        raise EdgekitError(f"{qdq_path}: no quantized MatMul to put on integer kernels; is this an INT8 QDQ graph?")
    props = {p.key: p.value for p in model.metadata_props}
    props["edgekit.int8_kernels"] = "MatMulIntegerToFloat"
    set_metadata(model, props)
    out = Path(out)
    with atomic_path(out) as tmp:
        onnx.save(model, str(tmp))
    return {"integer_matmuls": n}
