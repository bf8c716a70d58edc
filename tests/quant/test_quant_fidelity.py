"""Issue-level acceptance on the small checkpoint (realistic outlier channels, held-out samples disjoint from calibration).

- KL(FP‖Q) at 4 bits: GPTQ and AWQ each beat RTN by at least 20% (same grid).
- SmoothQuant W8A8 beats naive W8A8.
- edgekit GPTQ packed as GGUF Q4_K, run in llama.cpp, beats llama.cpp's own quantizer to Q4_K at equal file size.
"""

from __future__ import annotations

import pytest

from edgekit.quant.calibrate import QuantConfig, calibrate

pytestmark = pytest.mark.slow
N_CALIB, N_EVAL = 12, 8


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("calib")


@pytest.fixture(scope="module")
def q4k_results(small_ckpt, cache):
    return {
        m: calibrate(small_ckpt, QuantConfig(method=m, grid="gguf:q4_k", n_samples=N_CALIB), cache)
        for m in ("rtn", "gptq", "awq")
    }


def test_every_linear_keeps_its_snr_floor(q4k_results):
    """Per-layer output SNR of every quantized linear against the floors declared in snr_floor.toml."""
    import math
    import tomllib
    from pathlib import Path

    floors = tomllib.loads((Path(__file__).with_name("snr_floor.toml")).read_text())["gguf:q4_k"]
    for method, result in q4k_results.items():
        snr = {name: -20 * math.log10(err) for name, err in result.layer_errors.items()}
        assert len(snr) == 28, method
        worst = min(snr, key=snr.get)
        print(f"{method}: min SNR {snr[worst]:.2f} dB ({worst}), floor {floors[method]}")
        assert snr[worst] >= floors[method], (method, worst, snr[worst])


def test_gptq_and_awq_beat_rtn_at_4_bits(small_ckpt, q4k_results):
    from edgekit.quant.evaluate import kl_against_reference

    kl = kl_against_reference(small_ckpt, q4k_results, QuantConfig(n_samples=N_CALIB), n_eval=N_EVAL)
    print({k: round(v["kl"], 6) for k, v in kl.items()})
    assert kl["gptq"]["kl"] < 0.8 * kl["rtn"]["kl"]
    assert kl["awq"]["kl"] < 0.8 * kl["rtn"]["kl"]


def test_smoothquant_beats_naive_w8a8(small_ckpt, cache):
    from edgekit.quant.evaluate import kl_against_reference

    results = {
        f"a{a}": calibrate(
            small_ckpt, QuantConfig(method="smoothquant", grid="int8:channel", alpha=a, n_samples=N_CALIB), cache
        )
        for a in (0.5, 0.0)
    }
    kl = kl_against_reference(small_ckpt, results, QuantConfig(n_samples=N_CALIB), n_eval=N_EVAL)
    print(kl)
    assert kl["a0.5"]["kl"] < kl["a0.0"]["kl"]


def test_gptq_gguf_beats_llama_cpp_quantize_in_llama_cpp(small_ckpt, q4k_results, tmp_path):
    from edgekit.bench.gguf_fidelity import gguf_logits, heldout_prompts, kl_table, llama_cpp_quantize
    from edgekit.export.gguf import write_decoder_gguf

    f32 = write_decoder_gguf(small_ckpt, tmp_path / "f32.gguf", "f32")
    f16 = write_decoder_gguf(small_ckpt, tmp_path / "f16.gguf", "f16")
    ours = write_decoder_gguf(small_ckpt, tmp_path / "gptq_q4k.gguf", "q4_k", calibrated=q4k_results["gptq"])
    theirs = llama_cpp_quantize(f16, tmp_path / "llama_q4k.gguf", 14, pure=True)  # MOSTLY_Q4_K_S, every tensor Q4_K
    size_ratio = ours.stat().st_size / theirs.stat().st_size
    assert 0.98 <= size_ratio <= 1.02, size_ratio
    prompts = heldout_prompts(small_ckpt, "driving,embodied", N_EVAL)
    ref = gguf_logits(f32, prompts)
    kl = kl_table(ref, {"edgekit_gptq": gguf_logits(ours, prompts), "llama_cpp": gguf_logits(theirs, prompts)})
    print(kl, size_ratio)
    assert kl["edgekit_gptq"] < kl["llama_cpp"]
