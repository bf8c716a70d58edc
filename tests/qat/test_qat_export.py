"""`edgekit qat` end to end on the tiny checkpoint: the trained codes reach the GGUF and the ModelOpt unified
checkpoint bit for bit (no second rounding), `build` ships them, and bad requests fail with one line."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.cli import main

QUICK = ["--n", "6", "--batch", "2", "--block-epochs", "1", "--steps", "3", "--checkpoint-every", "2"]


def run_qat(ckpt: Path, out: Path, fmt: str, init: str = "rtn", extra: tuple = ()) -> Path:
    assert (
        main(
            [
                "qat",
                str(ckpt),
                "--format",
                fmt,
                "--init",
                init,
                *QUICK,
                *extra,
                "--cache",
                str(out.parent / "calib"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    return out


def trained_weights(qat_dir: Path) -> dict[str, torch.Tensor]:
    """What training computed in its last forward pass: the grid's dequantization of the saved codes and params
    (tests/qat/test_fake_quant.py pins that this equals FakeQuantLinear.weight() bit for bit)."""
    from edgekit.quant.calib_cache import load_layer
    from edgekit.quant.grids import dequantize_weight

    out = {}
    layers = json.loads((qat_dir / "edgekit-qat.json").read_text())["layers"]  # each file's sha256
    for rel, digest in sorted(layers.items()):
        out.update({name: dequantize_weight(qw) for name, qw in load_layer(qat_dir / rel, digest=digest)[0].items()})
    return out


@pytest.fixture(scope="module")
def qat_q4k(tiny_ckpt, tmp_path_factory) -> Path:
    return run_qat(tiny_ckpt, tmp_path_factory.mktemp("qat") / "q4k", "gguf:q4_k", "rtn")


def _gguf_linears(path: Path, ckpt: Path, fmt: str) -> dict[str, np.ndarray]:
    from edgekit.export.gguf import decoder_tensor_plan, read_tensor
    from edgekit.model.checkpoint import open_checkpoint

    plan = decoder_tensor_plan(open_checkpoint(ckpt), fmt)
    return {
        p.source: read_tensor(path, p.gguf_name)
        for p in plan
        if ".layers." in p.source and p.source.endswith("proj.weight")
    }


@pytest.mark.slow
def test_build_packs_the_trained_q4_k_codes_bit_for_bit(qat_q4k, tiny_ckpt, tmp_path):
    from edgekit.bundle.manifest import verify_bundle
    from edgekit.quant.grids import dequantize_weight, fit_and_quantize
    from edgekit.model.checkpoint import open_checkpoint

    manifest = json.loads((qat_q4k / "edgekit-qat.json").read_text())
    assert manifest["format"] == "gguf:q4_k" and manifest["init"] == "rtn"
    bundle = tmp_path / "bundle"
    assert (
        main(["build", str(qat_q4k), "--target", "cpu", "--precision", "int4", "--method", "rtn", "--out", str(bundle)])
        == 0
    )
    assert verify_bundle(bundle).ok
    assert json.loads((bundle / "edgekit.json").read_text())["parts"]["decoder"]["method"] == "qat from rtn"
    got = _gguf_linears(bundle / "decoder" / "decoder.gguf", qat_q4k, "gguf:q4_k")
    want = trained_weights(qat_q4k)
    assert set(got) == set(want) and len(want) == 7 * 2
    ck = open_checkpoint(tiny_ckpt)
    moved = 0
    for name, w in want.items():
        np.testing.assert_array_equal(got[name], w.numpy(), err_msg=name)  # the gguf package's dequantizer
        moved += not torch.equal(w, dequantize_weight(fit_and_quantize("gguf:q4_k", ck.get(name).float())))
    assert moved == len(want)  # every linear differs from its RTN init: training changed it


@pytest.mark.slow
def test_quantize_packs_trained_q4_0_codes_and_refuses_another_format(tiny_ckpt, tmp_path):
    from edgekit.errors import EdgekitError
    from edgekit.bundle.quantize import QuantizeConfig, quantize
    from edgekit.quant.formats import parse

    qat = run_qat(tiny_ckpt, tmp_path / "q40", "gguf:q4_0", "gptq")
    out = tmp_path / "d.gguf"
    assert (
        main(
            [
                "quantize",
                str(qat),
                "--format",
                "gguf:q4_0",
                "--evaluate",
                "0",
                "--cache",
                str(tmp_path / "c"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    got = _gguf_linears(out, qat, "gguf:q4_0")
    for name, w in trained_weights(qat).items():
        np.testing.assert_array_equal(got[name], w.numpy(), err_msg=name)
    with pytest.raises(EdgekitError, match="trained for gguf:q4_0"):
        quantize(qat, tmp_path / "e.gguf", QuantizeConfig(parse("gguf:q4_k"), evaluate=0), tmp_path / "c")


@pytest.mark.slow
def test_qat_on_nvfp4_packs_the_trained_codes_bit_for_bit(tiny_ckpt, tmp_path):
    """FP4 trains its latent weights on E2M1's levels (its scales are bytes: phase 2 has nothing to train and is
    skipped), and the GGUF holds what training computed, read back by the gguf package's NVFP4 dequantizer."""
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.quant.grids import dequantize_weight, fit_and_quantize

    qat = run_qat(tiny_ckpt, tmp_path / "nvfp4", "gguf:nvfp4", "rtn")
    out = tmp_path / "d.gguf"
    assert (
        main(
            [
                "quantize",
                str(qat),
                "--format",
                "gguf:nvfp4",
                "--evaluate",
                "0",
                "--cache",
                str(tmp_path / "c"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    got = _gguf_linears(out, qat, "gguf:nvfp4")
    want = trained_weights(qat)
    assert set(got) == set(want) and len(want) == 7 * 2
    ck = open_checkpoint(tiny_ckpt)
    moved = 0
    for name, w in want.items():
        np.testing.assert_array_equal(got[name], w.numpy(), err_msg=name)
        moved += not torch.equal(w, dequantize_weight(fit_and_quantize("gguf:nvfp4", ck.get(name).float())))
    assert moved == len(want)  # training moved codes in every linear


@pytest.mark.slow
def test_unified_w4a16_holds_the_trained_codes_bit_for_bit(tiny_ckpt, tmp_path):
    from edgekit.export.modelopt_reader import open_unified

    qat = run_qat(tiny_ckpt, tmp_path / "w4", "nvidia:w4a16:g64", "awq")
    out = tmp_path / "unified"
    assert (
        main(
            [
                "quantize",
                str(qat),
                "--format",
                "nvidia:w4a16:g64",
                "--evaluate",
                "0",
                "--cache",
                str(tmp_path / "c"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    uc = open_unified(out)
    want = trained_weights(qat)
    assert set(uc.linear_names()) == set(want)
    for name, w in want.items():
        assert torch.equal(uc.dequantized(name), w), name


@pytest.mark.slow
def test_qat_on_fp8_keeps_the_inits_input_scales_and_packs_the_trained_codes(tiny_ckpt, tmp_path):
    """FP8 (W8A8) trains its E4M3 codes (the per-tensor scale stays the init's); the unified checkpoint holds what
    training computed and the input scales the PTQ init measured on full-precision activations (an FP8 checkpoint
    without them is refused: Edge-LLM would quantize activations with scale 1)."""
    from edgekit.export.modelopt_reader import open_unified
    from edgekit.quant.calibrate import QuantConfig, calibrate

    qat = run_qat(tiny_ckpt, tmp_path / "fp8", "nvidia:fp8", "gptq")
    out = tmp_path / "unified"
    assert (
        main(
            [
                "quantize",
                str(qat),
                "--format",
                "nvidia:fp8",
                "--evaluate",
                "0",
                "--cache",
                str(tmp_path / "c"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    uc = open_unified(out)
    want = trained_weights(qat)
    assert uc.algo == "FP8" and set(uc.linear_names()) == set(want) and len(want) == 7 * 2
    init = calibrate(tiny_ckpt, QuantConfig(method="gptq", grid="nvidia:fp8", n_samples=6), tmp_path / "calib")
    for name, w in want.items():
        assert torch.equal(uc.dequantized(name), w), name
        module = name[: -len(".weight")]
        assert float(uc.get(module + ".input_scale")) == float(init.input_scales[module]) > 0


def test_bad_requests_fail_with_one_line(tiny_ckpt, qat_q4k, tmp_path, capfd):
    from edgekit.model.checkpoint import sha256_file

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    cases = [
        (["qat", str(tiny_ckpt), "--out", str(busy)], "not empty"),
        (["qat", str(qat_q4k), "--out", str(tmp_path / "x")], "already a QAT checkpoint"),
        (["qat", str(tiny_ckpt), "--format", "gguf:f16", "--out", str(tmp_path / "y")], "float format"),
        (["qat", str(tiny_ckpt), "--init", "smoothquant", "--out", str(tmp_path / "z")], "--init"),
    ]
    capfd.readouterr()
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = " ".join(capfd.readouterr().err.split())
        assert message in err and "Traceback" not in err, (argv, err)
    assert (busy / "notes.txt").read_text() == "mine"
    tampered = tmp_path / "tampered"
    shutil.copytree(qat_q4k, tampered)
    layer = tampered / "qat" / "layer_0001.safetensors"
    os.chmod(layer, 0o644)
    blob = bytearray(layer.read_bytes())
    blob[-3] ^= 0x10
    layer.write_bytes(bytes(blob))
    assert sha256_file(layer) != sha256_file(qat_q4k / "qat" / "layer_0001.safetensors")
    assert (
        main(
            [
                "quantize",
                str(tampered),
                "--format",
                "gguf:q4_k",
                "--evaluate",
                "0",
                "--cache",
                str(tmp_path / "c"),
                "--out",
                str(tmp_path / "t.gguf"),
            ]
        )
        == 2
    )
    assert "changed since it was written" in " ".join(capfd.readouterr().err.split())
    assert not (tmp_path / "t.gguf").exists()


@pytest.mark.slow
def test_edge_llm_exports_a_qat_checkpoints_int4_codes(tiny_ckpt, tmp_path):
    """The orin build of a W4A16 QAT checkpoint: Edge-LLM's exporter makes every linear an INT4 plugin node with
    the trained scales (check_int4_export compares them with the unified checkpoint's, bit for bit)."""
    from edgekit.bundle.edgellm import check_int4_export, find_exporter
    from edgekit.bundle.manifest import verify_bundle
    from edgekit.export.modelopt_reader import open_unified

    if find_exporter() is None:
        if os.environ.get("EDGEKIT_REQUIRE_EDGELLM") == "1":
            pytest.fail("tensorrt-edgellm-export not found: run scripts/setup_edgellm_venv.sh")
        pytest.skip("tensorrt-edgellm-export not installed (scripts/setup_edgellm_venv.sh)")
    qat = run_qat(tiny_ckpt, tmp_path / "w4", "nvidia:w4a16", "rtn")
    bundle = tmp_path / "orin"
    assert main(["build", str(qat), "--target", "orin", "--precision", "int4", "--out", str(bundle)]) == 0
    assert verify_bundle(bundle).ok
    unified = bundle / "decoder" / "unified"
    uc = open_unified(unified)
    for name, w in trained_weights(qat).items():
        assert torch.equal(uc.dequantized(name), w), name
    counts = check_int4_export(bundle / "decoder" / "edgellm_onnx" / "llm" / "model.onnx", unified)
    assert counts["quantized_linears"] == 7 * 2
