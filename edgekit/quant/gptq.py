"""GPTQ (Frantar et al., 2022) onto an export format's grid: a pure function over tensors.

Columns are quantized one at a time; each column's rounding error is spread over the columns not
yet quantized, weighted by the inverse Hessian of the layer's inputs (H = XᵀX), so the layer's
*output* error ‖XWᵀ − XQᵀ‖ is what gets minimised, not the weight error.

Grid structure is kept exactly: every column is rounded by `grid.quantize` with the parameters of
its own block, so the result packs into the format without a second rounding. Block parameters
are fitted when the first column of a block is reached, on the weights as updated so far; with
activation order (columns by decreasing Hessian diagonal) the blocks are "static": fitted up
front on the original weights, because a block's columns are then visited out of order.

Precision, as the field's GPTQ implementations do it: float32 for the Hessian's factorisation (float64 only where
float32 fails), the weights and the column loop (at MiMo-Embodied's size the loop is memory-bound: half the bytes).
Linears that read the same input (q/k/v, gate/up) share H: it is factorised once for them (HessianFactor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from edgekit.errors import EdgekitError
from edgekit.quant.grids import Grid, Params, QuantizedWeight, cat_params, get_grid


PANEL = 32  # columns whose errors update each other one by one (see gptq_with_factor)


def _slice_params(p: Params, b: int) -> Params:
    return {k: v[:, b : b + 1] for k, v in p.items()}


def damped_inverse_cholesky(H: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor U of (H + damp·mean(diag H)·I)⁻¹ (UᵀU is that inverse), float32.

    Factorised in float32 as the field's GPTQs do (MiMo-Embodied's down_proj, 11008 inputs: 18 s here against float64's
    38 s, per layer; the factors differ by 3·10⁻⁵ relative), and again in float64 where float32 finds the damped
    matrix not positive definite."""
    n = H.shape[0]
    diag = torch.arange(n, device=H.device)
    for dtype in (torch.float32, torch.float64):
        D = H.to(dtype).clone()
        D[diag, diag] += damp * torch.diagonal(D).mean().clamp_min(1e-12)
        L, info = torch.linalg.cholesky_ex(D)
        if int(info) == 0:
            U, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(L), upper=True)
            if int(info) == 0 and bool(torch.isfinite(U).all()):
                return U.to(torch.float32)
    raise EdgekitError(
        f"GPTQ: the inputs' Hessian ({n}x{n}) is not positive definite even in float64 with damping "
        f"{damp}; raise the damping (--damp)"
    )


@dataclass(frozen=True)
class HessianFactor:
    """What GPTQ needs of the inputs' H, computed once for every linear that reads those inputs."""

    dead: torch.Tensor  # bool [in]: inputs that never fire (their weights cannot matter)
    importance: torch.Tensor | None  # float32 [in]: diag(H), for grids with a weighted block search
    act_order: bool
    perm: torch.Tensor  # [in]: the column order (decreasing diag(H) with act_order)
    order: list[int]  # perm on the host: no device sync per column
    U: torch.Tensor  # float32 [in, in]: upper Cholesky factor of the damped inverse, in perm order


def factor_hessian(
    H: torch.Tensor, *, damp: float = 0.01, act_order: bool = False, weighted_fit: bool = True
) -> HessianFactor:
    H = H.to(torch.float32).clone()  # [in, in]
    n = H.shape[0]
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1.0
    importance = torch.diagonal(H).clone() if weighted_fit else None
    perm = torch.argsort(torch.diagonal(H), descending=True) if act_order else torch.arange(n, device=H.device)
    return HessianFactor(
        dead, importance, act_order, perm, perm.tolist(), damped_inverse_cholesky(H[perm][:, perm], damp)
    )


def gptq_quantize(
    W: torch.Tensor,
    H: torch.Tensor,
    grid: Grid | str,
    *,
    damp: float = 0.01,
    act_order: bool = False,
    block_size: int = 128,
    params: Params | None = None,
    weighted_fit: bool = True,
) -> QuantizedWeight:
    """W float [out, in], H float [in, in] (XᵀX of the layer's inputs) -> codes + params on `grid`.

    `params`: the grid's parameters for every block, fixed (e.g. scales another tool already chose);
    only the codes are then chosen. `weighted_fit`: block parameters are searched with each input's
    importance diag(H) (grids with a weighted search; llama.cpp's importance-matrix rule)."""
    factor = factor_hessian(H, damp=damp, act_order=act_order, weighted_fit=weighted_fit)
    return gptq_with_factor(W, factor, grid, block_size=block_size, params=params)


def gptq_quantize_shared(
    Ws: list[torch.Tensor],
    H: torch.Tensor,
    grid: Grid | str,
    *,
    damp: float = 0.01,
    act_order: bool = False,
    block_size: int = 128,
    weighted_fit: bool = True,
) -> list[QuantizedWeight]:
    """GPTQ of linears that read the same inputs (q/k/v, gate/up): H factorised once, then each linear's own column
    loop — the codes of one gptq_quantize call each. (Stacking their rows into one loop was slower at MiMo's size:
    a 22016-row gate/up batch no longer stays in cache.)"""
    factor = factor_hessian(H, damp=damp, act_order=act_order, weighted_fit=weighted_fit)
    return [gptq_with_factor(W, factor, grid, block_size=block_size) for W in Ws]


def gptq_with_factor(
    W: torch.Tensor, f: HessianFactor, grid: Grid | str, *, block_size: int = 128, params: Params | None = None
) -> QuantizedWeight:
    """GPTQ's column loop for one W [out, in] over a factorised H (gptq_quantize's arguments otherwise)."""
    g = grid if isinstance(grid, Grid) else get_grid(grid)
    out, n = W.shape
    g.check_width(n)
    B = g.block_for(n)
    W = W.to(torch.float32).clone()  # [out, in]
    W[:, f.dead] = 0.0
    importance, order, U = f.importance, f.order, f.U
    static = f.act_order or g.block == 0 or params is not None or bool(g.tensor_wide)
    n_blocks = n // B
    blocks: list[Params | None] = [None] * n_blocks
    columns: dict[int, tuple] = {}  # block -> its (scale, offset) per column [B, out], expanded once
    if static:
        fitted = g.fit(W, importance) if params is None else params  # [out, n_blocks, ...]
        blocks = [_slice_params(fitted, b) for b in range(n_blocks)]

    W = W[:, f.perm]
    codes = torch.zeros(n, out, dtype=torch.int16, device=W.device)  # [in, out]: one contiguous row per column
    # Lazy batches: a block fitted on the way needs its whole block inside one batch (fitted on fully updated
    # columns); blocks fixed up front do not, so their batches stay block_size wide (a per-channel grid's block is the
    # whole row: one batch as wide as the matrix would make every column's update O(out x in)).
    step = block_size if static else -(-max(block_size, B) // B) * B
    # Within a batch, each column's error updates only the columns of its own panel; a panel's errors reach the rest
    # of the batch in one product when it ends (the same sums, in another order). The batch is held transposed, so a
    # column is a contiguous row. Together 1.6-1.9x faster on MiMo-Embodied's down_proj and gate_proj here (Q4_K, 2
    # cores): the per-column rank-1 update over the whole batch (~out x step/2 floats per column, strided) was the
    # loop's memory traffic. A fitted block starts on a panel boundary (the panel divides B), so it is fitted on fully
    # updated columns as before.
    panel = PANEL if static else math.gcd(PANEL, B)
    for i1 in range(0, n, step):
        i2 = min(i1 + step, n)
        Wt = W[:, i1:i2].T.contiguous()  # [k, out]
        Et = torch.zeros_like(Wt)
        for p1 in range(0, i2 - i1, panel):
            p2 = min(p1 + panel, i2 - i1)
            for j in range(p1, p2):
                col = order[i1 + j]
                b, within = divmod(col, B)
                if blocks[b] is None:  # first column of a block (in order): fit on the updated weights
                    block_importance = None if importance is None else importance[col : col + B]
                    blocks[b] = g.fit(Wt[j : j + B].T, block_importance)
                if b not in columns:
                    columns[b] = tuple(
                        None if t is None else t.T.contiguous() for t in g.column_params(blocks[b], 0, B)
                    )
                s, o = (None if t is None else t[within].unsqueeze(1) for t in columns[b])
                w = Wt[j].unsqueeze(1)  # [out, 1]
                q = g.round_to(w, s, o)
                dq = g.value_of(q, s, o)
                codes[col] = q[:, 0]
                err = (w - dq)[:, 0] / U[i1 + j, i1 + j]  # [out]
                Wt[j + 1 : p2].addr_(U[i1 + j, i1 + j + 1 : i1 + p2], err, alpha=-1)
                Et[j] = err
            if p2 < i2 - i1:
                Wt[p2:].addmm_(U[i1 + p1 : i1 + p2, i1 + p2 : i2].T, Et[p1:p2], alpha=-1)
        W[:, i2:].addmm_(Et.T, U[i1:i2, i2:], alpha=-1)
    codes = codes.T.contiguous()
    return QuantizedWeight(g.name, (out, n), codes, cat_params(blocks))


def rtn_quantize(W: torch.Tensor, grid: Grid | str) -> QuantizedWeight:
    """Round to nearest on the grid (the baseline every calibrated method must beat)."""
    from edgekit.quant.grids import fit_and_quantize

    return fit_and_quantize(grid, W)
