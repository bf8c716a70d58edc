"""The float64 references edgekit's fused attention kernels are defined by (tests/kernels/test_kernels.py checks the
kernels against them):
  vit_window_attention_reference  rotary (rotate_half) on q and k, softmax(q kᵀ/√D) v inside each window
  decode_attention_reference      M-RoPE'd new token appended, GQA attention over the whole cache
"""

from __future__ import annotations

import numpy as np


def rotate_half(x: np.ndarray) -> np.ndarray:
    h = x.shape[-1] // 2
    return np.concatenate([-x[..., h:], x[..., :h]], axis=-1)


def apply_rotary(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """x [..., tokens?, D] with cos/sin broadcastable: x·cos + rotate_half(x)·sin (transformers' convention)."""
    return x * cos + rotate_half(x) * sin


def vit_window_attention_reference(
    qkv: np.ndarray, cos: np.ndarray, sin: np.ndarray, cu_windows: np.ndarray
) -> np.ndarray:
    """qkv [T, 3, H, D], cos/sin [T, D], cu_windows [W+1] -> [T, H*D], all float64."""
    qkv = qkv.astype(np.float64)
    T, _, H, D = qkv.shape
    q = apply_rotary(qkv[:, 0], cos[:, None, :].astype(np.float64), sin[:, None, :].astype(np.float64))  # [T, H, D]
    k = apply_rotary(qkv[:, 1], cos[:, None, :].astype(np.float64), sin[:, None, :].astype(np.float64))
    v = qkv[:, 2]
    out = np.zeros((T, H, D))
    for a, b in zip(cu_windows[:-1], cu_windows[1:]):
        s = np.einsum("qhd,khd->hqk", q[a:b], k[a:b]) / np.sqrt(D)
        p = np.exp(s - s.max(-1, keepdims=True))
        p /= p.sum(-1, keepdims=True)
        out[a:b] = np.einsum("hqk,khd->qhd", p, v[a:b])
    return out.reshape(T, H * D)


def decode_attention_reference(q_new, k_new, v_new, cos, sin, cache_k, cache_v, seq_lens, scale_k=None, scale_v=None):
    """One decode step in float64: q/k_new M-RoPE'd, the new k/v appended (to an INT8 cache: quantized as the kernel
    defines it, symmetric per head with scale amax/127), GQA attention.

    q_new [B, Hq, D], k_new/v_new [B, Hkv, D], cos/sin [B, D], caches [B, Hkv, C, D] (int8 with scales [B, Hkv, C]).
    Returns [B, Hq, D].
    """
    B, Hq, D = q_new.shape
    Hkv = k_new.shape[1]
    G = Hq // Hkv
    c, s = cos.astype(np.float64)[:, None, :], sin.astype(np.float64)[:, None, :]
    q = apply_rotary(q_new.astype(np.float64), c, s)
    k1 = apply_rotary(k_new.astype(np.float64), c, s)
    v1 = v_new.astype(np.float64)
    if scale_k is not None:
        k1, v1 = _int8_round_trip(k1), _int8_round_trip(v1)
    out = np.zeros((B, Hq, D))
    for b in range(B):
        n = int(seq_lens[b])
        keys = cache_k[b, :, :n].astype(np.float64)
        vals = cache_v[b, :, :n].astype(np.float64)
        if scale_k is not None:
            keys = keys * scale_k[b, :, :n, None]
            vals = vals * scale_v[b, :, :n, None]
        keys = np.concatenate([keys, k1[b][:, None]], axis=1)  # [Hkv, n+1, D]
        vals = np.concatenate([vals, v1[b][:, None]], axis=1)
        for h in range(Hq):
            sc = keys[h // G] @ q[b, h] / np.sqrt(D)
            p = np.exp(sc - sc.max())
            out[b, h] = (p / p.sum()) @ vals[h // G]
    return out


def _int8_round_trip(x: np.ndarray) -> np.ndarray:
    """Symmetric INT8 per row (last axis): scale amax/127 (1 for an all-zero row), codes rint(x/scale)."""
    amax = np.abs(x).max(-1, keepdims=True)
    scale = np.where(amax > 0, amax / 127, 1.0)
    return np.clip(np.rint(x / scale), -127, 127) * scale


def check_close(out: np.ndarray, ref: np.ndarray, atol: float, rtol: float, name: str) -> None:
    """|out − ref| ≤ atol + rtol·|ref| elementwise; raises AssertionError listing the first mismatches."""
    out = out.astype(np.float64)
    bad = np.argwhere(np.abs(out - ref) > atol + rtol * np.abs(ref))
    if len(bad):
        first = ", ".join(
            f"{tuple(int(i) for i in idx)}: {out[tuple(idx)]:.5g} vs {ref[tuple(idx)]:.5g}" for idx in bad[:5]
        )
        raise AssertionError(
            f"{name}: {len(bad)} of {out.size} elements outside atol {atol} + rtol {rtol}; first: {first}"
        )
