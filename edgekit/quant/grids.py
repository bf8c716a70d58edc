"""Format grids: what each weight format can represent, as values.

A quantizer targets a format's grid exactly and the packer only re-lays the integers out, so an
export never rounds twice. Weights are `W: float32 [out, in]`; blocks run along `in`.

Final API (method authors use only these names):

    get_grid(name) -> Grid
        name: any quantized format of edgekit.quant.formats (gguf:q4_k, nvidia:w4a16:g64, int8:channel, ...);
              the format names its grid's maker (the functions at the end of this module) and passes its name
    Grid.block, .bits, .symmetric, .qmin, .qmax, .sub (columns per scale inside a block)
    Grid.block_for(in_features) -> int        the block length actually used (resolves block 0)
    Grid.fit(w: [out, n*block], importance=None) -> Params
                                              params for n whole blocks, every tensor shaped
                                              [out, n, ...] and already at stored precision
                                              (fp16 d/dmin, 6-bit sub-scales, int8 Q6_K scales...);
                                              importance [n*block] (e.g. diag XᵀX) weights the
                                              scale search where the grid has one (Q4_K, Q5_K)
    Grid.quantize(w: [out, k], p, col) -> int16 [out, k]
        codes of columns col .. col+k-1 of the span that `p` covers (col counts from the span's
        first column), with FIXED params: GPTQ calls this column by column.
    Grid.dequantize(q: [out, k], p, col) -> float32 [out, k]
        bit-exactly what the runtime computes (same float32 operations in the same order).
    Grid.column_params(p, col, k) -> (scale, offset | None) [out, k]; Grid.round_to(w, scale, offset) and
    Grid.value_of(q, scale, offset): quantize/dequantize in two steps, so that GPTQ expands a block's
        parameters to its columns once, not once per column.
    cat_params([p0, p1, ...]) -> Params       join per-block params along the block axis
    QuantizedWeight(grid, shape, codes int16 [out, in], params: Params over all blocks)
    fit_and_quantize(grid, W) -> QuantizedWeight   (RTN: fit every block, quantize)
    dequantize_weight(qw) -> float32 [out, in]

Every grid reduces its stored params to a per-sub-block `scale` and optional `offset`
([out, n, g], g = block // sub), and a code q means `scale * q + offset`. Rounding to the grid is
then `clamp(round((w - offset) / scale))`, the same for every integer format. The float grids (MXFP4,
NVFP4, FP8) have a value set instead (edgekit.quant.value_sets: E2M1, E4M3): code q means `scale * value(q)` and
rounding picks the nearest member.

K-quant fitting is llama.cpp's reference quantizer (ggml-quants.c). On a CPU it *is* that quantizer: the
installed library's `ggml_quantize_chunk` (edgekit.quant.ggml_quantize, every core) writes the blocks and the fit
keeps their scales (gguf_layout.stored_params); the codes then follow from the scales exactly as ggml's do (round
to nearest reads them out of the same blocks: Grid.fit_codes, gguf_layout.stored_codes). On an
accelerator, or without llama-cpp-python, the same rules run vectorised in torch (kquant_search: make_qkx2_quants'
scale/min search for Q4_K/Q5_K, make_qx_quants for Q6_K, then the 6-/8-bit quantization of the sub-block scales
relative to an fp16 super-scale). With an importance per input column, Q4_K/Q5_K weight their search as llama.cpp
does with an importance matrix (quantize_row_q4_K_impl: weight = importance · sqrt(σ² + x²), σ² = 2·mean x² of the
super-block, the finer make_qkx3 step grid, and a weighted choice of the super-scales, make_qp_quants); Q6_K's fit
ignores importance on both paths.

Long module: the Grid contract and every format's fit/effective pair stay side by side (~450 lines), because
a format's storage rule and its rounding must be read together to see that packing never re-rounds.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from edgekit.errors import EdgekitError
from edgekit.quant import fp4, fp8
from edgekit.quant.kquant_search import nearest, qkx2_search, qx_search
from edgekit.quant.value_sets import E2M1, E4M3, ValueSet

Params = dict[str, torch.Tensor]

_FP16_MAX = 65504.0
_GROUP_MAX_EPS = 1e-15  # llama.cpp treats sub-blocks with max |x| below this as all zero


def _to_fp16(x: torch.Tensor) -> torch.Tensor:
    """fp32 -> fp16 the way the format stores it; clamp so huge scales saturate instead of inf."""
    return x.clamp(-_FP16_MAX, _FP16_MAX).to(torch.float16)


# --------------------------------------------------------------------------------------------
# the grid value


@dataclass(frozen=True)
class Grid:
    name: str
    block: int  # columns per independent parameter set; 0 = the whole row
    bits: int
    symmetric: bool
    qmin: int
    qmax: int
    sub: int  # columns sharing one effective scale inside a block; 0 = the whole block
    # stored params of n blocks -> (scale [out, n, g], offset [out, n, g] | None), float32
    effective: Callable[[Params], tuple[torch.Tensor, torch.Tensor | None]] = field(repr=False)
    # w [out, n, block] -> stored params
    fit_blocks: Callable[[torch.Tensor], Params] = field(repr=False)
    # (w [out, n, block], importance [n, block]) -> stored params; None: the grid ignores importance
    fit_weighted: Callable[[torch.Tensor, torch.Tensor], Params] | None = field(default=None, repr=False)
    # what a code stands for in units of its scale, for float formats (E2M1, E4M3); None: the integer code itself
    values: ValueSet | None = None
    # w [out, in] -> (stored params, codes) in one pass, where a library writes both (llama.cpp's quantizer on a
    # CPU); it returns None where it cannot run (fit_and_quantize then fits and rounds in torch)
    fit_codes: Callable[[torch.Tensor], tuple[Params, torch.Tensor] | None] | None = field(default=None, repr=False)
    # params holding one value for the whole tensor (kept per block like the others): the fit must see the whole
    # tensor (GPTQ fits such a grid up front) and training leaves them as fitted
    tensor_wide: tuple[str, ...] = ()
    # scales stored as float16-representable values (a runtime casts them to fp16, so what is fitted is what runs)
    float16_scales: bool = False

    def block_for(self, in_features: int) -> int:
        return in_features if self.block == 0 else self.block

    def check_width(self, in_features: int) -> None:
        b = self.block_for(in_features)
        if in_features <= 0 or in_features % b != 0:
            raise EdgekitError(
                f"grid {self.name}: a row of {in_features} columns is not a whole number of "
                f"{b}-column blocks; pick a format whose block divides {in_features} "
                f"(e.g. gguf:q8_0 for multiples of 32, or keep this tensor in f16)"
            )

    def fit(self, w: torch.Tensor, importance: torch.Tensor | None = None) -> Params:
        w = w.to(torch.float32)
        out, width = w.shape  # [out, n*block]
        b = self.block_for(width)
        if width % b != 0:
            raise ValueError(f"{self.name}: fit needs whole blocks of {b}, got {width} columns")
        if importance is not None and self.fit_weighted is not None:
            imp = importance.to(torch.float32).reshape(width // b, b)
            return self.fit_weighted(w.reshape(out, width // b, b), imp)
        return self.fit_blocks(w.reshape(out, width // b, b))  # [out, n, block]

    def _columns(self, t: torch.Tensor, col: int, k: int) -> torch.Tensor:
        """Per-sub-block tensor [out, n, g] -> per-column [out, k] for columns col..col+k-1."""
        out, n, g = t.shape
        if self.block == 0:  # one parameter set per row
            return t.reshape(out, 1).expand(out, k)
        idx = torch.arange(col, col + k, device=t.device) // (self.block // g)  # [k] flat sub-block index per column
        return t.reshape(out, n * g).index_select(1, idx)

    def column_params(self, p: Params, col: int, k: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(scale, offset | None), each [out, k]: what columns col..col+k-1 of the span `p` covers are rounded with."""
        scale, offset = self.effective(p)
        return self._columns(scale, col, k), None if offset is None else self._columns(offset, col, k)

    def round_to(self, w: torch.Tensor, s: torch.Tensor, offset: torch.Tensor | None) -> torch.Tensor:
        """Codes of w [out, k] with its columns' scale and offset ([out, k], from column_params)."""
        if self.values is not None:
            return self.values.nearest_code(w.to(torch.float32), s)
        x = w.to(torch.float32) if offset is None else w.to(torch.float32) - offset
        safe = torch.where(s == 0, torch.ones_like(s), s)
        q = nearest(x / safe).clamp(self.qmin, self.qmax)
        q = torch.where(s == 0, torch.zeros_like(q), q)  # a zero scale represents only `offset`
        return q.to(torch.int16)

    def value_of(self, q: torch.Tensor, s: torch.Tensor, offset: torch.Tensor | None) -> torch.Tensor:
        """What codes q [out, k] mean with their columns' scale and offset: float32, as the runtime computes it."""
        y = s * q.to(torch.float32) if self.values is None else self.values.value(q, s)
        return y if offset is None else y + offset

    def quantize(self, w: torch.Tensor, p: Params, col: int) -> torch.Tensor:
        return self.round_to(w, *self.column_params(p, col, w.shape[1]))

    def dequantize(self, q: torch.Tensor, p: Params, col: int) -> torch.Tensor:
        return self.value_of(q, *self.column_params(p, col, q.shape[1]))


def cat_params(parts: list[Params]) -> Params:
    """Join params fitted block by block (each [out, 1, ...]) into one [out, n, ...] set."""
    return {key: torch.cat([p[key] for p in parts], dim=1) for key in parts[0]}


@dataclass
class QuantizedWeight:
    grid: str
    shape: tuple[int, int]
    codes: torch.Tensor  # int16 [out, in]
    params: Params  # every tensor [out, n_blocks, ...]

    def to_host(self) -> "QuantizedWeight":
        """The same codes and params in CPU memory (what caches and files hold, wherever they were computed)."""
        if self.codes.device.type == "cpu":
            return self
        return QuantizedWeight(self.grid, self.shape, self.codes.cpu(), {k: v.cpu() for k, v in self.params.items()})


def fit_and_quantize(grid, w: torch.Tensor) -> QuantizedWeight:
    """`grid`: a Grid, a Format or a format name."""
    g = grid if isinstance(grid, Grid) else get_grid(grid)
    if w.ndim != 2:
        raise EdgekitError(f"grid {g.name}: expected a 2-D weight [out, in], got shape {tuple(w.shape)}")
    g.check_width(w.shape[1])
    w = w.to(torch.float32)
    both = g.fit_codes(w) if g.fit_codes is not None else None
    if both is not None:
        return QuantizedWeight(g.name, (w.shape[0], w.shape[1]), both[1], both[0])
    p = g.fit(w)
    return QuantizedWeight(g.name, (w.shape[0], w.shape[1]), g.quantize(w, p, 0), p)


def dequantize_weight(qw: QuantizedWeight) -> torch.Tensor:
    return get_grid(qw.grid).dequantize(qw.codes, qw.params, 0)


# --------------------------------------------------------------------------------------------
# simple block formats (ggml Q8_0 / Q4_0 / Q4_1, ModelOpt INT4 / INT8)


def _fit_q8_0(w: torch.Tensor) -> Params:
    d = w.abs().amax(dim=-1, keepdim=True) / 127  # [out, n, 1]
    return {"d": _to_fp16(d)}


def _fit_q4_0(w: torch.Tensor) -> Params:
    # the signed value of largest magnitude maps to -8, so the full [-8, 7] range is used
    imax = w.abs().argmax(dim=-1, keepdim=True)
    d = torch.gather(w, -1, imax) / -8  # [out, n, 1], may be negative
    return {"d": _to_fp16(d)}


def _fit_q5_0(w: torch.Tensor) -> Params:
    # as Q4_0 on 32 levels: the signed value of largest magnitude maps to -16 (quantize_row_q5_0_ref)
    imax = w.abs().argmax(dim=-1, keepdim=True)
    return {"d": _to_fp16(torch.gather(w, -1, imax) / -16)}


def _d_only(p: Params) -> tuple[torch.Tensor, None]:
    return p["d"].to(torch.float32), None


def _fit_with_min(nmax: int) -> Callable[[torch.Tensor], Params]:
    """Q4_1 (nmax 15) / Q5_1 (31): the block's min and (max - min) / nmax, both fp16 (quantize_row_q4_1_ref)."""

    def fit(w: torch.Tensor) -> Params:
        lo = w.amin(dim=-1, keepdim=True)  # [out, n, 1]
        hi = w.amax(dim=-1, keepdim=True)
        return {"d": _to_fp16((hi - lo) / nmax), "m": _to_fp16(lo)}

    return fit


def _eff_with_min(p: Params) -> tuple[torch.Tensor, torch.Tensor]:
    return p["d"].to(torch.float32), p["m"].to(torch.float32)  # value = d*q + m


def _fit_symmetric(maxbound: float, fp16_representable: bool) -> Callable[[torch.Tensor], Params]:
    def fit(w: torch.Tensor) -> Params:
        amax = w.abs().amax(dim=-1, keepdim=True)  # [out, n, 1]
        scale = amax / maxbound
        if fp16_representable:
            # TensorRT-LLM casts weight_scale to the activation dtype (fp16); a scale already on the
            # fp16 grid survives that cast unchanged, so what we compute is what it computes
            scale = _to_fp16(scale).to(torch.float32)
        # ModelOpt replaces zero scales with 1.0 (all-zero groups) so no runtime divides by 0
        scale = torch.where(scale == 0, torch.ones_like(scale), scale)
        return {"scale": scale}

    return fit


def _eff_scale(p: Params) -> tuple[torch.Tensor, None]:
    return p["scale"].to(torch.float32), None


# --------------------------------------------------------------------------------------------
# K-quants (super-block of 256)


def _quantize_subscales(v: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sub-block values [..., g] >= 0 -> (fp16 super-scale [..., 1], integer codes [..., g])."""
    vmax = v.amax(-1, keepdim=True)
    inv = torch.where(vmax > 0, levels / torch.where(vmax > 0, vmax, torch.ones_like(vmax)), torch.zeros_like(vmax))
    codes = nearest(inv * v).clamp(0, levels)
    return _to_fp16(vmax / levels), codes.to(torch.uint8)


def _weighted_subscales(v: torch.Tensor, w: torch.Tensor, levels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """_quantize_subscales with make_qp_quants' weighted choice among 9 super-scales: v, w [..., g] >= 0."""
    vmax = v.amax(-1, keepdim=True)
    safe_max = torch.where(vmax > 0, vmax, torch.ones_like(vmax))
    best_inv, best_err = None, None
    for k in (0, -4, -3, -2, -1, 1, 2, 3, 4):  # 0 first: the plain choice wins ties
        inv = (levels + 0.1 * k) / safe_max
        codes = nearest(inv * v).clamp(0, levels)
        err = (w * (v - codes / inv).square()).sum(-1, keepdim=True)
        better = torch.ones_like(err, dtype=torch.bool) if best_err is None else err < best_err
        best_inv = inv if best_inv is None else torch.where(better, inv, best_inv)
        best_err = err if best_err is None else torch.where(better, err, best_err)
    codes = nearest(best_inv * v).clamp(0, levels)
    # the least-squares super-scale for these codes, as make_qp_quants returns it
    sum_lx, sum_l2 = (w * v * codes).sum(-1, keepdim=True), (w * codes * codes).sum(-1, keepdim=True)
    safe_l2 = torch.where(sum_l2 > 0, sum_l2, torch.ones_like(sum_l2))
    d = torch.where((sum_l2 > 0) & (vmax > 0), sum_lx / safe_l2, torch.zeros_like(vmax))
    return _to_fp16(d), codes.to(torch.uint8)


def _fit_kquant_min(nmax: int, rmin: float, rdelta: float, nstep: int) -> Callable[[torch.Tensor], Params]:
    def fit(w: torch.Tensor) -> Params:
        out, n, block = w.shape
        x = w.reshape(out * n * 8, block // 8)  # [S, 32]
        scale, the_min = qkx2_search(x, nmax, rmin, rdelta, nstep)
        scale = scale.reshape(out, n, 8).clamp(min=0)  # a negative fitted scale is not storable
        the_min = the_min.reshape(out, n, 8)
        d, sc = _quantize_subscales(scale, 63)
        dmin, m = _quantize_subscales(the_min, 63)
        return {"d": d, "dmin": dmin, "sc": sc, "m": m}

    return fit


def _fit_kquant_min_weighted(nmax: int) -> Callable[[torch.Tensor, torch.Tensor], Params]:
    def fit(w: torch.Tensor, importance: torch.Tensor) -> Params:
        out, n, block = w.shape  # importance [n, block]
        sigma2 = 2 * w.square().mean(-1, keepdim=True)  # [out, n, 1] per super-block
        weights = importance.clamp(min=0).unsqueeze(0) * torch.sqrt(sigma2 + w.square())  # [out, n, block]
        x = w.reshape(out * n * 8, block // 8)  # [S, 32]
        scale, the_min = qkx2_search(x, nmax, -0.9, 0.05, 36, weights.reshape(x.shape))
        scale = scale.reshape(out, n, 8).clamp(min=0)
        the_min = the_min.reshape(out, n, 8)
        sub_w = weights.reshape(out, n, 8, block // 8).sum(-1)  # [out, n, 8]
        d, sc = _weighted_subscales(scale, sub_w, 63)
        dmin, m = _weighted_subscales(the_min, sub_w, 63)
        return {"d": d, "dmin": dmin, "sc": sc, "m": m}

    return fit


def _ggml_blocks(type_name: str, w: torch.Tensor, importance: torch.Tensor | None) -> np.ndarray | None:
    """llama.cpp's own quantizer's blocks of w [out, in] (every core), or None off a CPU or without the library."""
    if w.device.type != "cpu" or not llama_cpp_quantizer_loads():
        return None
    from edgekit.quant.ggml_quantize import quantize_rows

    imp = None if importance is None else importance.reshape(-1).numpy()
    return quantize_rows(w.reshape(w.shape[0], -1).numpy(), type_name.upper(), importance=imp)


def _llama_cpp_fit(type_name: str, search: Callable[..., Params]) -> Callable[..., Params]:
    """The fit of GGUF type `type_name` ("q4_k", "nvfp4"): llama.cpp's own quantizer on a CPU, `search` (the same
    rule in torch) elsewhere. Called as search is: (w [out, n, block]) or (w, importance [n, block])."""

    def fit(w: torch.Tensor, importance: torch.Tensor | None = None) -> Params:
        from edgekit.quant.gguf_layout import stored_params

        blocks = _ggml_blocks(type_name, w, importance)
        if blocks is None:
            return search(w) if importance is None else search(w, importance)
        return stored_params(type_name, blocks, w.shape[0])

    return fit


def _llama_cpp_codes(type_name: str) -> Callable[[torch.Tensor], tuple[Params, torch.Tensor] | None]:
    """Grid.fit_codes of GGUF type `type_name`: params and codes both read out of llama.cpp's blocks, so round to
    nearest is llama.cpp's bytes exactly, at ggml's rate (computing the codes in torch from the params halved it)."""

    def fit_codes(w: torch.Tensor) -> tuple[Params, torch.Tensor] | None:
        from edgekit.quant.gguf_layout import stored_codes, stored_params

        blocks = _ggml_blocks(type_name, w, None)
        if blocks is None:
            return None
        return stored_params(type_name, blocks, w.shape[0]), stored_codes(type_name, blocks, w.shape[0])

    return fit_codes


def llama_cpp_quantizer_loads() -> bool:
    """Whether llama.cpp's quantizer library (from llama-cpp-python) is here to fit K-quants and FP4 with."""
    from edgekit.quant.ggml_quantize import library_loads

    return library_loads()


def _eff_kquant_min(p: Params) -> tuple[torch.Tensor, torch.Tensor]:
    scale = p["d"].to(torch.float32) * p["sc"].to(torch.float32)  # [out, n, 8]
    offset = -(p["dmin"].to(torch.float32) * p["m"].to(torch.float32))
    return scale, offset


def _fit_q6_k(w: torch.Tensor) -> Params:
    out, n, block = w.shape
    scales = qx_search(w.reshape(out * n * 16, block // 16), 32, _GROUP_MAX_EPS).reshape(out, n, 16)
    imax = scales.abs().argmax(-1, keepdim=True)
    smax = torch.gather(scales, -1, imax)  # [out, n, 1] signed scale of largest magnitude
    zero = smax.abs() < _GROUP_MAX_EPS
    safe = torch.where(zero, torch.ones_like(smax), smax)
    iscale = -128 / safe
    sc = nearest(iscale * scales).clamp(-128, 127)
    sc = torch.where(zero, torch.zeros_like(sc), sc)
    d = torch.where(zero, torch.zeros_like(smax), 1 / iscale)
    return {"d": _to_fp16(d), "sc": sc.to(torch.int8)}


def _eff_q6_k(p: Params) -> tuple[torch.Tensor, None]:
    return p["d"].to(torch.float32) * p["sc"].to(torch.float32), None  # [out, n, 16]


# --------------------------------------------------------------------------------------------
# FP4: E2M1 levels under a power-of-two (MXFP4) or E4M3 (NVFP4) block scale, one byte "e" (edgekit.quant.fp4)


def _fp4(name: str, type_name: str, block: int, sub: int, fit, scale) -> Grid:
    return Grid(
        name,
        block,
        4,
        True,
        0,
        len(fp4.LEVELS) - 1,
        sub,
        lambda p: (scale(p["e"]), None),
        _llama_cpp_fit(type_name, lambda w: {"e": fit(w)}),
        values=E2M1,
        fit_codes=_llama_cpp_codes(type_name),
    )


def _fit_modelopt_nvfp4(w: torch.Tensor) -> Params:
    out, n, _ = w.shape
    g = fp4.modelopt_tensor_scale(w)
    return {
        "scale": fp4.modelopt_block_scale(w.abs().amax(-1, keepdim=True), g),  # float8_e4m3fn [out, n, 1]
        "global": g.reshape(1, 1, 1).expand(out, n, 1).contiguous(),
    }


def _eff_modelopt_nvfp4(p: Params) -> tuple[torch.Tensor, None]:
    return p["scale"].to(torch.float32) * p["global"] * 0.5, None  # halved: LEVELS are E2M1 doubled


def _fit_modelopt_fp8(w: torch.Tensor) -> Params:
    out, n, _ = w.shape
    return {"scale": fp8.tensor_scale(w).reshape(1, 1, 1).expand(out, n, 1).contiguous()}


# --------------------------------------------------------------------------------------------
# makers: each format (edgekit.quant.formats) names its grid's maker here and passes its own name


def _simple(name: str, block: int, bits: int, qmin: int, qmax: int, fit, eff, symmetric=True) -> Grid:
    return Grid(name, block, bits, symmetric, qmin, qmax, 0, eff, fit)


def q8_0(name: str) -> Grid:
    return _simple(name, 32, 8, -128, 127, _fit_q8_0, _d_only)


def q4_0(name: str) -> Grid:
    return _simple(name, 32, 4, -8, 7, _fit_q4_0, _d_only)


def q4_1(name: str) -> Grid:
    return _simple(name, 32, 4, 0, 15, _fit_with_min(15), _eff_with_min, symmetric=False)


def q5_1(name: str) -> Grid:
    return _simple(name, 32, 5, 0, 31, _fit_with_min(31), _eff_with_min, symmetric=False)


def q5_0(name: str) -> Grid:
    return _simple(name, 32, 5, -16, 15, _fit_q5_0, _d_only)


def kquant_min(name: str, type_name: str, nmax: int, rmin: float, nstep: int) -> Grid:
    """Q4_K (nmax 15) / Q5_K (31): 8 sub-blocks of 32 with a 6-bit scale and min each, under fp16 d and dmin."""
    return Grid(
        name,
        256,
        nmax.bit_length(),
        False,
        0,
        nmax,
        32,
        _eff_kquant_min,
        _llama_cpp_fit(type_name, _fit_kquant_min(nmax, rmin, 0.1, nstep)),
        _llama_cpp_fit(type_name, _fit_kquant_min_weighted(nmax)),
        fit_codes=_llama_cpp_codes(type_name),
    )


def q6_k(name: str) -> Grid:
    return Grid(
        name,
        256,
        6,
        True,
        -32,
        31,
        16,
        _eff_q6_k,
        _llama_cpp_fit("q6_k", _fit_q6_k),
        fit_codes=_llama_cpp_codes("q6_k"),
    )


def mxfp4(name: str) -> Grid:
    return _fp4(name, "mxfp4", 32, 0, fp4.mxfp4_scale_bytes, fp4.e8m0_half)


def nvfp4(name: str) -> Grid:
    return _fp4(name, "nvfp4", 64, 16, fp4.nvfp4_scale_bytes, fp4.ue4m3_half)


def modelopt_nvfp4(name: str) -> Grid:
    return Grid(
        name,
        16,
        4,
        True,
        0,
        len(fp4.LEVELS) - 1,
        0,
        _eff_modelopt_nvfp4,
        _fit_modelopt_nvfp4,
        values=E2M1,
        tensor_wide=("global",),
    )


def modelopt_fp8(name: str) -> Grid:
    # E4M3 codes are the float8 byte (0..255; 0x7F/0xFF, NaN, never produced) under one scale per tensor
    return Grid(name, 0, 8, True, 0, 255, 0, _eff_scale, _fit_modelopt_fp8, values=E4M3, tensor_wide=("scale",))


def int8_channel(name: str) -> Grid:
    return _simple(name, 0, 8, -128, 127, _fit_symmetric(127.0, False), _eff_scale)


def w4a16(name: str, group: int) -> Grid:
    """ModelOpt's symmetric INT4 with one fp16-representable scale per `group` columns (TensorRT casts it to fp16)."""
    return replace(_simple(name, group, 4, -8, 7, _fit_symmetric(7.0, True), _eff_scale), float16_scales=True)


def get_grid(name) -> Grid:
    """The grid of a quantized format: a Format or its name (edgekit.quant.formats keeps which grid each format has)."""
    from edgekit.quant.formats import parse

    return parse(name).grid
