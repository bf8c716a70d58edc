"""The kernels' numerical cases, defined once for the CPU emulation tests (tests/kernels/test_kernels.py) and the GPU
check (scripts/gpu_check.py), so a GPU runs exactly what the emulator was tested on: fresh random inputs from a seed,
ragged windows, MiMo-Embodied's heads, long contexts, INT8 KV. The bar: ‖out − ref‖/‖ref‖ < REL_TOL against float64
for f16 inputs with f32 accumulation, plus an elementwise check naming the first mismatching elements.
"""

from __future__ import annotations

import numpy as np

from edgekit.metrics import relative_error
from edgekit.kernels.reference import (
    apply_rotary,
    check_close,
    decode_attention_reference,
    vit_window_attention_reference,
)

REL_TOL = 5e-3

# (window lengths in tokens, heads, head_dim)
VIT_CASES = [
    ([64] * 4 + [37, 1, 19], 3, 80),  # 112 px windows (64 patches), ragged tail, a single-token window; 313 tokens
    ([64, 64, 41], 16, 80),  # MiMo-Embodied's 16 heads
    ([333], 2, 80),  # full attention over one image: several query and key tiles, ragged last tile
    ([150, 150], 1, 80),  # full attention, two images in one call
    ([64, 27], 2, 64),  # the head_dim 64 instantiation
]
# (tokens already cached per sequence, query heads, KV heads, split-K count, INT8 KV)
DECODE_CASES = [
    ([200, 57], 8, 2, 3, False),  # GQA 4:1 (MiMo's ratio), two sequences of different lengths
    ([0], 4, 1, 4, False),  # first token: attention over itself alone; more splits than keys
    ([333, 1], 8, 2, 5, True),  # INT8 KV with per-token-per-head scales
    ([8191, 4099], 8, 2, 16, False),  # long context (8192 with the new token), split-K, batch 2
    ([8191], 8, 2, 16, True),  # long context, INT8 KV
    ([1000], 32, 8, 4, True),  # MiMo's 32 query / 8 KV heads
]


def vision_rotary(grid_h: int, grid_w: int, head_dim: int = 80, theta: float = 10000.0):
    """Qwen2.5-ViT's 2-D rotary table for one image (row-major patches): half the frequencies for rows, half for columns."""
    dim = head_dim // 2
    inv = 1.0 / theta ** (np.arange(0, dim, 2) / dim)  # [dim/2]
    hh, ww = np.meshgrid(np.arange(grid_h), np.arange(grid_w), indexing="ij")
    freqs = np.concatenate([hh.reshape(-1, 1) * inv, ww.reshape(-1, 1) * inv], axis=1)  # [T, dim]
    emb = np.concatenate([freqs, freqs], axis=1)  # [T, head_dim]
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


def vit_case(rng, windows: list[int], heads: int, scale: float = 1.0, head_dim: int = 80):
    T = sum(windows)
    qkv = (rng.standard_normal((T, 3, heads, head_dim)) * scale).astype(np.float16)
    side = int(np.ceil(np.sqrt(T)))
    cos, sin = vision_rotary(side, side, head_dim)
    cu = np.concatenate([[0], np.cumsum(windows)]).astype(np.int32)
    return qkv, cos[:T], sin[:T], cu


def mrope_table(positions: np.ndarray, head_dim: int = 128, theta: float = 1e6, sections=(16, 24, 24)):
    """Qwen2.5-VL's M-RoPE cos/sin for one token per row of positions [B, 3] (t, h, w): frequency pairs
    [0, 16) rotate with t, [16, 40) with h, [40, 64) with w; rotate_half layout cat(freqs, freqs)."""
    inv = 1.0 / theta ** (np.arange(0, head_dim, 2) / head_dim)  # [64]
    which = np.repeat(np.arange(3), sections)  # section of each frequency pair
    freqs = positions[:, which].astype(np.float64) * inv  # [B, 64]
    emb = np.concatenate([freqs, freqs], axis=1)
    return np.cos(emb).astype(np.float32), np.sin(emb).astype(np.float32)


def decode_case(rng, lens: list[int], q_heads: int, kv_heads: int, capacity: int, int8: bool):
    B, D = len(lens), 128
    q = rng.standard_normal((B, q_heads, D)).astype(np.float16)
    k = rng.standard_normal((B, kv_heads, D)).astype(np.float16)
    v = rng.standard_normal((B, kv_heads, D)).astype(np.float16)
    cos, sin = mrope_table(rng.integers(0, 4 * max(lens) + 8, size=(B, 3)))
    keys = rng.standard_normal((B, kv_heads, capacity, D)) * 1.5
    vals = rng.standard_normal((B, kv_heads, capacity, D))
    if not int8:
        return q, k, v, cos, sin, keys.astype(np.float16), vals.astype(np.float16), None, None
    sk = np.abs(keys).max(-1) / 127
    sv = np.abs(vals).max(-1) / 127
    ck = np.clip(np.rint(keys / sk[..., None]), -127, 127).astype(np.int8)
    cv = np.clip(np.rint(vals / sv[..., None]), -127, 127).astype(np.int8)
    return q, k, v, cos, sin, ck, cv, sk.astype(np.float32), sv.astype(np.float32)


def check_vit(lib, rng, windows: list[int], heads: int, head_dim: int, label: str) -> float:
    """One ViT case through `lib` (emulated or CUDA) against float64; returns the relative error, raises
    AssertionError (naming `label`, e.g. the seed) when it fails the bar."""
    qkv, cos, sin, cu = vit_case(rng, windows, heads, scale=2.0, head_dim=head_dim)
    out = lib.vit_window_attention(qkv, cos, sin, cu)
    ref = vit_window_attention_reference(qkv, cos, sin, cu)
    err = relative_error(out, ref)
    assert err < REL_TOL, f"{label}: relative error {err:.3e}"
    check_close(out, ref, atol=2e-2 * np.abs(ref).max(), rtol=2e-2, name=f"vit {label}")
    return err


def check_decode(lib, rng, lens: list[int], q_heads: int, kv_heads: int, splits: int, int8: bool, label: str) -> float:
    """One decode case through `lib` against float64, and the new token landed in the cache at seq_lens[b], rotated
    (and quantized for INT8); returns the relative error of the attention output."""
    q, k, v, cos, sin, ck, cv, sk, sv = decode_case(rng, lens, q_heads, kv_heads, max(lens) + 8, int8)
    ref = decode_attention_reference(q, k, v, cos, sin, ck, cv, np.array(lens), sk, sv)
    out = lib.decode_attention(q, k, v, cos, sin, ck, cv, np.array(lens), splits, sk, sv)
    err = relative_error(out, ref)
    assert err < REL_TOL, f"{label}: relative error {err:.3e}"
    check_close(out, ref, atol=2e-2 * np.abs(ref).max(), rtol=2e-2, name=f"decode {label}")
    for b, n in enumerate(lens):
        want = apply_rotary(k[b].astype(np.float64), cos[b].astype(np.float64), sin[b].astype(np.float64))
        got = ck[b, :, n].astype(np.float64) * (sk[b, :, n, None] if int8 else 1.0)
        tol = (sk[b, :, n, None] * 0.51) if int8 else 2e-3 * np.abs(want).max()
        assert np.all(np.abs(got - want) <= tol + 1e-6), f"{label}: appended key differs"
    return err
