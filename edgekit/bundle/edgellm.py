"""NVIDIA TensorRT Edge-LLM's exporter, run as a subprocess from its own virtual environment.

`tensorrt-edgellm` pins its own transformers and onnx versions, so edgekit never imports it: it
finds the `tensorrt-edgellm-export` executable and runs it on the bundle's unified checkpoint
(on a CPU; it writes ONNX with TensorRT Edge-LLM plugin nodes). Where it is looked for, in order:
$EDGEKIT_EDGELLM_EXPORT, `.venv-edgellm/bin/` in the current directory (scripts/setup_edgellm_venv.sh
makes it), then PATH.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from edgekit.errors import EdgekitError

EXPORTER = "tensorrt-edgellm-export"
INT4_PLUGIN = ("trt_edgellm", "Int4GroupwiseGemmPluginV2")


def find_exporter() -> Path | None:
    env = os.environ.get("EDGEKIT_EDGELLM_EXPORT")
    if env:
        if not Path(env).is_file():
            raise EdgekitError(f"EDGEKIT_EDGELLM_EXPORT={env}: no such file")
        return Path(env)
    local = Path(".venv-edgellm") / "bin" / EXPORTER
    if local.is_file():
        return local.resolve()
    found = shutil.which(EXPORTER)
    return Path(found) if found else None


def run_export(exporter: Path, unified_dir: Path, out_dir: Path, log: Path) -> Path:
    """Export the decoder (no vision: edgekit exports that itself) to `out_dir`; returns the LLM ONNX path."""
    cmd = [str(exporter), str(unified_dir), str(out_dir), "--skip-visual"]
    env = {**os.environ, "PYTHONHASHSEED": "0", "CUDA_VISIBLE_DEVICES": ""}
    with open(log, "w") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
        raise EdgekitError(f"{EXPORTER} failed (exit {proc.returncode}): {tail[0][:300]} (full log: {log})")
    onnx_path = out_dir / "llm" / "model.onnx"
    if not onnx_path.is_file():
        raise EdgekitError(f"{EXPORTER} finished but wrote no {onnx_path}")
    return onnx_path


def check_int4_export(onnx_path: Path, unified_dir: Path) -> dict:
    """Edge-LLM's ONNX must compute every quantized linear with its INT4 plugin, with edgekit's scales.

    Given keys it cannot match, the exporter silently exports FP16: this is the check for that.
    Returns counts; raises EdgekitError naming the first linear that is wrong.
    """
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from edgekit.export.modelopt_reader import open_unified

    model = onnx.load(str(onnx_path), load_external_data=False)
    inits = {i.name: i for i in model.graph.initializer}
    plugins = {_hf_name(n.input[1]): n for n in model.graph.node if (n.domain, n.op_type) == INT4_PLUGIN}
    float_gemms = {_hf_name(i) for n in model.graph.node if n.op_type in ("MatMul", "Gemm") for i in n.input}
    uc = open_unified(unified_dir)
    for name in uc.linear_names():
        if name in float_gemms:
            raise EdgekitError(f"{onnx_path}: {name} is a float MatMul: the exporter did not match its quantized keys")
        node = plugins.get(name)
        if node is None:
            raise EdgekitError(f"{onnx_path}: no {INT4_PLUGIN[1]} node for {name}")
        scale_init = inits.get(node.input[2])
        if scale_init is None:
            raise EdgekitError(f"{onnx_path}: {node.name} has no scale initializer")
        got = (
            numpy_helper.to_array(scale_init, base_dir=str(onnx_path.parent)).astype(np.float32).T
        )  # [K/g, N] -> [N, K/g]
        want = uc.unpack(name)[1]["scale"].numpy()
        if got.shape != want.shape or not np.array_equal(got, want):
            raise EdgekitError(f"{onnx_path}: {name}: the plugin's scales differ from edgekit's")
    return {"int4_plugin_nodes": len(plugins), "quantized_linears": len(uc.linear_names())}


def _graph(onnx_path: Path) -> tuple:
    """(the ONNX model without its external data, initializers by name, the folder external data is read from, the
    node producing each value)."""
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    return (
        model,
        {i.name: i for i in model.graph.initializer},
        str(onnx_path.parent),
        {o: n for n in model.graph.node for o in n.output},
    )


def _hf_name(onnx_name: str) -> str:
    """Edge-LLM names initializers after its module path: '_model.' + the checkpoint's tensor name."""
    return onnx_name.removeprefix("_model.")


def check_int8_export(onnx_path: Path, unified_dir: Path) -> dict:
    """W8A8: every quantized linear's weight is an INT8 DequantizeLinear of edgekit's exact codes and scales,
    and every activation QuantizeLinear uses edgekit's input scale. Returns counts; raises on the first mismatch."""
    import numpy as np
    from onnx import numpy_helper

    from edgekit.export.modelopt_reader import open_unified

    model, inits, base, _ = _graph(onnx_path)
    array = lambda name: numpy_helper.to_array(inits[name], base_dir=base)  # noqa: E731
    weight_dq = {
        _hf_name(n.input[0]): n for n in model.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
    }
    act_q = [n for n in model.graph.node if n.op_type == "QuantizeLinear"]
    uc = open_unified(unified_dir)
    for name in uc.linear_names():
        node = weight_dq.get(name)
        if node is None:
            raise EdgekitError(f"{onnx_path}: no INT8 DequantizeLinear for {name} (exported unquantized?)")
        codes, params = uc.unpack(name)
        scale = params["scale"]
        if not np.array_equal(array(node.input[0]), codes.numpy()) or not np.array_equal(
            array(node.input[1]), scale.numpy()
        ):
            raise EdgekitError(f"{onnx_path}: {name}: INT8 codes or scales differ from edgekit's")
    for node in act_q:
        module = _hf_name(node.input[1]).removesuffix(".input_scale")
        if float(array(node.input[1])) != float(uc.get(module + ".input_scale")):
            raise EdgekitError(f"{onnx_path}: {module}: activation scale differs from edgekit's")
    if not act_q:
        raise EdgekitError(f"{onnx_path}: no activation QuantizeLinear: the export is weight-only, not W8A8")
    return {"int8_weight_dq": len(weight_dq), "activation_q": len(act_q), "quantized_linears": len(uc.linear_names())}


FP4_ACTIVATION_QUANT = ("trt", "TRT_FP4DynamicQuantize")


def check_nvfp4_export(onnx_path: Path, unified_dir: Path) -> dict:
    """NVFP4: every quantized linear's weight is Edge-LLM's two DequantizeLinear nodes (FP8 block scales under the
    FP32 tensor scale, then the FP4 weight in blocks of 16) over edgekit's exact bytes, and (W4A4) its activations are
    quantized to FP4 with edgekit's input scale. Returns counts; raises on the first mismatch."""
    import onnx
    from onnx import numpy_helper

    from edgekit.export.modelopt_reader import open_unified

    model, inits, base, producers = _graph(onnx_path)
    weight_dq = {
        _hf_name(n.input[0]): n
        for n in model.graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in inits
        and inits[n.input[0]].data_type == onnx.TensorProto.FLOAT4E2M1
    }
    act_q = [n for n in model.graph.node if (n.domain, n.op_type) == FP4_ACTIVATION_QUANT]
    uc = open_unified(unified_dir)
    for name in uc.linear_names():
        node = weight_dq.get(name)
        if node is None:
            raise EdgekitError(f"{onnx_path}: no FP4 weight DequantizeLinear for {name} (exported unquantized?)")
        attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        scale_dq = producers.get(node.input[1])
        if attrs.get("block_size") != 16 or scale_dq is None or scale_dq.op_type != "DequantizeLinear":
            raise EdgekitError(f"{onnx_path}: {name}: not FP4 blocks of 16 under a dequantized FP8 scale")
        want = {
            node.input[0]: uc.get(name),
            scale_dq.input[0]: uc.get(name + "_scale"),
            scale_dq.input[1]: uc.get(name + "_scale_2"),
        }
        for init_name, tensor in want.items():
            if init_name not in inits or _initializer_bytes(inits[init_name], base) != _tensor_bytes(tensor):
                raise EdgekitError(f"{onnx_path}: {name}: {_hf_name(init_name)} differs from edgekit's bytes")
    if not uc.layout.activation_scale and act_q:  # Edge-LLM 0.11 maps every *FP4* quant_algo to W4A4
        raise EdgekitError(
            f"{onnx_path}: {len(act_q)} FP4 activation quantizers in a {uc.algo} export: Edge-LLM runs "
            "weight-only NVFP4 as W4A4 with its default input scale (1.0); write NVFP4 with calibrated "
            "input scales (edgekit build --precision nvfp4 --backend tensorrt does)"
        )
    if uc.layout.activation_scale:
        if not act_q:
            raise EdgekitError(f"{onnx_path}: no FP4 activation quantization: the export is weight-only, not W4A4")
        scales = {float(uc.get(n[: -len("weight")] + "input_scale")) for n in uc.linear_names()}
        for node in act_q:
            got = float(numpy_helper.to_array(inits[node.input[1]], base_dir=base)) if node.input[1] in inits else None
            if got not in scales:
                raise EdgekitError(
                    f"{onnx_path}: {node.name}: activation scale {got} is none of edgekit's input scales"
                )
    return {
        "fp4_weight_dq": len(weight_dq),
        "fp4_activation_q": len(act_q),
        "quantized_linears": len(uc.linear_names()),
    }


def check_fp8_export(onnx_path: Path, unified_dir: Path) -> dict:
    """FP8: every quantized linear's MatMul multiplies an E4M3 DequantizeLinear of edgekit's exact weight bytes (with
    edgekit's weight scale: Edge-LLM stores it as float16, and edgekit's is a float16 value, so it must be equal) by
    activations that went through QuantizeLinear/DequantizeLinear at the float16 of edgekit's input scale for that
    linear (followed through the graph, so a quantizer wired to another linear's scale is caught). Returns counts;
    raises on the first mismatch."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from edgekit.export.modelopt_reader import open_unified

    model, inits, base, producers = _graph(onnx_path)
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    weight_dq = {
        _hf_name(n.input[0]): n
        for n in model.graph.node
        if n.op_type == "DequantizeLinear"
        and n.input[0] in inits
        and inits[n.input[0]].data_type == onnx.TensorProto.FLOAT8E4M3FN
    }
    scalar = lambda name: float(numpy_helper.to_array(inits[name], base_dir=base)) if name in inits else None  # noqa: E731
    uc = open_unified(unified_dir)
    quantizers = set()
    for name in uc.linear_names():
        node = weight_dq.get(name)
        if node is None:
            raise EdgekitError(f"{onnx_path}: no FP8 weight DequantizeLinear for {name} (exported unquantized?)")
        if _initializer_bytes(inits[node.input[0]], base) != _tensor_bytes(uc.get(name)):
            raise EdgekitError(f"{onnx_path}: {name}: the FP8 weight differs from edgekit's bytes")
        if scalar(node.input[1]) != float(uc.get(name + "_scale")):
            raise EdgekitError(f"{onnx_path}: {name}: the weight scale differs from edgekit's")
        act_dq, act_q = _activation_qdq(node, consumers, producers)
        if act_q is None:
            raise EdgekitError(f"{onnx_path}: {name}: its activations are not quantized: the export is not FP8 W8A8")
        want = float(np.float16(float(uc.get(name[: -len("weight")] + "input_scale"))))
        if scalar(act_q.input[1]) != want or scalar(act_dq.input[1]) != want:
            raise EdgekitError(f"{onnx_path}: {name}: activation scale is not edgekit's input scale for it")
        quantizers.add(act_q.name)
    return {
        "fp8_weight_dq": len(weight_dq),
        "activation_q": len(quantizers),
        "quantized_linears": len(uc.linear_names()),
    }


_PASS_THROUGH = ("Transpose", "Cast", "Reshape", "Identity")  # ops between a (de)quantizer and its MatMul


def _activation_qdq(weight_dq, consumers: dict, producers: dict) -> tuple:
    """The activation DequantizeLinear and QuantizeLinear feeding the MatMul that consumes a weight DequantizeLinear
    ((None, None) where there are none)."""
    out = weight_dq.output[0]
    while True:
        users = consumers.get(out, [])
        if len(users) != 1:
            return None, None
        if users[0].op_type in ("MatMul", "Gemm"):
            matmul = users[0]
            break
        if users[0].op_type not in _PASS_THROUGH:
            return None, None
        out = users[0].output[0]
    x = next((i for i in matmul.input if i != out), None)
    node = producers.get(x)
    while node is not None and node.op_type in _PASS_THROUGH:
        node = producers.get(node.input[0])
    if node is None or node.op_type != "DequantizeLinear":
        return None, None
    q = producers.get(node.input[0])
    return (node, q) if q is not None and q.op_type == "QuantizeLinear" else (None, None)


def _tensor_bytes(t) -> bytes:
    """A torch tensor's bytes as stored (FP8, uint8, float32 alike)."""
    import torch

    return t.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes()


def _initializer_bytes(init, base_dir: str) -> bytes:
    """An ONNX initializer's raw bytes (FP4 packed two per byte, low nibble first), external data read in."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_tensor, uses_external_data

    t = onnx.TensorProto()
    t.CopyFrom(init)
    if uses_external_data(t):
        load_external_data_for_tensor(t, base_dir)
    return t.raw_data


def check_export(onnx_path: Path, unified_dir: Path) -> str:
    """Edge-LLM's ONNX of a unified checkpoint computes every quantized linear in edgekit's format with edgekit's
    codes and scales (the check for a silent FP16 fallback); one line saying what was found."""
    from edgekit.export.modelopt_reader import open_unified

    exported_as = open_unified(unified_dir).layout.exported_as
    if exported_as == "int4_plugin":
        r = check_int4_export(onnx_path, unified_dir)
        return f"{r['int4_plugin_nodes']} Int4GroupwiseGemmPluginV2 nodes, scales equal edgekit's"
    if exported_as == "fp4_qdq":
        r = check_nvfp4_export(onnx_path, unified_dir)
        return (
            f"{r['fp4_weight_dq']} FP4 weight DequantizeLinear (codes and FP8/FP32 scales equal edgekit's), "
            f"{r['fp4_activation_q']} FP4 activation quantizers with edgekit's input scales"
        )
    if exported_as == "fp8_qdq":
        r = check_fp8_export(onnx_path, unified_dir)
        return (
            f"{r['fp8_weight_dq']} FP8 weight DequantizeLinear (bytes and scales equal edgekit's), "
            f"{r['activation_q']} FP8 activation QuantizeLinear with edgekit's input scales"
        )
    r = check_int8_export(onnx_path, unified_dir)
    return (
        f"{r['int8_weight_dq']} INT8 weight DequantizeLinear (codes and scales equal edgekit's), "
        f"{r['activation_q']} activation QuantizeLinear with edgekit's scales"
    )
