"""AWQ (Lin et al., 2023) onto an export format's grid: pure functions over tensors.

Activation-aware scaling: input channels that carry large activations matter more, so their
weight columns are scaled up by s (and the input scaled down by 1/s, folded into the previous
op) before rounding; they then lose less precision relative to the rest. The exponent of
s = mean|x|^α is searched on calibration inputs, minimising the layer's output error. A second
search clips each (row, block) to a fraction of its range when that lowers the output error.

Several linears that read the same input (q/k/v, gate/up) share one scale, because the previous
op (an RMSNorm) can be divided by only one s.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgekit.quant.grids import Grid, QuantizedWeight, dequantize_weight, fit_and_quantize, get_grid

ALPHAS = 10
CLIP_RATIOS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.7, 0.6)
SEARCH_TOKENS = 512  # rows of X used by the searches (the error ranking is stable well below this)


@dataclass
class AwqResult:
    scales: torch.Tensor  # float32 [in]: weights were multiplied by this, inputs must be divided by it
    alpha: float
    quantized: list[QuantizedWeight]  # one per weight, codes of (W * s), clipped


def _fake(grid: Grid, W: torch.Tensor) -> torch.Tensor:
    return dequantize_weight(fit_and_quantize(grid, W))


def search_scales(
    weights: list[torch.Tensor], x_absmean: torch.Tensor, X: torch.Tensor, grid: Grid | str, n_grid: int = ALPHAS
) -> tuple[torch.Tensor, float]:
    """The per-input-channel scale s = mean|x|^α (α on a grid in [0, 1)) that minimises Σ‖XWᵀ − (X/s)(Q(W·s))ᵀ‖²."""
    g = grid if isinstance(grid, Grid) else get_grid(grid)
    X = X.to(torch.float32)
    refs = [X @ W.T.to(torch.float32) for W in weights]
    base = x_absmean.to(torch.float32).clamp_min(1e-8)
    best = (float("inf"), torch.ones_like(base), 0.0)
    for i in range(n_grid):
        alpha = i / n_grid
        s = base.pow(alpha)
        s = s / (s.max() * s.min()).sqrt()  # centre the scales so neither end leaves the fp16 range
        err = 0.0
        for W, ref in zip(weights, refs):
            Q = _fake(g, W.to(torch.float32) * s) / s  # [out, in]
            err += ((ref - X @ Q.T) ** 2).sum().item()
        if err < best[0]:
            best = (err, s, alpha)
    return best[1], best[2]


def clip_quantize(W: torch.Tensor, X: torch.Tensor, grid: Grid | str, ratios=CLIP_RATIOS) -> QuantizedWeight:
    """Per (row, block), clip to ratio·max|w| before fitting when that lowers the output error on X."""
    g = grid if isinstance(grid, Grid) else get_grid(grid)
    W = W.to(torch.float32)
    out, n = W.shape
    B = g.block_for(n)
    nb = n // B
    Xb = X.to(torch.float32).reshape(X.shape[0], nb, B)  # [tokens, nb, B]
    amax = W.reshape(out, nb, B).abs().amax(-1, keepdim=True)  # [out, nb, 1]
    best_err = torch.full((out, nb), float("inf"), device=W.device)
    best_w = W.clone()
    for r in ratios:
        Wc = torch.maximum(torch.minimum(W.reshape(out, nb, B), r * amax), -r * amax).reshape(out, n)
        D = (W - _fake(g, Wc)).reshape(out, nb, B)  # [out, nb, B]
        err = torch.einsum("tbk,obk->tob", Xb, D).pow(2).sum(0)  # [out, nb] output error of each (row, block)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        mask = better.unsqueeze(-1).expand(out, nb, B).reshape(out, n)
        best_w = torch.where(mask, Wc, best_w)
    return fit_and_quantize(g, best_w)


def awq_quantize(
    weights: list[torch.Tensor], X: torch.Tensor, grid: Grid | str, *, clip: bool = True, n_grid: int = ALPHAS
) -> AwqResult:
    """Scale search then (optionally) clip search, for linears sharing one input X [tokens, in]."""
    x_absmean = X.abs().mean(0)
    if X.shape[0] > SEARCH_TOKENS:  # evenly spaced rows: deterministic
        X = X[torch.linspace(0, X.shape[0] - 1, SEARCH_TOKENS).long().to(X.device)]  # the same rows on every device
    s, alpha = search_scales(weights, x_absmean, X, grid, n_grid)
    Xs = X / s
    qws = [
        clip_quantize(W.to(torch.float32) * s, Xs, grid) if clip else fit_and_quantize(grid, W.to(torch.float32) * s)
        for W in weights
    ]
    return AwqResult(s, alpha, qws)
