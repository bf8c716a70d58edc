"""FP4 (E2M1) codes and their block scales as llama.cpp stores them: pure functions over torch tensors.

An E2M1 code is one of 16 values; llama.cpp keeps them doubled so that they are integers (`LEVELS`, index = code:
0 1 2 3 4 6 8 12, then the same negated) and halves the block scale instead. Two block formats use them
(ggml-common.h, ggml-impl.h):
- MXFP4 (OCP microscaling): 32 values share an E8M0 scale, a power of two: byte e means 2^(e-127), stored
  halved as 2^(e-128); a block whose largest |x| is amax gets e = floor(log2 amax) - 2 + 127 (0 when amax is 0).
- NVFP4: 16 values share an unsigned E4M3 scale (4 exponent bits, bias 7, 3 mantissa bits; subnormals below 2^-6
  in steps of 2^-9; byte 0x7F reads as 0), the one nearest amax/6 rounding half up, also stored halved; four such
  sub-blocks make a 64-value block.
- ModelOpt's NVFP4 (TensorRT, Edge-LLM): 16 values share a signed-format E4M3 scale (torch.float8_e4m3fn, rounded
  to nearest even: amax/(6·g)), times one FP32 scale g per tensor (weight_scale_2 = the tensor's amax/(6·448), so
  every block scale fits E4M3's 448).
A value is rounded to the code whose scaled level is nearest, ties to the lower code (ggml's best_index_mxfp4),
which is also the smaller magnitude.
"""

from __future__ import annotations

import torch

LEVELS = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, -0.0, -1.0, -2.0, -3.0, -4.0, -6.0, -8.0, -12.0)
E2M1_MAX = 6.0  # E2M1's largest value (the largest level, 12, halved)
E4M3_MAX = 448.0  # float8_e4m3fn's largest finite value
_ROUND_ELEMENTS = 1 << 22  # values rounded per pass: [n, 16] float32 errors stay at 256 MiB


def e8m0_half(e: torch.Tensor) -> torch.Tensor:
    """MXFP4 scale bytes (uint8) -> the float32 scale of the doubled levels, 2^(e-128) (ggml_e8m0_to_fp32_half)."""
    return torch.ldexp(torch.ones_like(e, dtype=torch.float32), e.to(torch.int32) - 128)


def e8m0_fit(amax: torch.Tensor) -> torch.Tensor:
    """MXFP4: the scale byte of blocks whose largest |x| is amax (float32) -> uint8; floor(log2 amax) read exactly
    from the float's exponent."""
    _, exponent = torch.frexp(amax)  # amax = m * 2^exponent, 0.5 <= m < 1: floor(log2 amax) = exponent - 1
    e = (exponent - 1 - 2 + 127).clamp(0, 255)
    return torch.where(amax > 0, e, torch.zeros_like(e)).to(torch.uint8)


def ue4m3_half(code: torch.Tensor) -> torch.Tensor:
    """NVFP4 scale bytes (uint8) -> the float32 scale of the doubled levels (the E4M3 value halved; 0 and 0x7F: 0)."""
    c = code.to(torch.int32)
    exponent, mantissa = (c >> 3) & 0xF, (c & 0x7).to(torch.float32)
    normal = torch.ldexp(1.0 + mantissa / 8.0, exponent - 7)
    subnormal = torch.ldexp(mantissa, torch.full_like(c, -9))
    value = torch.where(exponent == 0, subnormal, normal) * 0.5
    return torch.where((c == 0) | (c == 0x7F), torch.zeros_like(value), value)


def ue4m3_fit(x: torch.Tensor) -> torch.Tensor:
    """float32 scales > 0 -> the nearest unsigned E4M3 byte, halves rounded up, saturating at 0x7E (448 at most);
    0 for x <= 0 or NaN."""
    x = torch.where(x > 0, x, torch.zeros_like(x)).clamp(max=448.0)  # NaN > 0 is False: 0
    bits = x.view(torch.int32)
    exponent = ((bits >> 23) & 0xFF) - 127 + 7  # E4M3's biased exponent, before rounding
    rounded = ((bits >> 20) & 0x7) + ((bits >> 19) & 1)  # top 3 mantissa bits, half up (8: carries)
    carried = exponent + (rounded >> 3)
    normal = torch.where(carried >= 15, torch.full_like(bits, 0x7E), (carried << 3) | (rounded & 0x7))
    subnormal = (x * 512.0 + 0.5).to(torch.int32).clamp(max=7)  # steps of 2^-9, half up; below half a step: 0
    return torch.where(exponent <= 0, subnormal, normal).to(torch.uint8)


def mxfp4_scale_bytes(w: torch.Tensor) -> torch.Tensor:
    """Blocks of 32 values w [out, n, 32] -> their E8M0 scale bytes [out, n, 1]."""
    return e8m0_fit(w.abs().amax(dim=-1, keepdim=True))


def nvfp4_scale_bytes(w: torch.Tensor) -> torch.Tensor:
    """Blocks of 64 values w [out, n, 64] -> the UE4M3 scale bytes of their four 16-value sub-blocks [out, n, 4]: the
    largest |x| of each maps to E2M1's largest value."""
    out, n, block = w.shape
    return ue4m3_fit(w.reshape(out, n, 4, block // 4).abs().amax(-1) / E2M1_MAX)


def nearest_code(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x, scale [..., k] float32 -> the code (int16, index into LEVELS) whose level * scale is nearest x; ties to the
    lower code. A zero scale gives code 0."""
    levels = torch.tensor(LEVELS, dtype=torch.float32, device=x.device)
    flat_x, flat_s = x.reshape(-1), scale.expand_as(x).reshape(-1)
    out = torch.empty(flat_x.shape, dtype=torch.int16, device=x.device)
    step = max(1, _ROUND_ELEMENTS // len(LEVELS))
    for a in range(0, flat_x.numel(), step):
        err = (flat_s[a : a + step, None] * levels - flat_x[a : a + step, None]).abs_()
        out[a : a + step] = err.argmin(-1).to(torch.int16)  # argmin: the first of equal errors
    return out.reshape(x.shape)


def level_value(code: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Codes (indices into LEVELS) and their scale -> float32 values, as the runtime computes them."""
    levels = torch.tensor(LEVELS, dtype=torch.float32, device=code.device)
    return scale * levels[code.long()]


def modelopt_tensor_scale(w: torch.Tensor) -> torch.Tensor:
    """ModelOpt NVFP4's per-tensor scale of weights w: amax/(6·448), float32 0-d (1 for an all-zero tensor)."""
    g = w.abs().amax().to(torch.float32) / (E2M1_MAX * E4M3_MAX)
    return torch.where(g > 0, g, torch.ones_like(g))


def modelopt_block_scale(block_amax: torch.Tensor, tensor_scale: torch.Tensor) -> torch.Tensor:
    """ModelOpt NVFP4's block scales (float8_e4m3fn) of blocks whose largest |x| is block_amax, under tensor_scale."""
    return (block_amax.to(torch.float32) / (E2M1_MAX * tensor_scale)).clamp(max=E4M3_MAX).to(torch.float8_e4m3fn)


def modelopt_activation_qdq(x: torch.Tensor, input_scale: torch.Tensor, block: int = 16) -> torch.Tensor:
    """NVFP4 W4A4's activations as TensorRT computes them (TRT_FP4DynamicQuantize, then the two dequantizations):
    every `block` values along the last dimension share an E4M3 scale of amax/(6·input_scale) times input_scale, and
    each value becomes the nearest E2M1 level under it. float32 math (the engine dequantizes with an fp16 copy of
    input_scale: an ULP of the scale apart)."""
    shape = x.shape
    xb = x.to(torch.float32).reshape(-1, shape[-1] // block, block)
    g = input_scale.to(torch.float32).reshape(())
    half = modelopt_block_scale(xb.abs().amax(-1, keepdim=True), g).to(torch.float32) * g * 0.5  # LEVELS are doubled
    return level_value(nearest_code(xb, half), half).reshape(shape).to(x.dtype)
