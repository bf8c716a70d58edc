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
"""

from __future__ import annotations

import torch

from edgekit.quant.formats import W4A16_AWQ as W4A16, W8A8_SQ as W8A8, W8A16  # ModelOpt quant_algo names

ALGOS = (W4A16, W8A8, W8A16)
CODE_RANGE = {W4A16: (-8, 7), W8A8: (-128, 127), W8A16: (-128, 127)}
INT8_ALGOS = (W8A8, W8A16)


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


def dequantize(algo: str, codes: torch.Tensor, weight_scale: torch.Tensor, group: int) -> torch.Tensor:
    """Float32 weight [out, in] from codes and the stored scales."""
    c = codes.to(torch.float32)
    if algo == W4A16:
        return c * weight_scale.to(torch.float32).repeat_interleave(group, dim=1)
    if algo in INT8_ALGOS:
        return c * weight_scale.to(torch.float32).reshape(-1, 1)
    raise ValueError(f"unknown unified quant_algo {algo!r}")


def hf_quant_config(algo: str, group: int, exclude: list[str], producer_version: str) -> dict:
    """hf_quant_config.json as ModelOpt writes it for one uniform algorithm."""
    q: dict = {"quant_algo": algo, "kv_cache_quant_algo": None, "exclude_modules": sorted(exclude)}
    if algo == W4A16:
        # Edge-LLM's INT4 kernel has no zero point: codes are symmetric around 0.
        q.update({"group_size": group, "has_zero_point": False, "pre_quant_scale": True})
    return {"producer": {"name": "edgekit", "version": producer_version}, "quantization": q}


def config_quantization_block(hf_quant: dict) -> dict:
    """config.json's `quantization_config`: ModelOpt's compressed-tensors-style rendering of hf_quant_config."""
    q = hf_quant["quantization"]
    block: dict = {"ignore": list(q["exclude_modules"]), "quant_algo": q["quant_algo"],
                   "producer": hf_quant["producer"], "quant_method": "modelopt"}
    if q["quant_algo"] == W4A16:
        # ModelOpt writes no config_groups for W4A16_AWQ or W8A8; Edge-LLM reads group_size from here
        # when hf_quant_config.json is absent.
        block["group_size"] = q["group_size"]
    return block
