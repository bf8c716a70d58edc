"""NVIDIA ModelOpt "unified" checkpoint layout: pure functions, no I/O.

Facts this module encodes (read from ModelOpt's `pack_int4_in_uint8` / `convert_hf_quant_config_format`
and from TensorRT Edge-LLM's `ModelOptAWQPrepackedLinear` / `INT8SQLinear`, which load these files):

W4A16_AWQ, per quantized linear `X` with weight [out, in]:
  X.weight        uint8  [out/2, in]  byte (r, c) = code(2r, c) & 0xF | (code(2r+1, c) & 0xF) << 4,
                                      codes signed 4-bit in [-8, 7] (two's complement nibbles)
  X.weight_scale  f32    [out, in/group]   value = code * weight_scale[:, c // group]
  X.pre_quant_scale f16  [in]  optional; input multiplied by it. Omitted where the smoothing
                                is folded into the RMSNorm before (as ModelOpt does for q/k/v, gate/up).
W8A8_SQ_PER_CHANNEL:
  X.weight        int8   [out, in]
  X.weight_scale  f32    [out]
  X.input_scale   f32    []    per-tensor activation scale (x_q = round(x / input_scale))
W8A16 (ModelOpt "int8_wo"; TensorRT-LLM runs it, Edge-LLM 0.11 does not): as W8A8 without input_scale.
NVFP4 (W4A4) and W4A16_NVFP4 (weights only; read from Edge-LLM's NVFP4LinearMethod / nvfp4_dequantize):
  X.weight         uint8  [out, in/2]  byte (r, c) = code(r, 2c) | code(r, 2c+1) << 4, E2M1 nibbles (bit 3 the sign)
  X.weight_scale   float8_e4m3fn [out, in/16]
  X.weight_scale_2 f32    []    per tensor: value = e2m1(code) * weight_scale[:, c // 16] * weight_scale_2
  X.input_scale    f32    []    NVFP4 only: the activation's per-tensor scale (amax / (6 * 448))
FP8 (W8A8; read from Edge-LLM's FP8Linear, which casts both scales to float16 before its DequantizeLinear):
  X.weight         float8_e4m3fn [out, in]  value = e4m3(weight) * weight_scale
  X.weight_scale   f32    []    per tensor
  X.input_scale    f32    []    the activation's per-tensor scale (amax / 448)
Each algorithm is one Layout below: its tensors, their shapes and dtypes, packing and unpacking; the writer, the
reader and verify ask it instead of comparing algorithm names. The formats (edgekit.quant.formats) name the layouts
they are stored in; `edgekit.quant.formats.unified_layout(algo)` finds one by the name a checkpoint gives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from edgekit.quant import fp4, fp8

# ModelOpt's quant_algo values (hf_quant_config.json)
W4A16, W8A8, W8A16 = "W4A16_AWQ", "W8A8_SQ_PER_CHANNEL", "W8A16"
NVFP4, W4A16_NVFP4, FP8 = "NVFP4", "W4A16_NVFP4", "FP8"

Params = dict[str, torch.Tensor]


def pack_int4(codes: torch.Tensor) -> torch.Tensor:
    """Signed 4-bit codes [out, in] (any int dtype, values in [-8, 7]) -> uint8 [out/2, in]."""
    out, _ = codes.shape
    if out % 2:
        raise ValueError(f"INT4 packing pairs output rows; {out} rows is odd")
    nib = codes.to(torch.int16) & 0x0F  # two's complement nibble
    return (nib[0::2] | (nib[1::2] << 4)).to(torch.uint8)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """uint8 [out/2, in] -> signed codes int8 [out, in]."""
    p = packed.to(torch.int16)
    lo, hi = p & 0x0F, (p >> 4) & 0x0F
    signed = lambda n: torch.where(n >= 8, n - 16, n)  # noqa: E731 - nibble -> [-8, 7]
    out = torch.empty((2 * p.shape[0], p.shape[1]), dtype=torch.int16)
    out[0::2], out[1::2] = signed(lo), signed(hi)
    return out.to(torch.int8)


def pack_fp4(codes: torch.Tensor) -> torch.Tensor:
    """E2M1 codes [out, in] (0..15: index into fp4.LEVELS, which is the nibble) -> uint8 [out, in/2], low nibble the
    even column."""
    c = codes.to(torch.int16)
    return (c[:, 0::2] | (c[:, 1::2] << 4)).to(torch.uint8)


def unpack_fp4(packed: torch.Tensor) -> torch.Tensor:
    """uint8 [out, in/2] -> E2M1 codes int8 [out, in]."""
    p = packed.view(torch.uint8).to(torch.int16)
    out = torch.empty((p.shape[0], 2 * p.shape[1]), dtype=torch.int16)
    out[:, 0::2], out[:, 1::2] = p & 0x0F, p >> 4
    return out.to(torch.int8)


Spec = dict[str, tuple[tuple[int, ...], torch.dtype]]  # tensor suffix ("weight", "weight_scale", ...) -> shape, dtype


@dataclass(frozen=True)
class Layout:
    """How one quant_algo stores a linear [out, in] with groups of `group` columns."""

    algo: str
    codes: tuple[int, int]  # the range of its codes
    activation_scale: bool  # an input_scale per linear
    spec: Callable[[int, int, int], Spec]  # (out, in, group) -> the tensors beside input_scale
    pack: Callable[[torch.Tensor, Params], dict[str, torch.Tensor]]  # (codes, grid params) -> tensors by suffix
    unpack: Callable[[Callable[[str], torch.Tensor]], tuple[torch.Tensor, Params]]  # get(suffix) -> codes, params
    dequantize: Callable[[torch.Tensor, Params, int], torch.Tensor]  # (codes, params, group) -> float32 [out, in]
    invalid_codes: tuple[int, ...] = ()  # codes inside `codes` that stand for no number (E4M3's NaN bytes)
    zero_block_scales: bool = False  # an all-zero group may store scale 0 (NVFP4's E4M3 scales; integer scales: never)
    fixed_group: int = 0  # the algorithm's own group size (NVFP4: 16); 0: hf_quant_config's group_size says
    group_in_config: bool = False  # hf_quant_config.json carries group_size
    config_fields: tuple[tuple[str, object], ...] = ()  # more fields of hf_quant_config.json's "quantization"
    exported_as: str = "int8_qdq"  # what Edge-LLM's exporter makes of each linear (edgekit.bundle.edgellm checks it)

    def nbytes(self, out: int, inp: int, group: int) -> dict[str, int]:
        return {
            k: _numel(shape) * torch.empty((), dtype=dtype).element_size()
            for k, (shape, dtype) in self.spec(out, inp, group).items()
        }


def _numel(shape: tuple[int, ...]) -> int:
    n = 1
    for d in shape:
        n *= d
    return n


def _int4() -> Layout:
    def pack(codes, p):
        return {"weight": pack_int4(codes), "weight_scale": p["scale"].to(torch.float32).reshape(codes.shape[0], -1)}

    def unpack(get):
        return unpack_int4(_typed(get("weight"), torch.uint8)), {"scale": get("weight_scale").to(torch.float32)}

    def dequantize(codes, p, group):
        return codes.to(torch.float32) * p["scale"].to(torch.float32).repeat_interleave(group, dim=1)

    return Layout(
        W4A16,
        (-8, 7),
        False,
        lambda o, i, g: {"weight": ((o // 2, i), torch.uint8), "weight_scale": ((o, i // g), torch.float32)},
        pack,
        unpack,
        dequantize,
        group_in_config=True,
        exported_as="int4_plugin",
        # Edge-LLM's INT4 kernel has no zero point: codes are symmetric around 0.
        config_fields=(("has_zero_point", False), ("pre_quant_scale", True)),
    )


def _int8(algo: str) -> Layout:
    def pack(codes, p):
        return {"weight": codes.to(torch.int8), "weight_scale": p["scale"].to(torch.float32).reshape(-1)}

    def unpack(get):
        return _typed(get("weight"), torch.int8), {"scale": get("weight_scale").to(torch.float32)}

    def dequantize(codes, p, group):
        return codes.to(torch.float32) * p["scale"].to(torch.float32).reshape(-1, 1)

    return Layout(
        algo,
        (-128, 127),
        algo == W8A8,
        lambda o, i, g: {"weight": ((o, i), torch.int8), "weight_scale": ((o,), torch.float32)},
        pack,
        unpack,
        dequantize,
    )


def _nvfp4(algo: str) -> Layout:
    def pack(codes, p):
        glob = p["global"].reshape(-1)
        if not bool((glob == glob[0]).all()):
            raise ValueError("NVFP4: the per-tensor scale differs between blocks; the grid was fitted piecewise")
        return {
            "weight": pack_fp4(codes),
            "weight_scale": p["scale"].reshape(codes.shape[0], -1).contiguous(),
            "weight_scale_2": glob[0].to(torch.float32).clone(),
        }

    def unpack(get):
        codes = unpack_fp4(_typed(get("weight"), torch.uint8))
        scale = _typed(get("weight_scale"), torch.float8_e4m3fn)
        out, n = scale.shape
        glob = get("weight_scale_2").to(torch.float32).reshape(())
        return codes, {"scale": scale.reshape(out, n, 1), "global": glob.expand(out, n, 1).contiguous()}

    def dequantize(codes, p, group):
        out, n = codes.shape[0], codes.shape[1] // group
        s = (p["scale"].to(torch.float32) * p["global"] * 0.5).reshape(out, n, 1)  # the doubled levels' scale
        return fp4.level_value(codes.reshape(out, n, group), s).reshape(codes.shape)

    return Layout(
        algo,
        (0, len(fp4.LEVELS) - 1),
        algo == NVFP4,
        lambda o, i, g: {
            "weight": ((o, i // 2), torch.uint8),
            "weight_scale": ((o, i // g), torch.float8_e4m3fn),
            "weight_scale_2": ((), torch.float32),
        },
        pack,
        unpack,
        dequantize,
        zero_block_scales=True,
        fixed_group=16,
        group_in_config=True,
        exported_as="fp4_qdq",
    )


def _fp8() -> Layout:
    def pack(codes, p):
        scale = p["scale"].reshape(-1)
        if not bool((scale == scale[0]).all()):
            raise ValueError("FP8: the per-tensor scale differs between rows; the grid was fitted piecewise")
        return {
            "weight": codes.to(torch.uint8).view(torch.float8_e4m3fn),
            "weight_scale": scale[0].to(torch.float32).clone(),
        }

    def unpack(get):
        codes = _typed(get("weight"), torch.float8_e4m3fn).view(torch.uint8).to(torch.int16)
        scale = get("weight_scale").to(torch.float32).reshape(())
        return codes, {"scale": scale.expand(codes.shape[0], 1, 1).contiguous()}

    def dequantize(codes, p, group):
        return fp8.level_value(codes, p["scale"].to(torch.float32).reshape(-1, 1))

    return Layout(
        FP8,
        (0, 255),
        True,
        lambda o, i, g: {"weight": ((o, i), torch.float8_e4m3fn), "weight_scale": ((), torch.float32)},
        pack,
        unpack,
        dequantize,
        invalid_codes=(0x7F, 0xFF),
        exported_as="fp8_qdq",
    )


def _typed(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    if t.dtype != dtype:
        raise ValueError(f"stored as {t.dtype}, the layout needs {dtype}")
    return t


INT4_AWQ = _int4()
INT8_WEIGHT_ONLY, INT8_SMOOTHQUANT = _int8(W8A16), _int8(W8A8)
NVFP4_WEIGHT_ONLY, NVFP4_W4A4 = _nvfp4(W4A16_NVFP4), _nvfp4(NVFP4)
FP8_W8A8 = _fp8()


def hf_quant_config(layout: Layout, group: int, exclude: list[str], producer_version: str) -> dict:
    """hf_quant_config.json as ModelOpt writes it for one uniform algorithm."""
    q: dict = {"quant_algo": layout.algo, "kv_cache_quant_algo": None, "exclude_modules": sorted(exclude)}
    if layout.group_in_config:
        q["group_size"] = group
    q.update(dict(layout.config_fields))
    return {"producer": {"name": "edgekit", "version": producer_version}, "quantization": q}


def config_quantization_block(hf_quant: dict) -> dict:
    """config.json's `quantization_config`: ModelOpt's compressed-tensors-style rendering of hf_quant_config."""
    q = hf_quant["quantization"]
    block: dict = {
        "ignore": list(q["exclude_modules"]),
        "quant_algo": q["quant_algo"],
        "producer": hf_quant["producer"],
        "quant_method": "modelopt",
    }
    if "group_size" in q:
        # ModelOpt writes no config_groups for W4A16_AWQ or W8A8; Edge-LLM reads group_size from here
        # when hf_quant_config.json is absent.
        block["group_size"] = q["group_size"]
    return block
