"""FP8 E4M3 codes under one per-tensor scale, as ModelOpt's FP8 checkpoint stores them: pure functions over torch.

A code is the byte of a float8_e4m3fn (sign, 4 exponent bits with bias 7, 3 mantissa bits; subnormals in steps of
2^-9; 0x7F and 0xFF are NaN, so the largest value is 448). ModelOpt's FP8 (TensorRT Edge-LLM's FP8Linear) keeps a
weight as `code * weight_scale` with one FP32 `weight_scale` per tensor (its amax / 448) and quantizes activations
the same way with a calibrated per-tensor `input_scale` (amax / 448). Rounding is the float8 conversion's: to the
nearest value, ties to even, after saturating to ±448 (TensorRT's QuantizeLinear saturates too).

Edge-LLM casts both scales to float16 before its DequantizeLinear, so edgekit's weight scale is a float16 value (the
smallest one at or above amax / 448: no weight saturates): the engine's scale is the stored one, not a rounding of it.
"""

from __future__ import annotations

import torch

E4M3_MAX = 448.0
# |x| / scale up to which rounding still follows x: 448 plus half the gap to the next step (416 -> 448 is 32)
REACH = E4M3_MAX + 16.0


def nearest_code(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x, scale [..., k] float32 -> codes (int16 0..255, the float8_e4m3fn byte) of the value nearest x / scale;
    a zero scale gives code 0."""
    safe = torch.where(scale == 0, torch.ones_like(scale), scale)
    q = (x.to(torch.float32) / safe).clamp(-E4M3_MAX, E4M3_MAX).to(torch.float8_e4m3fn)
    codes = q.view(torch.uint8).to(torch.int16)
    return torch.where(scale == 0, torch.zeros_like(codes), codes)


def code_value(code: torch.Tensor) -> torch.Tensor:
    """Codes (int16 0..255) -> the float32 value of each E4M3 byte."""
    return code.to(torch.uint8).view(torch.float8_e4m3fn).to(torch.float32)


def level_value(code: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Codes and their scale -> float32 values, as the runtime computes them."""
    return scale * code_value(code)


def gap_at(code: torch.Tensor) -> torch.Tensor:
    """Codes -> the distance from each code's value to the next larger magnitude (float32): 2^(e-3) for a normal
    value in [2^e, 2^(e+1)), 2^-9 for the subnormals and zero."""
    v = code_value(code).abs()
    _, exponent = torch.frexp(v)  # |v| = m * 2^exponent, 0.5 <= m < 1: e = exponent - 1
    e = torch.where(v > 0, exponent - 1 - 3, torch.full_like(exponent, -9)).clamp(min=-9)
    return torch.ldexp(torch.ones_like(v), e)


def tensor_scale(w: torch.Tensor) -> torch.Tensor:
    """The per-tensor weight scale of w: the smallest float16 value >= amax / 448, as float32 0-d (1 for an all-zero
    tensor)."""
    want = w.abs().amax().to(torch.float32) / E4M3_MAX
    s = want.to(torch.float16)
    if s.to(torch.float32) < want:  # rounded down: the next float16 up, so that amax stays inside ±448
        s = torch.nextafter(s, torch.tensor(float("inf"), dtype=torch.float16))
    s = s.to(torch.float32)
    return torch.where(s > 0, s, torch.ones_like(s))


def activation_qdq(x: torch.Tensor, input_scale: torch.Tensor) -> torch.Tensor:
    """FP8 W8A8's activations as TensorRT computes them (QuantizeLinear to E4M3, DequantizeLinear), float32 math."""
    s = input_scale.to(torch.float32).reshape(())
    return level_value(nearest_code(x.to(torch.float32), s), s).to(x.dtype)
