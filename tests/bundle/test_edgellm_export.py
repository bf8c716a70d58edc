"""NVIDIA's own exporter accepts edgekit's unified INT4 checkpoint (TensorRT Edge-LLM 0.11.0, run on the CPU
from its own venv: scripts/setup_edgellm_venv.sh). CI sets EDGEKIT_REQUIRE_EDGELLM=1, so a missing exporter
fails there instead of skipping."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from edgekit.bundle.manifest import MANIFEST, verify_bundle
from edgekit.cli import main
from edgekit.bundle.edgellm import INT4_PLUGIN, check_int4_export, find_exporter, run_export
from edgekit.errors import EdgekitError


@pytest.fixture(scope="module")
def exporter() -> Path:
    exe = find_exporter()
    if exe is None:
        if os.environ.get("EDGEKIT_REQUIRE_EDGELLM") == "1":
            pytest.fail("tensorrt-edgellm-export not found: run scripts/setup_edgellm_venv.sh")
        pytest.skip("tensorrt-edgellm-export not installed (scripts/setup_edgellm_venv.sh)")
    return exe


@pytest.fixture(scope="module")
def orin_bundle(small_ckpt, exporter, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("trt") / "orin-int4"
    assert (
        main(
            [
                "build",
                str(small_ckpt),
                "--target",
                "orin",
                "--precision",
                "int4",
                "--method",
                "awq",
                "--calib-n",
                "8",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def test_edge_llm_exports_every_linear_as_int4_plugin_with_edgekits_scales(orin_bundle, small_ckpt):
    import onnx

    report = verify_bundle(orin_bundle)
    assert report.ok, report.errors
    m = json.loads((orin_bundle / MANIFEST).read_text())
    assert m["target"]["backend"] == "tensorrt"
    assert m["parts"]["decoder"]["format"] == "modelopt-unified" and m["parts"]["decoder"]["quant_algo"] == "W4A16_AWQ"
    assert m["parts"]["decoder_onnx"]["format"] == "edgellm-onnx-dir"
    onnx_path = orin_bundle / "decoder" / "edgellm_onnx" / "llm" / "model.onnx"
    model = onnx.load(str(onnx_path), load_external_data=False)
    plugins = [n for n in model.graph.node if (n.domain, n.op_type) == INT4_PLUGIN]
    layers = json.loads((small_ckpt / "config.json").read_text())
    layers = layers.get("text_config", layers)["num_hidden_layers"]
    assert len(plugins) == 7 * layers  # q k v o gate up down, every layer
    counts = check_int4_export(onnx_path, orin_bundle / "decoder" / "unified")  # scales equal, no float MatMul
    assert counts["quantized_linears"] == 7 * layers
    script = (orin_bundle / "build-engines.sh").read_text()
    assert "edgellm_onnx" in script and 'EXPECTED_SM="87"' in script


def test_check_catches_a_float_export(orin_bundle, small_ckpt, exporter, tmp_path):
    """Planted bug: the exporter's ONNX of the unquantized checkpoint (what a silent FP16 fallback gives)."""
    onnx_path = run_export(exporter, small_ckpt, tmp_path / "fp16", tmp_path / "log.txt")
    with pytest.raises(EdgekitError, match="float MatMul|no Int4GroupwiseGemmPluginV2"):
        check_int4_export(onnx_path, orin_bundle / "decoder" / "unified")


def test_tampered_scale_in_edge_llm_onnx_fails_verify(orin_bundle, tmp_path):
    import shutil

    bad = tmp_path / "bundle"
    shutil.copytree(orin_bundle, bad)
    data = bad / "decoder" / "edgellm_onnx" / "llm" / "model.onnx.data"
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    data.write_bytes(bytes(blob))
    report = verify_bundle(bad)
    assert not report.ok and any("model.onnx.data" in e for e in report.errors)


def test_w8a8_smoothquant_bundle_exports_as_int8_qdq(tiny_ckpt, exporter, tmp_path):
    """W8A8: Edge-LLM keeps edgekit's INT8 codes as they are (DequantizeLinear) and quantizes activations with
    edgekit's per-tensor scales."""
    from edgekit.bundle.edgellm import check_int8_export

    out = tmp_path / "w8a8"
    # the vision tower in FP16: its INT8 calibration (17 s of each build here) is tested with the vision graphs
    build = [
        "build",
        str(tiny_ckpt),
        "--target",
        "thor",
        "--precision",
        "w8a8",
        "--method",
        "smoothquant",
        "--calib-n",
        "4",
        "--vision-precision",
        "fp16",
    ]
    assert main([*build, "--out", str(out)]) == 0
    report = verify_bundle(out)
    assert report.ok, report.errors
    m = json.loads((out / MANIFEST).read_text())
    assert m["parts"]["decoder"]["quant_algo"] == "W8A8_SQ_PER_CHANNEL" and m["target"]["gpu_arch"] == "sm_110"
    counts = check_int8_export(out / "decoder" / "edgellm_onnx" / "llm" / "model.onnx", out / "decoder" / "unified")
    assert counts["int8_weight_dq"] == counts["quantized_linears"] == 14 and counts["activation_q"] >= 4 * 2
    # a second clean build, Edge-LLM's export included, is byte-identical
    again = tmp_path / "again"
    assert main([*build, "--out", str(again)]) == 0
    assert (again / MANIFEST).read_bytes() == (out / MANIFEST).read_bytes()  # lists every artifact's sha256


def _verified_thor_bundle(
    ckpt: Path, out: Path, precision: str, quant_algo: str, method: tuple = ("--method", "rtn")
) -> Path:
    """A Thor bundle at `precision` on the default (TensorRT) backend (round to nearest unless `method` says): it
    verifies and its manifest records the decoder's quant_algo."""
    assert (
        main(
            [
                "build",
                str(ckpt),
                "--target",
                "thor",
                "--precision",
                precision,
                *method,
                "--calib-n",
                "4",
                "--vision-precision",
                "fp16",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = verify_bundle(out)
    assert report.ok, report.errors
    m = json.loads((out / MANIFEST).read_text())
    assert m["target"]["backend"] == "tensorrt" and m["parts"]["decoder"]["quant_algo"] == quant_algo
    return out


def test_thor_nvfp4_bundle_is_modelopt_nvfp4_and_edge_llm_keeps_its_bytes(tiny_ckpt, exporter, tmp_path):
    """Thor's default backend builds --precision nvfp4 as a ModelOpt NVFP4 (W4A4) unified checkpoint: E2M1 codes,
    E4M3 scales per 16 columns, an FP32 scale per tensor and a calibrated input scale per linear (round to nearest
    still reads the samples for those); Edge-LLM's exporter dequantizes edgekit's exact bytes and quantizes the
    activations with edgekit's input scales; verify passes and the manifest records NVFP4."""
    from edgekit.bundle.edgellm import check_nvfp4_export
    from edgekit.export.modelopt_reader import open_unified

    out = _verified_thor_bundle(tiny_ckpt, tmp_path / "nvfp4", "nvfp4", "NVFP4")
    unified = out / "decoder" / "unified"
    counts = check_nvfp4_export(out / "decoder" / "edgellm_onnx" / "llm" / "model.onnx", unified)
    assert counts["fp4_weight_dq"] == counts["quantized_linears"] == 14 and counts["fp4_activation_q"] >= 4 * 2
    uc = open_unified(unified)
    scales = [float(uc.get(n[: -len("weight")] + "input_scale")) for n in uc.linear_names()]
    assert len(set(scales)) > 2 and all(s > 0 for s in scales)  # calibrated, per linear group

    # weight-only NVFP4 is what Edge-LLM would silently run as W4A4 with input scale 1: the check refuses it
    import shutil

    from edgekit.bundle.edgellm import run_export
    from edgekit.quant.calibrate import QuantConfig, calibrate
    from edgekit.export.modelopt_unified import write_unified_checkpoint

    res = calibrate(tiny_ckpt, QuantConfig(method="rtn", grid="nvidia:nvfp4", n_samples=4), tmp_path / "cache")
    res.input_scales.clear()
    weight_only = tmp_path / "w4a16-nvfp4"
    write_unified_checkpoint(tiny_ckpt, weight_only, res)
    assert open_unified(weight_only).algo == "W4A16_NVFP4"
    onnx_path = run_export(exporter, weight_only, tmp_path / "onnx", tmp_path / "export.log")
    with pytest.raises(EdgekitError, match="runs weight-only NVFP4 as W4A4"):
        check_nvfp4_export(onnx_path, weight_only)
    shutil.rmtree(tmp_path / "onnx")


def test_fp8_bundle_is_modelopt_fp8_and_edge_llm_keeps_its_bytes(tiny_ckpt, exporter, tmp_path):
    """--precision fp8 on the TensorRT backend (Thor here; x86-cuda too), by default SmoothQuant's migration (folded
    into the norms) then GPTQ, is a ModelOpt FP8 (W8A8) unified checkpoint:
    Edge-LLM's exporter dequantizes edgekit's exact E4M3 bytes with edgekit's weight scale and quantizes every
    linear's activations to E4M3 with edgekit's calibrated input scale; verify passes and the manifest records FP8.
    A bundle whose ONNX quantizes with another activation scale is refused."""
    import onnx

    from edgekit.bundle.edgellm import check_fp8_export
    from edgekit.export.modelopt_reader import open_unified

    out = _verified_thor_bundle(tiny_ckpt, tmp_path / "fp8", "fp8", "FP8", method=())  # the default: smoothquant
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["parts"]["decoder"]["method"] == "smoothquant"
    unified, onnx_path = out / "decoder" / "unified", out / "decoder" / "edgellm_onnx" / "llm" / "model.onnx"
    counts = check_fp8_export(onnx_path, unified)
    assert counts["fp8_weight_dq"] == counts["quantized_linears"] == 14 and counts["activation_q"] >= 4 * 2
    uc = open_unified(unified)
    scales = [float(uc.get(n[: -len("weight")] + "input_scale")) for n in uc.linear_names()]
    assert len(set(scales)) > 2 and all(s > 0 for s in scales)  # calibrated, per linear group

    # the down projection's activations quantized with the o projection's scale: a graph whose every byte is
    # edgekit's but one reference moved
    down, o_proj = "model.layers.1.mlp.down_proj.input_scale", "model.layers.1.self_attn.o_proj.input_scale"
    assert float(uc.get(down)) != float(uc.get(o_proj))
    model = onnx.load(str(onnx_path), load_external_data=False)
    node = next(n for n in model.graph.node if n.op_type == "QuantizeLinear" and n.input[1].endswith(down))
    node.input[1] = node.input[1].replace(down, o_proj)
    onnx.save(model, str(onnx_path))
    with pytest.raises(EdgekitError, match="activation scale is not edgekit's"):
        check_fp8_export(onnx_path, unified)
