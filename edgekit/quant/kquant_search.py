"""The scale searches of llama.cpp's K-quants (ggml-quants.c), vectorised: pure functions over float32 tensors.

make_qkx2_quants / make_qkx3_quants (Q4_K, Q5_K: a weighted least-squares scale and min per 32-value sub-block,
tried at nstep+1 candidate step sizes) and make_qx_quants (Q6_K: a signed scale per 16-value sub-block, 19
candidates). Each candidate is a pass over every value, so the search dominates a K-quant fit.

Sub-blocks are searched in chunks laid out value-major ([values per sub-block, CHUNK]): every operation then runs
along contiguous memory that stays in cache across the candidates. This runs 4-7x faster on large tensors than
sub-block-major [S, 32] tensors, whose 32-wide reductions and cache misses per candidate dominated (Q4_K on MiMo's
shapes: ~10 M weights/s on 2 cores here, ggml's own C quantizer 8.5-11 on one; benchmarks/bench_kquant_fit.py). On a CPU every chunk is exactly CHUNK wide (the last one padded with
empty sub-blocks): torch sums a [32, w] tensor along its rows in an order that depends on w, but at one fixed width
every column's sum is the same wherever it lies and however many threads run. So a sub-block's answer depends on
its values alone (GPTQ fits a matrix 256 columns at a time and RTN all at once; with an identity Hessian they agree).
"""

from __future__ import annotations

import torch

CHUNK = 8192  # sub-blocks per chunk on a CPU: [32, 8192] float32 is 1 MiB, the working set of one candidate


def nearest(x: torch.Tensor) -> torch.Tensor:
    """ggml's nearest_int: rounds half to even, like torch.round."""
    return torch.round(x)


def _chunks(*tensors: torch.Tensor):
    """(a, b, each tensor's rows a..b-1 transposed to [n, width]): on a CPU width is CHUNK, zero-padded (above); on an
    accelerator all rows at once (fewer kernel launches)."""
    S = tensors[0].shape[0]
    width = CHUNK if tensors[0].device.type == "cpu" else max(S, 1)
    for a in range(0, S, width):
        b = min(a + width, S)
        parts = []
        for t in tensors:
            part = t.new_zeros(t.shape[1], width)
            part[:, : b - a] = t[a:b].t()
            parts.append(part)
        yield a, b, parts


def qkx2_search(
    x: torch.Tensor, nmax: int, rmin: float, rdelta: float, nstep: int, weights: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """make_qkx2_quants (make_qkx3_quants' step grid when `weights` are given) over sub-blocks x [S, 32].

    Returns (scale [S], the_min [S]) with value ≈ scale·L − the_min, L in [0, nmax]."""
    if weights is None:  # the reference's importance without an importance matrix
        weights = torch.sqrt((x * x).sum(-1, keepdim=True) / x.shape[-1]) + x.abs()  # [S, 32]
    scale, the_min = x.new_empty(x.shape[0]), x.new_empty(x.shape[0])
    for a, b, (xs, ws) in _chunks(x, weights):
        s, m = _qkx2_chunk(xs, ws, nmax, rmin, rdelta, nstep)
        scale[a:b], the_min[a:b] = s[: b - a], m[: b - a]
    return scale, the_min


def _qkx2_chunk(
    x: torch.Tensor, w: torch.Tensor, nmax: int, rmin: float, rdelta: float, nstep: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """x, w [32, s]: one sub-block per column.

    As in the reference, every candidate step is laid over [min, max] with the best min found so far: a candidate
    that improves moves the origin of the next ones (keeping the first min for all of them left 2-10% more squared
    error than llama.cpp's own Q4_K/Q5_K, benchmarks/bench_kquant_fit.py)."""
    lo = x.amin(0).clamp_(max=0)  # [s]
    hi = x.amax(0)
    flat = hi == lo
    sum_w = w.sum(0)
    sum_x = (w * x).sum(0)
    L, t, wl, x_lo = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)

    rng = torch.where(flat, torch.ones_like(hi), hi - lo)
    iscale = nmax / rng
    scale = 1 / iscale
    torch.sub(x, lo, out=x_lo)
    torch.mul(x_lo, iscale, out=L).round_().clamp_(0, nmax)
    torch.mul(L, scale, out=t).add_(lo).sub_(x)
    best = t.square_().mul_(w).sum(0)
    best_min = lo.clone()
    for step in range(nstep + 1):
        span = hi - best_min
        rng = torch.where(span > 0, span, torch.ones_like(span))
        iscale = (rmin + rdelta * step + nmax) / rng
        torch.sub(x, best_min, out=x_lo)
        torch.mul(x_lo, iscale, out=L).round_().clamp_(0, nmax)
        torch.mul(w, L, out=wl)
        sum_l = wl.sum(0)
        sum_l2 = torch.mul(wl, L, out=t).sum(0)
        sum_xl = torch.mul(wl, x, out=t).sum(0)
        D = sum_w * sum_l2 - sum_l * sum_l
        safe_D = torch.where(D > 0, D, torch.ones_like(D))
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / safe_D
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / safe_D
        pos = this_min > 0  # the min must stay <= 0: refit the scale alone
        safe_l2 = torch.where(sum_l2 > 0, sum_l2, torch.ones_like(sum_l2))
        this_scale = torch.where(pos, sum_xl / safe_l2, this_scale)
        this_min = torch.where(pos, torch.zeros_like(this_min), this_min)
        torch.mul(L, this_scale, out=t).add_(this_min).sub_(x)
        err = t.square_().mul_(w).sum(0)
        better = (D > 0) & (err < best)
        best = torch.where(better, err, best)
        scale = torch.where(better, this_scale, scale)
        best_min = torch.where(better, this_min, best_min)
    scale = torch.where(flat, torch.zeros_like(scale), scale)
    return scale, -best_min


def qx_search(x: torch.Tensor, nmax: int, zero_below: float) -> torch.Tensor:
    """make_qx_quants(rmse_type=1) over sub-blocks x [S, 16] -> signed scale [S] (0 where max|x| < zero_below)."""
    scale = x.new_empty(x.shape[0])
    for a, b, (xs,) in _chunks(x):
        scale[a:b] = _qx_chunk(xs, nmax, zero_below)[: b - a]
    return scale


def _qx_chunk(x: torch.Tensor, nmax: int, zero_below: float) -> torch.Tensor:
    """x [16, s]: one sub-block per column."""
    imax = x.abs().argmax(0, keepdim=True)
    mx = torch.gather(x, 0, imax).squeeze(0)  # [s] signed value of largest magnitude
    zero = mx.abs() < zero_below
    mx = torch.where(zero, torch.ones_like(mx), mx)
    w = x * x
    L, t, wl = torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)

    def sums(iscale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        torch.mul(x, iscale, out=L).round_().clamp_(-nmax, nmax - 1)
        torch.mul(w, L, out=wl)
        return torch.mul(wl, x, out=t).sum(0), torch.mul(wl, L, out=t).sum(0)

    sumlx, suml2 = sums(-nmax / mx)
    safe_l2 = torch.where(suml2 > 0, suml2, torch.ones_like(suml2))
    scale = torch.where(suml2 > 0, sumlx / safe_l2, torch.zeros_like(sumlx))
    best = scale * sumlx
    for step in range(-9, 10):
        if step == 0:
            continue
        sumlx, suml2 = sums(-(nmax + 0.1 * step) / mx)
        better = (suml2 > 0) & (sumlx * sumlx > best * suml2)
        new = sumlx / torch.where(suml2 > 0, suml2, torch.ones_like(suml2))
        scale = torch.where(better, new, scale)
        best = torch.where(better, new * sumlx, best)
    return torch.where(zero, torch.zeros_like(scale), scale)
