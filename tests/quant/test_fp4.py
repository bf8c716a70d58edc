"""FP4 grids (GGUF MXFP4, NVFP4): edgekit's codes and scales are llama.cpp's, byte for byte, on both fit paths.

On a CPU the fit is llama.cpp's quantizer itself; the torch fit (an accelerator's path) must give the same bytes. The
scale encoders are checked against the gguf package's reference on every byte and on values around every rounding
boundary, and the packed blocks read back through the gguf package's dequantizer as exactly the grid's values.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import require

from edgekit.quant import fp4, grids

gguf = require("gguf")
FP4_TYPES = [("gguf:mxfp4", "MXFP4"), ("gguf:nvfp4", "NVFP4")]


def test_scale_bytes_decode_and_encode_as_llama_cpp_does():
    every_byte = torch.arange(256, dtype=torch.uint8)
    np.testing.assert_array_equal(
        fp4.ue4m3_half(every_byte).numpy(), gguf.quants.NVFP4.ue4m3_to_fp32(every_byte.numpy()).astype(np.float32)
    )
    np.testing.assert_array_equal(
        fp4.e8m0_half(every_byte).numpy(), gguf.quants.MXFP4.e8m0_to_fp32_half(every_byte.numpy())
    )
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    # every representable scale, the midpoints between neighbours (ties round up) and a float either side of each
    values = fp4.ue4m3_half(every_byte) * 2
    mids = (values[:-1] + values[1:]) / 2
    x = torch.cat(
        [
            values,
            mids,
            torch.nextafter(mids, torch.zeros_like(mids)),
            torch.nextafter(mids, mids + 1),
            torch.rand(20000, generator=gen) * 500,
            torch.rand(20000, generator=gen) * 0.02,
            torch.tensor([0.0, -1.0, float("inf"), 448.0, 1e30, 1e-30]),
        ]
    )
    np.testing.assert_array_equal(fp4.ue4m3_fit(x).numpy(), gguf.quants.NVFP4.fp32_to_ue4m3(x.numpy()))
    assert fp4.ue4m3_fit(torch.tensor([float("nan")])).item() == 0  # ggml_fp32_to_ue4m3: !(x > 0) -> 0 (gguf-py: 126)


def test_a_value_between_two_levels_goes_to_the_nearer_and_a_tie_to_the_smaller():
    scale = torch.ones(8)
    x = torch.tensor([0.5, -0.5, 2.5, 5.0, 10.0, 11.0, -7.0, 13.0])  # ties at 0.5, 2.5, 5, 10; 11 -> 12; clamp 13
    got = fp4.level_value(fp4.nearest_code(x, scale), scale)
    assert got.tolist() == [0.0, 0.0, 2.0, 4.0, 8.0, 12.0, -6.0, 12.0]


def _weights(gen: torch.Generator, rows: int, cols: int, scale: float) -> torch.Tensor:
    w = torch.randn(rows, cols, generator=gen) * scale * (0.5 + torch.rand(1, cols, generator=gen))
    w[1] = 0.0  # an all-zero row
    w[2] = -w[2].abs() * 30  # one sign, large
    w[3, :7] = 1e-30  # below every scale
    return w


@pytest.mark.parametrize("name,ggml_type", FP4_TYPES)
@pytest.mark.parametrize("scale", [0.02, 1.0, 200.0])
def test_fit_and_codes_are_llama_cpps_on_both_paths(monkeypatch, name, ggml_type, scale):
    require("llama_cpp")
    from edgekit.export.gguf_blocks import pack_blocks
    from edgekit.quant.ggml_quantize import quantize_rows

    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    grid = grids.get_grid(name)
    w = _weights(gen, 37, 7 * grid.block, scale)  # odd rows, an odd number of blocks
    theirs = quantize_rows(w.numpy(), ggml_type, threads=1)
    kind = gguf.GGMLQuantizationType[ggml_type]
    for path in ("llama.cpp", "torch"):
        if path == "torch":
            monkeypatch.setattr(grids, "llama_cpp_quantizer_loads", lambda: False)
        qw = grids.fit_and_quantize(grid, w)
        _, ours = pack_blocks(qw)
        np.testing.assert_array_equal(ours.reshape(-1), theirs, err_msg=path)
        back = gguf.quants.dequantize(ours.reshape(-1), kind).reshape(w.shape)
        np.testing.assert_array_equal(back, grids.dequantize_weight(qw).numpy(), err_msg=path)
    assert (grids.dequantize_weight(qw)[1] == 0).all()


def test_modelopt_activation_qdq_is_tensorrts_dynamic_fp4_blocks():
    """NVFP4 W4A4's activation fake quantization against the rule written out independently (TensorRT's
    TRT_FP4DynamicQuantize as Edge-LLM documents it): per 16 values, an E4M3 scale of amax/(6 g) times g, then the
    nearest E2M1 level by its midpoints; an all-zero block stays zero."""
    from edgekit.quant.fp4 import modelopt_activation_qdq

    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    x = torch.randn(3, 5, 64, generator=gen) * torch.exp(torch.randn(1, 1, 64, generator=gen))
    x[1, 2, 16:32] = 0
    g = x.abs().amax() / (6 * 448)
    got = modelopt_activation_qdq(x, g)
    xb = x.reshape(-1, 4, 16)
    s = (xb.abs().amax(-1, keepdim=True) / 6 / g).clamp(max=448).to(torch.float8_e4m3fn).float() * g
    safe = torch.where(s == 0, torch.ones_like(s), s)
    mags = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0])
    idx = torch.searchsorted(torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0]), (xb / safe).abs().contiguous())
    want = (torch.sign(xb) * mags[idx] * s).reshape(x.shape)
    assert torch.equal(got, want)
    assert torch.equal(got[1, 2, 16:32], torch.zeros(16))
