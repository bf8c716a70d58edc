"""The byte layout of GGUF blocks (ggml-common.h): codes + stored params -> bytes, and bytes -> stored params.

Packers only re-lay integers and already-rounded params out as ggml stores them; they never look at
float weights, so nothing is rounded twice. Output is `uint8 [out, n_blocks * type_size]`, one row of
blocks per weight row, which is the byte shape gguf-py's writer and `gguf.quants.dequantize` take.
`stored_params` reads a K-quant's or FP4 format's block scales back out of such bytes (edgekit.quant.grids fits with
llama.cpp's own quantizer and keeps its scales; the codes follow from them).

Block layouts (little-endian, QK_K = 256):
  Q8_0  d:f16 qs:i8[32]                                    34 bytes / 32
  Q4_0  d:f16 qs:u8[16]  (q+8; low nibbles cols 0-15, high 16-31)   18 / 32
  Q4_1  d:f16 m:f16 qs:u8[16]                              20 / 32
  Q5_0  d:f16 qh:u32 (bit j = bit 4 of col j) qs:u8[16]  (q+16; low 4 bits as Q4_0)     22 / 32
  Q5_1  d:f16 m:f16 qh:u32 qs:u8[16]  (q in 0..31, as Q5_0's without the +16)             24 / 32
  Q4_K  d:f16 dmin:f16 scales:u8[12] (8 x 6-bit scale + 8 x 6-bit min) qs:u8[128]   144 / 256
  Q5_K  d dmin scales[12] qh:u8[32] (bit s of qh[l] = bit 4 of col 32s+l) qs[128]  176 / 256
  Q6_K  ql:u8[128] qh:u8[64] scales:i8[16] d:f16           210 / 256
  MXFP4 e:u8 (E8M0) qs:u8[16] (E2M1 codes; low nibbles cols 0-15, high 16-31)         17 / 32
  NVFP4 d:u8[4] (UE4M3, one per 16 cols) qs:u8[32] (byte 8s+j = col 16s+j | col 16s+8+j << 4)   36 / 64
"""

from __future__ import annotations

import numpy as np
import torch


def _f16_bytes(t: torch.Tensor) -> np.ndarray:
    """fp16 params [out, n, 1] -> uint8 [out, n, 2]."""
    return t.to(torch.float16).contiguous().numpy().view(np.uint8)


def _codes(qw, bias: int, lo: int, hi: int, block: int) -> np.ndarray:
    """Codes [out, in] -> stored unsigned values [out, n, block], refusing out-of-range codes."""
    c = qw.codes.to(torch.int32)
    if c.numel() and (int(c.min()) < lo or int(c.max()) > hi):
        raise ValueError(f"{qw.grid}: codes outside [{lo}, {hi}]; they came from another grid")
    out, width = c.shape
    return (c + bias).numpy().astype(np.uint8).reshape(out, width // block, block)


def _nibbles(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return (lo & 0x0F) | ((hi & 0x0F) << 4)


def pack_q8_0(qw) -> np.ndarray:
    u = _codes(qw, 0, -128, 127, 32).view(np.int8).view(np.uint8)  # two's complement bytes
    return np.concatenate([_f16_bytes(qw.params["d"]), u], axis=-1).reshape(u.shape[0], -1)


def pack_q4_0(qw) -> np.ndarray:
    u = _codes(qw, 8, -8, 7, 32)  # [out, n, 32]
    qs = _nibbles(u[..., :16], u[..., 16:])
    return np.concatenate([_f16_bytes(qw.params["d"]), qs], axis=-1).reshape(u.shape[0], -1)


def _fifth_bits(u: np.ndarray) -> np.ndarray:
    """5-bit codes [out, n, 32] -> qh uint8 [out, n, 4]: bit 4 of column j is bit j of a little-endian u32."""
    high = ((u >> 4) & 1).astype(np.uint32) << np.arange(32, dtype=np.uint32)
    return np.ascontiguousarray(high.sum(-1, dtype=np.uint32).astype("<u4")).view(np.uint8).reshape(*u.shape[:2], 4)


def pack_q5_0(qw) -> np.ndarray:
    u = _codes(qw, 16, -16, 15, 32)  # [out, n, 32], 0..31
    qs = _nibbles(u[..., :16], u[..., 16:])
    return np.concatenate([_f16_bytes(qw.params["d"]), _fifth_bits(u), qs], axis=-1).reshape(u.shape[0], -1)


def pack_q5_1(qw) -> np.ndarray:
    u = _codes(qw, 0, 0, 31, 32)
    qs = _nibbles(u[..., :16], u[..., 16:])
    parts = [_f16_bytes(qw.params["d"]), _f16_bytes(qw.params["m"]), _fifth_bits(u), qs]
    return np.concatenate(parts, axis=-1).reshape(u.shape[0], -1)


def pack_q4_1(qw) -> np.ndarray:
    u = _codes(qw, 0, 0, 15, 32)
    qs = _nibbles(u[..., :16], u[..., 16:])
    parts = [_f16_bytes(qw.params["d"]), _f16_bytes(qw.params["m"]), qs]
    return np.concatenate(parts, axis=-1).reshape(u.shape[0], -1)


def _kquant_scales(sc: torch.Tensor, m: torch.Tensor) -> np.ndarray:
    """6-bit scales and mins [out, n, 8] -> the 12 packed bytes of block_q4_K / block_q5_K."""
    sc = sc.numpy().astype(np.uint8)
    m = m.numpy().astype(np.uint8)
    first = (sc[..., :4] & 0x3F) | ((sc[..., 4:] >> 4) << 6)  # low 6 bits of sc 0-3, high 2 of sc 4-7
    second = (m[..., :4] & 0x3F) | ((m[..., 4:] >> 4) << 6)
    third = (sc[..., 4:] & 0x0F) | ((m[..., 4:] & 0x0F) << 4)
    return np.concatenate([first, second, third], axis=-1)  # [out, n, 12]


def _kquant_low_nibbles(u: np.ndarray) -> np.ndarray:
    """Values [out, n, 256] -> qs [out, n, 128]: byte l of chunk c = col 64c+l | col 64c+32+l << 4."""
    out, n, _ = u.shape
    v = u.reshape(out, n, 4, 2, 32)
    return _nibbles(v[:, :, :, 0, :], v[:, :, :, 1, :]).reshape(out, n, 128)


def pack_q4_k(qw) -> np.ndarray:
    u = _codes(qw, 0, 0, 15, 256)
    p = qw.params
    parts = [_f16_bytes(p["d"]), _f16_bytes(p["dmin"]), _kquant_scales(p["sc"], p["m"]), _kquant_low_nibbles(u)]
    return np.concatenate(parts, axis=-1).reshape(u.shape[0], -1)


def pack_q5_k(qw) -> np.ndarray:
    u = _codes(qw, 0, 0, 31, 256)
    out, n, _ = u.shape
    high = ((u >> 4) & 1).reshape(out, n, 8, 32)  # bit 4 of col 32s+l
    shifts = np.arange(8, dtype=np.uint8).reshape(1, 1, 8, 1)
    qh = (high << shifts).sum(axis=2, dtype=np.uint8)  # [out, n, 32]; bits are disjoint so sum == or
    p = qw.params
    parts = [_f16_bytes(p["d"]), _f16_bytes(p["dmin"]), _kquant_scales(p["sc"], p["m"]), qh, _kquant_low_nibbles(u)]
    return np.concatenate(parts, axis=-1).reshape(out, -1)


def pack_q6_k(qw) -> np.ndarray:
    u = _codes(qw, 32, -32, 31, 256)
    out, n, _ = u.shape
    v = u.reshape(out, n, 2, 4, 32)  # [.., half h, quarter k, l] = col 128h + 32k + l
    ql = _nibbles(v[:, :, :, 0:2, :], v[:, :, :, 2:4, :]).reshape(out, n, 128)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 1, 4, 1)
    qh = (((v >> 4) & 3) << shifts).sum(axis=3, dtype=np.uint8).reshape(out, n, 64)
    sc = qw.params["sc"].to(torch.int8).contiguous().numpy().view(np.uint8)  # [out, n, 16]
    return np.concatenate([ql, qh, sc, _f16_bytes(qw.params["d"])], axis=-1).reshape(out, -1)


def pack_mxfp4(qw) -> np.ndarray:
    u = _codes(qw, 0, 0, 15, 32)  # [out, n, 32]
    return np.concatenate([qw.params["e"].numpy(), _nibbles(u[..., :16], u[..., 16:])], axis=-1).reshape(u.shape[0], -1)


def pack_nvfp4(qw) -> np.ndarray:
    u = _codes(qw, 0, 0, 15, 64)
    out, n, _ = u.shape
    v = u.reshape(out, n, 4, 2, 8)  # [.., sub-block s, half h, j] = col 16s + 8h + j
    qs = _nibbles(v[:, :, :, 0, :], v[:, :, :, 1, :]).reshape(out, n, 32)
    return np.concatenate([qw.params["e"].numpy(), qs], axis=-1).reshape(out, -1)


def _f16_params(blocks: np.ndarray, at: int) -> torch.Tensor:
    """The fp16 at byte `at` of every block [out, n, size] -> [out, n, 1]."""
    return torch.from_numpy(np.ascontiguousarray(blocks[..., at : at + 2]).view(np.float16).copy())


def _kquant_scales_back(packed: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """The 12 bytes of `_kquant_scales` [out, n, 12] -> (sc, m), each uint8 [out, n, 8] (ggml's get_scale_min_k4)."""
    first, second, third = packed[..., 0:4], packed[..., 4:8], packed[..., 8:12]
    sc = np.concatenate([first & 0x3F, (third & 0x0F) | ((first >> 6) << 4)], axis=-1)
    m = np.concatenate([second & 0x3F, (third >> 4) | ((second >> 6) << 4)], axis=-1)
    return torch.from_numpy(sc.copy()), torch.from_numpy(m.copy())


def stored_params(type_name: str, blocks: np.ndarray, rows: int) -> dict[str, torch.Tensor]:
    """uint8 blocks of `rows` rows ("q4_k", "q5_k", "q6_k", "mxfp4", "nvfp4") -> the params edgekit.quant.grids
    stores, [out, n, ...]."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    b = blocks.reshape(rows, -1, GGML_QUANT_SIZES[GGMLQuantizationType[type_name.upper()]][1])
    if type_name in ("mxfp4", "nvfp4"):  # the scale bytes lead the block
        return {"e": torch.from_numpy(b[..., : 1 if type_name == "mxfp4" else 4].copy())}
    if type_name == "q6_k":
        sc = torch.from_numpy(np.ascontiguousarray(b[..., 192:208]).view(np.int8).copy())
        return {"d": _f16_params(b, 208), "sc": sc}
    sc, m = _kquant_scales_back(b[..., 4:16])
    return {"d": _f16_params(b, 0), "dmin": _f16_params(b, 2), "sc": sc, "m": m}


def _split_nibbles(qs: np.ndarray, axis: int) -> np.ndarray:
    """Bytes -> (low, high) nibbles stacked on a new axis `axis` (the inverse of _nibbles)."""
    return np.stack([qs & 0x0F, qs >> 4], axis=axis)


def stored_codes(type_name: str, blocks: np.ndarray, rows: int) -> torch.Tensor:
    """uint8 blocks of `rows` rows ("q4_k", "q5_k", "q6_k", "mxfp4", "nvfp4") -> the codes edgekit.quant.grids
    stores, int16 [out, in]: the inverse of the packers above (so ggml's quantizer gives codes and params at once)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    b = blocks.reshape(rows, -1, GGML_QUANT_SIZES[GGMLQuantizationType[type_name.upper()]][1])
    out, n, _ = b.shape
    if type_name == "mxfp4":
        u, bias = _split_nibbles(b[..., 1:17], 2), 0  # [out, n, 2, 16]: cols 0-15, then 16-31
    elif type_name == "nvfp4":
        u, bias = _split_nibbles(b[..., 4:36].reshape(out, n, 4, 8), 3), 0  # [.., s, h, j] = col 16s + 8h + j
    elif type_name == "q6_k":
        low = _split_nibbles(b[..., 0:128].reshape(out, n, 2, 2, 32), 3).reshape(out, n, 2, 4, 32)  # [.., h, k, l]
        shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 1, 4, 1)
        high = (b[..., 128:192].reshape(out, n, 2, 1, 32) >> shifts) & 3
        u, bias = low | (high << 4), 32
    else:  # q4_k, q5_k: byte l of chunk c = col 64c+l | col 64c+32+l << 4
        qs = b[..., 48:176] if type_name == "q5_k" else b[..., 16:144]
        u, bias = _split_nibbles(qs.reshape(out, n, 4, 32), 3), 0  # [.., c, half, l]
        if type_name == "q5_k":
            shifts = np.arange(8, dtype=np.uint8).reshape(1, 1, 8, 1)
            high = (b[..., 16:48].reshape(out, n, 1, 32) >> shifts) & 1  # [.., s, l]: bit 4 of col 32s+l
            u = u.reshape(out, n, 8, 32) | (high << 4)
    return torch.from_numpy(u.reshape(out, -1).astype(np.int16) - bias)
