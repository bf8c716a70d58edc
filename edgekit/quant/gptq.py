"""GPTQ (Frantar et al., 2022) onto an export format's grid: a pure function over tensors.

Columns are quantized one at a time; each column's rounding error is spread over the columns not
yet quantized, weighted by the inverse Hessian of the layer's inputs (H = XᵀX), so the layer's
*output* error ‖XWᵀ − XQᵀ‖ is what gets minimised, not the weight error.

Grid structure is kept exactly: every column is rounded by `grid.quantize` with the parameters of
its own block, so the result packs into the format without a second rounding. Block parameters
are fitted when the first column of a block is reached, on the weights as updated so far; with
activation order (columns by decreasing Hessian diagonal) the blocks are "static": fitted up
front on the original weights, because a block's columns are then visited out of order.
"""

from __future__ import annotations

import torch

from edgekit.quant.grids import Grid, Params, QuantizedWeight, cat_params, get_grid


def _slice_params(p: Params, b: int) -> Params:
    return {k: v[:, b:b + 1] for k, v in p.items()}


def damped_inverse_cholesky(H: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp·mean(diag H)·I)⁻¹, float64 for stability."""
    H = H.to(torch.float64).clone()
    n = H.shape[0]
    H[torch.arange(n), torch.arange(n)] += damp * torch.diagonal(H).mean().clamp_min(1e-12)
    L = torch.linalg.cholesky(H)
    Hinv = torch.cholesky_inverse(L)
    return torch.linalg.cholesky(Hinv, upper=True)


def gptq_quantize(W: torch.Tensor, H: torch.Tensor, grid: Grid | str, *, damp: float = 0.01,
                  act_order: bool = False, block_size: int = 128, params: Params | None = None,
                  weighted_fit: bool = True) -> QuantizedWeight:
    """W float [out, in], H float [in, in] (XᵀX of the layer's inputs) -> codes + params on `grid`.

    `params`: the grid's parameters for every block, fixed (e.g. scales another tool already chose);
    only the codes are then chosen. `weighted_fit`: block parameters are searched with each input's
    importance diag(H) (grids with a weighted search; llama.cpp's importance-matrix rule)."""
    g = grid if isinstance(grid, Grid) else get_grid(grid)
    out, n = W.shape
    g.check_width(n)
    B = g.block_for(n)
    W = W.to(torch.float64).clone()  # [out, in]
    H = H.to(torch.float64).clone()  # [in, in]
    dead = torch.diagonal(H) == 0  # inputs that never fire: their weights cannot matter
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    importance = torch.diagonal(H).to(torch.float32).clone() if weighted_fit else None  # [in]

    perm = torch.argsort(torch.diagonal(H), descending=True) if act_order else torch.arange(n)
    static = act_order or g.block == 0 or params is not None
    n_blocks = n // B
    blocks: list[Params | None] = [None] * n_blocks
    if static:
        fitted = g.fit(W.to(torch.float32), importance) if params is None else params  # [out, n_blocks, ...]
        blocks = [_slice_params(fitted, b) for b in range(n_blocks)]

    W = W[:, perm]
    U = damped_inverse_cholesky(H[perm][:, perm], damp)  # [in, in] upper
    codes = torch.zeros(out, n, dtype=torch.int16)
    # Lazy batches: whole grid blocks fit inside one batch, so a block is fitted on fully updated columns.
    step = max(block_size, B) if static else -(-max(block_size, B) // B) * B
    for i1 in range(0, n, step):
        i2 = min(i1 + step, n)
        W1 = W[:, i1:i2].clone()  # [out, k]
        E1 = torch.zeros_like(W1)
        for j in range(i2 - i1):
            col = int(perm[i1 + j])
            b, within = divmod(col, B)
            if blocks[b] is None:  # first column of a block (in order): fit on the updated weights
                block_importance = None if importance is None else importance[col:col + B]
                blocks[b] = g.fit(W1[:, j:j + B].to(torch.float32), block_importance)
            w = W1[:, j:j + 1]  # [out, 1]
            q = g.quantize(w.to(torch.float32), blocks[b], within)
            dq = g.dequantize(q, blocks[b], within).to(torch.float64)
            codes[:, col] = q[:, 0]
            err = (w - dq) / U[i1 + j, i1 + j]  # [out, 1]
            W1[:, j:] -= err @ U[i1 + j, i1 + j:i2].unsqueeze(0)
            E1[:, j] = err[:, 0]
        W[:, i2:] -= E1 @ U[i1:i2, i2:]
    return QuantizedWeight(g.name, (out, n), codes, cat_params(blocks))


def rtn_quantize(W: torch.Tensor, grid: Grid | str) -> QuantizedWeight:
    """Round to nearest on the grid (the baseline every calibrated method must beat)."""
    from edgekit.quant.grids import fit_and_quantize

    return fit_and_quantize(grid, W)
