"""Fake quantization on each format's grid: what training sees is what the file holds, and gradients flow."""

from __future__ import annotations

import pytest
import torch

from edgekit.qat.fake_quant import FakeQuantLinear
from edgekit.quant.formats import QUANTIZED_FORMATS
from edgekit.quant.grids import dequantize_weight, fit_and_quantize, get_grid

GRIDS = list(QUANTIZED_FORMATS)  # every format in the registry: a new one is tested here without a line added


def _weight(rows: int, blocks: int, block: int) -> torch.Tensor:
    w = torch.randn(rows, blocks * block) * 0.02
    w[:, 3] *= 20  # an outlier column, as the generated checkpoints have
    return w


@pytest.mark.parametrize("grid_name", GRIDS)
@pytest.mark.parametrize("latent", ["weights", "codes fixed"])
def test_the_trained_value_is_exactly_what_the_export_dequantizes_to(grid_name, latent):
    grid = get_grid(grid_name)
    w = _weight(37, 2, grid.block_for(256) if grid.block else 256)  # odd row count
    init = fit_and_quantize(grid, w)
    fq = FakeQuantLinear(grid_name, init, w if latent == "weights" else None)
    assert torch.equal(fq.weight(), dequantize_weight(init))  # untrained: the init itself
    with torch.no_grad():  # a trained state: latent weights and scales moved
        for t in fq.t.values():
            t.normal_(0, 0.05)
        if fq.train_weight:
            fq.u.normal_(0, 0.7)
    y = fq.weight()
    qw = fq.export()
    assert torch.equal(y, dequantize_weight(qw))  # bit for bit
    for k, v in qw.params.items():
        assert v.dtype == init.params[k].dtype and v.shape == init.params[k].shape
        if not v.is_floating_point():
            assert torch.equal(v, init.params[k])  # integer sub-scales stay the init's
    if fq.keys or fq.train_weight:
        assert not torch.equal(y, dequantize_weight(init))
    else:  # FP4/FP8 with codes fixed: their scales are bytes (E8M0, UE4M3) or per tensor, nothing in them trains
        assert grid.values is not None and torch.equal(y, dequantize_weight(init))
    if grid_name == "gguf:q4_k":
        assert set(fq.t) == {"d", "dmin"}  # the fp16 super-scales; the 6-bit sub-scales are integers
    assert qw.codes.min() >= grid.qmin and qw.codes.max() <= grid.qmax
    if grid_name == "nvidia:nvfp4":  # E4M3 block scales train; the per-tensor scale stays one value, the init's
        assert set(fq.t) == {"scale"} and qw.params["scale"].dtype == torch.float8_e4m3fn
        assert torch.equal(qw.params["global"], init.params["global"])
    if grid_name == "nvidia:fp8":  # E4M3 codes move; the per-tensor scale stays the init's (a float16 value)
        assert not fq.keys and torch.equal(qw.params["scale"], init.params["scale"])
        assert not torch.isin(qw.codes, torch.tensor([0x7F, 0xFF], dtype=qw.codes.dtype)).any()  # never NaN
    if grid_name.startswith("nvidia:w4a16"):  # TensorRT casts the scales to fp16: they must survive that
        assert torch.equal(qw.params["scale"].half().float(), qw.params["scale"]) and (qw.params["scale"] > 0).all()


@pytest.mark.parametrize(
    "grid_name", ["gguf:q4_k", "gguf:q4_0", "nvidia:w4a16:g128", "gguf:nvfp4", "gguf:mxfp4", "nvidia:fp8"]
)
def test_gradients_reach_latent_weights_and_scales(grid_name):
    grid = get_grid(grid_name)
    w = _weight(16, 1, grid.block_for(256) if grid.block else 256)
    fq = FakeQuantLinear(grid_name, fit_and_quantize(grid, w), w)
    x = torch.randn(5, w.shape[1])
    target = x @ w.T
    loss = (x @ fq.weight().T - target).square().sum()
    loss.backward()
    assert fq.u.grad is not None and fq.u.grad.abs().sum() > 0 and torch.isfinite(fq.u.grad).all()
    for t in fq.t.values():
        assert t.grad is not None and t.grad.abs().sum() > 0 and torch.isfinite(t.grad).all()


@pytest.mark.parametrize(
    "grid_name,block,most", [("gguf:q4_0", 32, 0.95), ("nvidia:w4a16:g64", 64, 0.95), ("gguf:q4_k", 256, 0.999)]
)
def test_training_only_the_scales_reduces_a_linears_output_error(grid_name, block, most, test_seed):
    """Phase 2's mechanism: codes fixed, the float scales trained through their stored precision."""
    torch.manual_seed(test_seed)
    w = _weight(24, 2, block)
    x = torch.randn(256, 2 * block) * torch.linspace(0.1, 3, 2 * block)  # unequal input channels
    fq = FakeQuantLinear(grid_name, fit_and_quantize(get_grid(grid_name), w))
    opt = torch.optim.Adam(fq.parameters(), lr=0.01)

    def err():
        return (x @ fq.weight().T - x @ w.T).square().mean()

    with torch.no_grad():
        before = float(err())
    for _ in range(60):
        opt.zero_grad()
        err().backward()
        opt.step()
    with torch.no_grad():
        assert float(err()) < most * before


@pytest.mark.parametrize("grid_name", ["gguf:nvfp4", "gguf:mxfp4"])
def test_fp4_latent_weights_follow_their_level_and_stop_past_the_range(grid_name):
    """On E2M1's levels the straight-through gradient passes inside the range (up to half the last gap past ±6 in
    scale units; llama.cpp's doubled levels: ±12 + 2) and stops outside it, where the code is pinned to the end."""
    grid = get_grid(grid_name)
    w = _weight(8, 1, grid.block)
    fq = FakeQuantLinear(grid_name, fit_and_quantize(grid, w), w)
    with torch.no_grad():
        fq.u[0, 5] = 1e4  # far past the largest level of its block
    fq.weight().sum().backward()
    assert fq.u.grad[0, 5] == 0
    assert (fq.u.grad[1:] != 0).float().mean() > 0.9  # the rest follow their levels
