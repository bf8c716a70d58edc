"""ModelOpt unified checkpoints: ModelOpt's INT4 byte layout, exact round trip of edgekit's codes,
logits of the dequantized checkpoint vs the fake-quantized model, W8A8 SmoothQuant, and verify failures."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from conftest import seed_for

from edgekit.errors import EdgekitError
from edgekit.quant import modelopt_layout as L
from edgekit.export.modelopt_reader import open_unified, verify_unified_checkpoint
from edgekit.export.modelopt_unified import write_unified_checkpoint
from edgekit.quant.calibrate import QuantConfig, calibrate


def _seed() -> int:
    return seed_for("test_modelopt_unified")


def test_int4_packing_is_modelopts_byte_layout():
    gen = torch.Generator().manual_seed(_seed())
    codes = torch.randint(-8, 8, (6, 37), generator=gen, dtype=torch.int8)
    codes[0, 0], codes[1, 0] = -8, 7  # both ends of the range
    packed = L.pack_int4(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (3, 37)
    for r in range(3):  # byte (r, c): low nibble = row 2r, high nibble = row 2r+1, two's complement
        for c in range(37):
            lo, hi = int(codes[2 * r, c]) & 0xF, int(codes[2 * r + 1, c]) & 0xF
            assert int(packed[r, c]) == lo | (hi << 4)
    assert int(packed[0, 0]) == 0x78
    assert torch.equal(L.unpack_int4(packed), codes)
    with pytest.raises(ValueError, match="odd"):
        L.pack_int4(codes[:5])


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids)).logits[0]


def _load_unified_into(model, unified):
    from edgekit.quant.evaluate import _hf_name

    state = model.state_dict()
    with torch.no_grad():
        for name, t in open_unified(unified).float_state():
            state[_hf_name(name)].copy_(t)


def _assert_unified_gives_fake_quant_logits(tiny_ckpt, result, unified, length: int) -> None:
    """transformers with the unified checkpoint's dequantized weights gives the fake-quantized weights' logits, within
    1e-3 of their range, and the comparison can tell quantized from float weights (activations as they are: a W4A4
    result's activation fake quantization is not part of the checkpoint's weights)."""
    from edgekit.quant.evaluate import apply_result, load_reference

    ids = torch.randint(0, 1000, (1, length), generator=torch.Generator().manual_seed(_seed()))
    fp = load_reference(tiny_ckpt)
    ref_fp = _logits(fp, ids)
    for handle in apply_result(fp, result):
        handle.remove()
    fake = _logits(fp, ids)
    model = load_reference(tiny_ckpt)
    _load_unified_into(model, unified)
    got = _logits(model, ids)
    tol = 1e-3 * fake.abs().max()
    assert (got - fake).abs().max() <= tol
    assert (ref_fp - fake).abs().max() > tol


@pytest.fixture(scope="module")
def awq_result(tiny_ckpt, tmp_path_factory):
    return calibrate(
        tiny_ckpt,
        QuantConfig(method="awq", grid="nvidia:w4a16", n_samples=4, seed=_seed() % 1000),
        tmp_path_factory.mktemp("cache"),
    )


def test_w4a16_unified_round_trips_and_matches_fake_quant_logits(tiny_ckpt, awq_result, tmp_path):
    out = tmp_path / "unified"
    summary = write_unified_checkpoint(tiny_ckpt, out, awq_result, shard_bytes=3 << 20)  # force several shards
    assert summary["shards"] > 1 and (out / "model.safetensors.index.json").is_file()
    assert "codes+scales match the quantizer" in verify_unified_checkpoint(out)
    hq = json.loads((out / "hf_quant_config.json").read_text())["quantization"]
    assert hq["quant_algo"] == "W4A16_AWQ" and hq["group_size"] == 128 and hq["has_zero_point"] is False
    assert set(hq["exclude_modules"]) == {"lm_head", "visual*"}
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    assert qc["quant_method"] == "modelopt" and qc["quant_algo"] == "W4A16_AWQ"
    uc = open_unified(out)
    name = "model.layers.1.mlp.down_proj.weight"
    assert uc.get(name).dtype == torch.uint8 and uc.get(name).shape == (512 // 2, 1024)
    assert uc.get(name + "_scale").dtype == torch.float32 and uc.get(name + "_scale").shape == (512, 1024 // 128)
    assert uc.get("lm_head.weight").dtype == torch.bfloat16  # excluded modules are copied as they are
    _assert_unified_gives_fake_quant_logits(tiny_ckpt, awq_result, out, 41)


def test_w8a8_smoothquant_unified(tiny_ckpt, tmp_path):
    from edgekit.quant.grids import dequantize_weight

    res = calibrate(tiny_ckpt, QuantConfig(method="smoothquant", grid="int8:channel", n_samples=4), tmp_path / "cache")
    out = tmp_path / "unified"
    write_unified_checkpoint(tiny_ckpt, out, res)
    assert "W8A8_SQ_PER_CHANNEL" in verify_unified_checkpoint(out)
    uc = open_unified(out)
    for name, qw in res.quantized.items():
        w, s = uc.get(name), uc.get(name + "_scale")
        assert w.dtype == torch.int8 and s.shape == (qw.shape[0],)
        assert torch.equal(uc.dequantized(name), dequantize_weight(qw))
        iscale = uc.get(name[: -len("weight")] + "input_scale")
        assert iscale.dim() == 0 and float(iscale) == pytest.approx(
            float(res.input_scales[name[: -len(".weight")]]), rel=0, abs=0
        )
    for name, w in res.folded.items():  # the SmoothQuant scales live in the norms, exactly
        assert torch.equal(uc.get(name), w.float())


def _rewrite(path, name, fn):
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(path))
    tensors[name] = fn(tensors[name])
    save_file(tensors, str(path), metadata={"format": "pt"})


def test_verify_catches_tampering(tiny_ckpt, awq_result, tmp_path):
    good = tmp_path / "good"
    write_unified_checkpoint(tiny_ckpt, good, awq_result)
    name = "model.layers.0.self_attn.k_proj.weight"

    bad = tmp_path / "flipped"
    shutil.copytree(good, bad)

    def flip(t):
        t = t.clone()
        t[3, 5] ^= 0x01  # one nibble of one row changes by one code
        return t

    _rewrite(bad / "model.safetensors", name, flip)
    with pytest.raises(EdgekitError, match="differ from the quantizer"):
        verify_unified_checkpoint(bad)

    bad = tmp_path / "unquantized"
    shutil.copytree(good, bad)
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(bad / "model.safetensors"))
    del tensors[name + "_scale"]
    save_file(tensors, str(bad / "model.safetensors"))
    with pytest.raises(EdgekitError, match="missing"):
        verify_unified_checkpoint(bad)

    bad = tmp_path / "zero_point"
    shutil.copytree(good, bad)
    cfg = json.loads((bad / "hf_quant_config.json").read_text())
    cfg["quantization"]["has_zero_point"] = True
    (bad / "hf_quant_config.json").write_text(json.dumps(cfg))
    with pytest.raises(EdgekitError, match="symmetric"):
        verify_unified_checkpoint(bad)


def test_tensorrt_build_refuses_what_edge_llm_cannot_run(small_ckpt, tmp_path):
    from edgekit.bundle.build import BuildConfig, build_bundle

    with pytest.raises(EdgekitError, match="w8a8"):
        build_bundle(small_ckpt, tmp_path / "b", BuildConfig(target="orin", precision="int8", backend="tensorrt"))
    with pytest.raises(EdgekitError, match="SmoothQuant"):
        build_bundle(
            small_ckpt, tmp_path / "b", BuildConfig(target="orin", precision="w8a8", method="gptq", backend="tensorrt")
        )
    assert not (tmp_path / "b").exists()  # refused before any work


def test_smoothquant_is_the_tensorrt_default_where_activations_are_quantized():
    """W8A8, FP8 and NVFP4 on TensorRT quantize activations: their builds smooth first by default (then RTN per channel
    for W8A8, GPTQ for FP8/NVFP4); weight-only builds stay GPTQ, and smoothquant onto them is refused in one line."""
    from edgekit.bundle.build_config import BuildConfig, decoder_calibration, default_method, resolve
    from edgekit.targets import get_target

    def unified_quant_config(config):
        return decoder_calibration(config, "tensorrt")

    assert [default_method(p, "tensorrt") for p in ("w8a8", "fp8", "nvfp4", "int4", "fp16")] == [
        "smoothquant",
        "smoothquant",
        "smoothquant",
        "gptq",
        "rtn",
    ]
    assert default_method("nvfp4", "gguf") == default_method("int4", "gguf") == "gptq"
    for precision in ("fp8", "nvfp4"):
        q = unified_quant_config(BuildConfig(target="thor", precision=precision, backend="tensorrt"))
        assert (q.method, q.alpha, q.format.quantizes_activations) == ("smoothquant", 0.5, True)
    with pytest.raises(EdgekitError, match="whose activations TensorRT quantizes"):
        unified_quant_config(BuildConfig(target="thor", precision="int4", method="smoothquant", backend="tensorrt"))
    # the build decides all of it once, before any stage: method, format, calibration, the unified identity
    build = resolve(BuildConfig(target="thor", precision="nvfp4", backend="tensorrt"), get_target("thor"))
    assert (build.config.method, build.decoder.name, build.calibration.method) == (
        "smoothquant",
        "nvidia:nvfp4",
        "smoothquant",
    )
    assert build.unified_identity == {"quant_algo": "NVFP4"} and build.needs_samples
    w4 = resolve(BuildConfig(target="thor", precision="int4", backend="tensorrt", group_size=64), get_target("thor"))
    assert w4.unified_identity == {"quant_algo": "W4A16_AWQ", "group_size": 64} and w4.config.method == "gptq"
    f16 = resolve(BuildConfig(target="thor", precision="fp16", backend="tensorrt"), get_target("thor"))
    assert f16.decoder is None and f16.calibration is None and not f16.needs_samples and f16.unified_identity == {}
    with pytest.raises(EdgekitError, match="whose activations TensorRT quantizes"):  # before any stage, not in one
        resolve(BuildConfig(target="cpu", precision="int4", method="smoothquant"), get_target("cpu"))
    with pytest.raises(EdgekitError, match="no 'gguf' backend"):
        resolve(BuildConfig(target="drive-thor", precision="int4", backend="gguf"), get_target("drive-thor"))


def test_quantize_cli_writes_unified_checkpoint(tiny_ckpt, tmp_path, capsys):
    from edgekit.cli import main

    out = tmp_path / "w4a16"
    assert (
        main(
            [
                "quantize",
                str(tiny_ckpt),
                "--method",
                "gptq",
                "--format",
                "nvidia:w4a16",
                "--n",
                "2",
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
    assert "codes+scales match the quantizer" in verify_unified_checkpoint(out)
    assert json.loads((out / "quantization.json").read_text())["method"] == "gptq"
    capsys.readouterr()
    assert main(["quantize", str(tiny_ckpt), "--format", "nvidia:w4a16", "--out", str(tmp_path / "d.gguf")]) == 2
    assert "unified checkpoint directory" in capsys.readouterr().err


def test_w8a16_gptq_unified(tiny_ckpt, tmp_path):
    """INT8 per-channel without activation scales is ModelOpt's W8A16 (TensorRT-LLM runs it)."""
    from edgekit.quant.grids import dequantize_weight

    res = calibrate(tiny_ckpt, QuantConfig(method="gptq", grid="int8:channel", n_samples=2), tmp_path / "cache")
    out = tmp_path / "unified"
    write_unified_checkpoint(tiny_ckpt, out, res)
    assert verify_unified_checkpoint(out).startswith("W8A16")
    uc = open_unified(out)
    assert not any(n.endswith("input_scale") for n in uc.where)
    name = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(uc.dequantized(name), dequantize_weight(res.quantized[name]))


def _e2m1_reference(packed: torch.Tensor, weight_scale: torch.Tensor, weight_scale_2: torch.Tensor) -> torch.Tensor:
    """NVFP4 dequantization as TensorRT Edge-LLM's nvfp4_dequantize documents it, written out independently: two E2M1
    nibbles per byte (low = even column; bit 3 the sign, bits 0-2 index 0, .5, 1, 1.5, 2, 3, 4, 6), times the FP8 block
    scale of its 16 columns, times the per-tensor FP32 scale."""
    mags = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
    p = packed.to(torch.int64)
    nib = torch.stack([p & 0xF, p >> 4], dim=-1).reshape(p.shape[0], -1)
    values = torch.where(nib >= 8, -mags[nib & 7], mags[nib & 7])
    block = weight_scale.to(torch.float32).repeat_interleave(16, dim=1)
    return values * block * weight_scale_2.to(torch.float32)


@pytest.fixture(scope="module")
def nvfp4_result(tiny_ckpt, tmp_path_factory):
    return calibrate(
        tiny_ckpt,
        QuantConfig(method="gptq", grid="nvidia:nvfp4", n_samples=4, seed=_seed() % 1000),
        tmp_path_factory.mktemp("cache"),
    )


def test_nvfp4_unified_is_modelopts_layout_and_matches_fake_quant_logits(tiny_ckpt, nvfp4_result, tmp_path):
    """GPTQ onto ModelOpt's NVFP4 grid (E2M1 codes, E4M3 scales per 16 columns, one FP32 scale per tensor) records each
    linear's activation scale too, so the unified checkpoint is NVFP4 (W4A4): the tensors are the layout Edge-LLM
    reads (an independent decoder of its documented rule gives edgekit's values), verify proves the packing, and
    transformers with the dequantized weights gives the fake-quantized model's logits."""
    from edgekit.quant.grids import dequantize_weight

    out = tmp_path / "unified"
    write_unified_checkpoint(tiny_ckpt, out, nvfp4_result, shard_bytes=3 << 20)
    summary = verify_unified_checkpoint(out)
    assert summary.startswith("NVFP4,") and "match the quantizer" in summary
    hq = json.loads((out / "hf_quant_config.json").read_text())["quantization"]
    assert hq["quant_algo"] == "NVFP4" and hq["group_size"] == 16
    assert json.loads((out / "config.json").read_text())["quantization_config"]["quant_algo"] == "NVFP4"
    uc = open_unified(out)
    for name, qw in nvfp4_result.quantized.items():
        w, s, s2 = uc.get(name), uc.get(name + "_scale"), uc.get(name + "_scale_2")
        rows, cols = qw.shape
        assert (w.dtype, tuple(w.shape)) == (torch.uint8, (rows, cols // 2))
        assert (s.dtype, tuple(s.shape)) == (torch.float8_e4m3fn, (rows, cols // 16))
        assert (s2.dtype, s2.dim()) == (torch.float32, 0) and float(s2) > 0
        iscale = uc.get(name[: -len("weight")] + "input_scale")  # the activations' amax / (6 * 448)
        assert iscale.dim() == 0 and float(iscale) == float(nvfp4_result.input_scales[name[: -len(".weight")]]) > 0
        want = dequantize_weight(qw)
        assert torch.equal(uc.dequantized(name), want)
        assert torch.allclose(_e2m1_reference(w, s, s2), want, rtol=2**-22, atol=0)  # one float rounding apart
    _assert_unified_gives_fake_quant_logits(tiny_ckpt, nvfp4_result, out, 37)

    bad = tmp_path / "flipped"
    shutil.copytree(out, bad)
    name = "model.layers.0.self_attn.k_proj.weight"
    shard = bad / open_unified(bad).where[name].name

    def flip(t):
        t = t.clone()
        t[3, 5] ^= 0x01
        return t

    _rewrite(shard, name, flip)
    with pytest.raises(EdgekitError, match="differ from the quantizer"):
        verify_unified_checkpoint(bad)


def _e4m3_reference(byte: int) -> float:
    """An E4M3 byte's value from the OCP FP8 rule, written out independently of torch: sign, 4 exponent bits (bias 7),
    3 mantissa bits, subnormals at exponent 0; 0x7F/0xFF are NaN."""
    sign = -1.0 if byte & 0x80 else 1.0
    e, m = (byte >> 3) & 0xF, byte & 0x7
    if e == 0xF and m == 0x7:
        return float("nan")
    return sign * (m / 8 * 2.0**-6 if e == 0 else (1 + m / 8) * 2.0 ** (e - 7))


def test_fp8_unified_is_modelopts_layout_and_matches_fake_quant_logits(tiny_ckpt, tmp_path):
    """GPTQ onto ModelOpt's FP8 grid (E4M3 weights under one scale per tensor) records each linear's activation scale
    (amax / 448), so the checkpoint is FP8 (W8A8): float8_e4m3fn weights whose bytes are edgekit's codes, a 0-d FP32
    weight scale that is a float16 value (Edge-LLM casts it to float16) at or above amax / 448, every value equal to
    the OCP E4M3 rule's times the scale; verify proves the packing, refuses a NaN byte, and transformers with the
    dequantized weights gives the fake-quantized model's logits."""
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.quant.grids import dequantize_weight

    source = open_checkpoint(tiny_ckpt)
    res = calibrate(
        tiny_ckpt, QuantConfig(method="gptq", grid="nvidia:fp8", n_samples=4, seed=_seed() % 1000), tmp_path / "cache"
    )
    out = tmp_path / "unified"
    write_unified_checkpoint(tiny_ckpt, out, res, shard_bytes=3 << 20)
    summary = verify_unified_checkpoint(out)
    assert summary.startswith("FP8,") and "match the quantizer" in summary
    hq = json.loads((out / "hf_quant_config.json").read_text())["quantization"]
    assert hq["quant_algo"] == "FP8" and "group_size" not in hq
    uc = open_unified(out)
    table = torch.tensor([_e4m3_reference(b) for b in range(256)])
    for name, qw in res.quantized.items():
        w, s = uc.get(name), uc.get(name + "_scale")
        assert (w.dtype, tuple(w.shape)) == (torch.float8_e4m3fn, qw.shape)
        assert (s.dtype, s.dim()) == (torch.float32, 0) and float(s) == float(s.to(torch.float16)) > 0
        amax = float(source.get(name).float().abs().max())
        assert (
            float(s.to(torch.float16).to(torch.float32)) * 448
            >= amax
            > float(torch.nextafter(s.to(torch.float16), torch.tensor(0.0, dtype=torch.float16)).float()) * 448
        )  # the smallest such float16
        iscale = uc.get(name[: -len("weight")] + "input_scale")
        assert iscale.dim() == 0 and float(iscale) == float(res.input_scales[name[: -len(".weight")]]) > 0
        assert torch.equal(w.view(torch.uint8).to(torch.int16), qw.codes)
        want = dequantize_weight(qw)
        assert torch.equal(uc.dequantized(name), want)
        assert torch.equal(table[w.view(torch.uint8).long()] * s, want)
    _assert_unified_gives_fake_quant_logits(tiny_ckpt, res, out, 41)

    bad = tmp_path / "nan"
    shutil.copytree(out, bad)
    name = "model.layers.1.mlp.up_proj.weight"

    def to_nan(t):
        t = t.view(torch.uint8).clone()
        t[2, 7] = 0x7F
        return t.view(torch.float8_e4m3fn)

    _rewrite(bad / open_unified(bad).where[name].name, name, to_nan)
    with pytest.raises(EdgekitError, match="stand for no number"):
        verify_unified_checkpoint(bad)
