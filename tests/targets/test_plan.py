"""Targets as data and the pre-build plan (pure arithmetic, checked against known numbers)."""

from __future__ import annotations

import json

import pytest

from edgekit.cli import main
from edgekit.errors import EdgekitError
from edgekit.targets import all_targets, get_target

# A MiMo-Embodied-7B-shaped config.json (dims from the model card and the MiMo-7B config).
MIMO_CONFIG = {
    "architectures": ["Qwen2_5_VLForConditionalGeneration"],
    "model_type": "qwen2_5_vl",
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "num_hidden_layers": 36,
    "vocab_size": 151680,
    "rope_theta": 640000,
    "rms_norm_eps": 1e-5,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": False,
    "rope_scaling": {"type": "mrope", "mrope_section": [16, 24, 24]},
    "image_token_id": 151655,
    "video_token_id": 151656,
    "vision_start_token_id": 151652,
    "vision_end_token_id": 151653,
    "vision_config": {
        "depth": 32,
        "hidden_size": 1280,
        "intermediate_size": 3420,
        "num_heads": 16,
        "in_chans": 3,
        "out_hidden_size": 4096,
        "patch_size": 14,
        "spatial_merge_size": 2,
        "temporal_patch_size": 2,
        "window_size": 112,
        "fullatt_block_indexes": [7, 15, 23, 31],
    },
}


@pytest.fixture()
def mimo_config(tmp_path):
    d = tmp_path / "mimo"
    d.mkdir()
    (d / "config.json").write_text(json.dumps(MIMO_CONFIG))
    return d


def test_every_target_has_sources_and_sane_numbers():
    targets = all_targets()
    assert {
        "orin-agx-64",
        "orin-agx-32",
        "orin-nx-16",
        "orin-nano-8",
        "drive-orin",
        "thor-agx",
        "drive-thor",
        "x86-cuda",
        "cpu",
    } <= set(targets)
    for t in targets.values():
        assert t.memory_gb > 0 and t.memory_bandwidth_gbs > 0 and t.fp16_tensor_tflops > 0
        assert t.sources.get("memory_bandwidth_gbs"), f"{t.name}: bandwidth without a source"
        if t.family == "orin":
            assert t.gpu_arch == "sm_87"
            assert not {"fp8", "nvfp4"} & set(t.precisions), "Ampere has no FP8/NVFP4 tensor cores"
    assert get_target("orin").name == "orin-agx-64" and get_target("thor").gpu_arch == "sm_110"
    with pytest.raises(EdgekitError, match="unknown target"):
        get_target("pdp-11")


def test_low_precision_targets_have_the_tensor_cores_and_their_peaks():
    """A target lists fp8 only with FP8 tensor cores (Ada/Hopper sm_89+) and nvfp4 on TensorRT only with FP4 ones
    (Blackwell, sm_100+), each with its dense peak and that number's source: the plan's prefill bound uses them."""
    from edgekit.quant.precisions import decoder_format

    for t in all_targets().values():
        arch = int(t.gpu_arch.removeprefix("sm_")) if t.is_nvidia else 0
        if "fp8" in t.precisions:
            assert arch >= 89 and t.fp8_tensor_tflops > t.fp16_tensor_tflops and t.sources.get("fp8_tensor_tflops"), (
                t.name
            )
        if "nvfp4" in t.precisions and "tensorrt" in t.backends:
            assert arch >= 100 and t.fp4_tensor_tflops > t.fp8_tensor_tflops and t.sources.get("fp4_tensor_tflops"), (
                t.name
            )
        for precision in t.precisions:
            for backend in t.backends:
                try:
                    fmt = decoder_format(precision, backend)
                except EdgekitError:
                    continue
                compute = fmt.compute if fmt else "fp16"
                assert (
                    compute == "fp16"
                    or getattr(t, {"int8": "int8_tensor_tops"}.get(compute, f"{compute}_tensor_tflops")) > 0
                )


def test_prefill_bound_uses_the_formats_arithmetic(mimo_config):
    """W4A16 multiplies in FP16 (weights dequantized); FP8 and NVFP4 W4A4 in FP8 / FP4: their compute bounds are the
    FP16 one's FLOPs over those peaks, and the bound is the larger of compute and weight bytes over bandwidth."""
    from edgekit.targets.plan import config_dims, make_plan

    text, vision, shapes, proc = config_dims(mimo_config)
    thor = get_target("thor")
    plans = {
        p: make_plan(text, vision, shapes, thor, p, backend="tensorrt", processor=proc)
        for p in ("int4", "fp8", "nvfp4")
    }
    flops_ms = plans["int4"].prefill_ms_bound * thor.fp16_tensor_tflops  # int4 on Thor is compute-bound
    for p, peak in (("fp8", thor.fp8_tensor_tflops), ("nvfp4", thor.fp4_tensor_tflops)):
        bytes_ms = 1e3 * (plans[p].weights_gb["decoder"] + plans[p].weights_gb["lm_head"]) / thor.memory_bandwidth_gbs
        assert plans[p].prefill_ms_bound == pytest.approx(max(flops_ms / peak, bytes_ms), rel=1e-6), p
    assert plans["nvfp4"].prefill_ms_bound < plans["fp8"].prefill_ms_bound < plans["int4"].prefill_ms_bound


def test_mimo_int4_on_agx_orin_matches_published_range(mimo_config, capsys):
    assert main(["plan", str(mimo_config), "--target", "orin-agx-64", "--precision", "int4", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert 3.3 <= plan["decode_bytes_per_token_gb"] <= 4.8
    assert 40 <= plan["decode_tokens_per_s_bound"] <= 62
    # Published AGX Orin INT4 7-8B decode (~32-36 tokens/s) sits below the bound, at 55-90% of it.
    assert 0.5 < 34 / plan["decode_tokens_per_s_bound"] < 0.9
    assert plan["fits"]


def test_mimo_fp16_refused_on_orin_nano(mimo_config, capsys):
    assert main(["plan", str(mimo_config), "--target", "orin-nano-8", "--precision", "fp16"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "does not fit orin-nano-8" in err
    weights = float(err.split("weights ")[1].split(" GB")[0])
    assert 16.0 <= weights <= 17.2  # ~16.6 GB of 16-bit weights


def test_unsupported_precision_for_target(mimo_config, capsys):
    assert main(["plan", str(mimo_config), "--target", "orin", "--precision", "fp32"]) == 2
    assert "does not support precision fp32" in capsys.readouterr().err


def test_plan_scales_with_context_and_cameras(mimo_config):
    from edgekit.targets.plan import config_dims, make_plan

    text, vision, shapes, _ = config_dims(mimo_config)
    orin = get_target("orin")
    short = make_plan(text, vision, shapes, orin, "int4", context=1024)
    long = make_plan(text, vision, shapes, orin, "int4", context=16384)
    assert long.kv_cache_gb == pytest.approx(16 * short.kv_cache_gb)
    # KV per token: 2 (K,V) x 36 layers x 8 heads x 128 x 2 bytes = 147456 bytes
    assert short.kv_cache_gb * 1e9 / 1024 == pytest.approx(147456)
    one, six = (make_plan(text, vision, shapes, orin, "int4", images=k) for k in (1, 6))
    assert six.vision_ms_bound == pytest.approx(6 * one.vision_ms_bound)
    assert six.total_gb > one.total_gb
    fp16, int4 = (make_plan(text, vision, shapes, orin, p) for p in ("fp16", "int4"))
    assert fp16.decode_tokens_per_s_bound < int4.decode_tokens_per_s_bound / 2.5
