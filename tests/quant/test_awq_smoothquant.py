"""AWQ and SmoothQuant as pure functions: each beats its naive baseline on outlier-channel inputs."""

from __future__ import annotations

import pytest
import torch

from edgekit.quant.awq import awq_quantize
from edgekit.quant.grids import dequantize_weight, fit_and_quantize
from edgekit.quant.smoothquant import w8a8_output, w8a8_quantize


def _inputs(n, d, gen, outliers=5, scale=30.0):
    X = torch.randn(n, d, generator=gen)
    idx = torch.randperm(d, generator=gen)[:outliers]
    X[:, idx] *= scale
    return X


@pytest.mark.parametrize("grid", ["gguf:q4_0", "gguf:q4_k", "nvidia:w4a16"])
def test_awq_beats_rtn(grid):
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    d = 512
    X = _inputs(1024, d, gen)
    Ws = [torch.randn(64, d, generator=gen) * 0.02, torch.randn(48, d, generator=gen) * 0.02]
    res = awq_quantize(Ws, X, grid)
    for W, qw in zip(Ws, res.quantized):
        ref = X @ W.T
        rtn = ((ref - X @ dequantize_weight(fit_and_quantize(grid, W)).T) ** 2).sum()
        awq = ((ref - (X / res.scales) @ dequantize_weight(qw).T) ** 2).sum()
        assert awq < 0.8 * rtn, (float(awq), float(rtn))
    assert res.scales.shape == (d,) and torch.all(res.scales > 0)


def test_awq_without_outliers_is_not_worse_than_rtn():
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    X = torch.randn(512, 256, generator=gen)
    W = torch.randn(32, 256, generator=gen) * 0.02
    res = awq_quantize([W], X, "gguf:q4_0")
    ref = X @ W.T
    rtn = ((ref - X @ dequantize_weight(fit_and_quantize("gguf:q4_0", W)).T) ** 2).sum()
    awq = ((ref - (X / res.scales) @ dequantize_weight(res.quantized[0]).T) ** 2).sum()
    assert awq <= rtn * 1.0001  # alpha = 0 (s = 1) is in the search, clipping only lowers error


def test_smoothquant_w8a8_beats_naive_w8a8():
    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    d = 384
    X = _inputs(800, d, gen, outliers=6, scale=60.0)
    W = torch.randn(100, d, generator=gen) * 0.02
    ref = X @ W.T
    amax = X.abs().amax(0)
    naive = w8a8_quantize([W], amax, alpha=None)
    smooth = w8a8_quantize([W], amax, alpha=0.5)
    e_naive = ((ref - w8a8_output(X, naive)) ** 2).sum()
    e_smooth = ((ref - w8a8_output(X, smooth)) ** 2).sum()
    assert e_smooth < 0.5 * e_naive, (float(e_smooth), float(e_naive))
    assert smooth.weights[0].codes.abs().max() <= 127
