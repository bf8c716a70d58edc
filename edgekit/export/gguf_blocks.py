"""GGUF block packing: QuantizedWeight (integer codes + stored params) -> ggml block bytes.

Packers only re-lay integers and already-rounded params out as ggml stores them
(ggml-common.h); they never look at float weights, so nothing is rounded twice.
Output is `uint8 [out, n_blocks * type_size]`, one row of blocks per weight row, which is
the byte shape gguf-py's writer and `gguf.quants.dequantize` take.

Block layouts (little-endian, QK_K = 256):
  Q8_0  d:f16 qs:i8[32]                                    34 bytes / 32
  Q4_0  d:f16 qs:u8[16]  (q+8; low nibbles cols 0-15, high 16-31)   18 / 32
  Q4_1  d:f16 m:f16 qs:u8[16]                              20 / 32
  Q4_K  d:f16 dmin:f16 scales:u8[12] (8 x 6-bit scale + 8 x 6-bit min) qs:u8[128]   144 / 256
  Q5_K  d dmin scales[12] qh:u8[32] (bit s of qh[l] = bit 4 of col 32s+l) qs[128]  176 / 256
  Q6_K  ql:u8[128] qh:u8[64] scales:i8[16] d:f16           210 / 256
"""

from __future__ import annotations

import numpy as np
import torch

from edgekit.quant.grids import QuantizedWeight, get_grid

# ggml_type ids (ggml.h / gguf-py GGMLQuantizationType) and block sizes in bytes
GGML_TYPE = {"f32": 0, "f16": 1, "q4_0": 2, "q4_1": 3, "q8_0": 8, "q4_k": 12, "q5_k": 13, "q6_k": 14, "bf16": 30}
TYPE_SIZE = {"q4_0": 18, "q4_1": 20, "q8_0": 34, "q4_k": 144, "q5_k": 176, "q6_k": 210}


def _f16_bytes(t: torch.Tensor) -> np.ndarray:
    """fp16 params [out, n, 1] -> uint8 [out, n, 2]."""
    return t.to(torch.float16).contiguous().numpy().view(np.uint8)


def _codes(qw: QuantizedWeight, bias: int, lo: int, hi: int, block: int) -> np.ndarray:
    """Codes [out, in] -> stored unsigned values [out, n, block], refusing out-of-range codes."""
    c = qw.codes.to(torch.int32)
    if c.numel() and (int(c.min()) < lo or int(c.max()) > hi):
        raise ValueError(f"{qw.grid}: codes outside [{lo}, {hi}]; they came from another grid")
    out, width = c.shape
    return (c + bias).numpy().astype(np.uint8).reshape(out, width // block, block)


def _nibbles(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    return (lo & 0x0F) | ((hi & 0x0F) << 4)


def pack_q8_0(qw: QuantizedWeight) -> np.ndarray:
    u = _codes(qw, 0, -128, 127, 32).view(np.int8).view(np.uint8)  # two's complement bytes
    return np.concatenate([_f16_bytes(qw.params["d"]), u], axis=-1).reshape(u.shape[0], -1)


def pack_q4_0(qw: QuantizedWeight) -> np.ndarray:
    u = _codes(qw, 8, -8, 7, 32)  # [out, n, 32]
    qs = _nibbles(u[..., :16], u[..., 16:])
    return np.concatenate([_f16_bytes(qw.params["d"]), qs], axis=-1).reshape(u.shape[0], -1)


def pack_q4_1(qw: QuantizedWeight) -> np.ndarray:
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


def pack_q4_k(qw: QuantizedWeight) -> np.ndarray:
    u = _codes(qw, 0, 0, 15, 256)
    p = qw.params
    parts = [_f16_bytes(p["d"]), _f16_bytes(p["dmin"]), _kquant_scales(p["sc"], p["m"]), _kquant_low_nibbles(u)]
    return np.concatenate(parts, axis=-1).reshape(u.shape[0], -1)


def pack_q5_k(qw: QuantizedWeight) -> np.ndarray:
    u = _codes(qw, 0, 0, 31, 256)
    out, n, _ = u.shape
    high = ((u >> 4) & 1).reshape(out, n, 8, 32)  # bit 4 of col 32s+l
    shifts = np.arange(8, dtype=np.uint8).reshape(1, 1, 8, 1)
    qh = (high << shifts).sum(axis=2, dtype=np.uint8)  # [out, n, 32]; bits are disjoint so sum == or
    p = qw.params
    parts = [_f16_bytes(p["d"]), _f16_bytes(p["dmin"]), _kquant_scales(p["sc"], p["m"]), qh, _kquant_low_nibbles(u)]
    return np.concatenate(parts, axis=-1).reshape(out, -1)


def pack_q6_k(qw: QuantizedWeight) -> np.ndarray:
    u = _codes(qw, 32, -32, 31, 256)
    out, n, _ = u.shape
    v = u.reshape(out, n, 2, 4, 32)  # [.., half h, quarter k, l] = col 128h + 32k + l
    ql = _nibbles(v[:, :, :, 0:2, :], v[:, :, :, 2:4, :]).reshape(out, n, 128)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 1, 4, 1)
    qh = (((v >> 4) & 3) << shifts).sum(axis=3, dtype=np.uint8).reshape(out, n, 64)
    sc = qw.params["sc"].to(torch.int8).contiguous().numpy().view(np.uint8)  # [out, n, 16]
    return np.concatenate([ql, qh, sc, _f16_bytes(qw.params["d"])], axis=-1).reshape(out, -1)


_PACKERS = {
    "gguf:q8_0": ("q8_0", pack_q8_0),
    "gguf:q4_0": ("q4_0", pack_q4_0),
    "gguf:q4_1": ("q4_1", pack_q4_1),
    "gguf:q4_k": ("q4_k", pack_q4_k),
    "gguf:q5_k": ("q5_k", pack_q5_k),
    "gguf:q6_k": ("q6_k", pack_q6_k),
}


def pack_blocks(qw: QuantizedWeight) -> tuple[int, np.ndarray]:
    """QuantizedWeight on a gguf:* grid -> (ggml type id, uint8 [out, row_bytes])."""
    if qw.grid not in _PACKERS:
        raise ValueError(f"grid {qw.grid} has no GGUF block layout; GGUF grids: {', '.join(_PACKERS)}")
    get_grid(qw.grid)  # validates the name
    type_name, pack = _PACKERS[qw.grid]
    data = pack(qw)
    assert data.shape == (qw.shape[0], qw.shape[1] // get_grid(qw.grid).block * TYPE_SIZE[type_name])
    return GGML_TYPE[type_name], np.ascontiguousarray(data)


def pack_raw(w: torch.Tensor, dtype: str) -> tuple[int, np.ndarray]:
    """Unquantized tensor -> (ggml type id, uint8 [..., row_bytes]) for f32 / f16 / bf16.

    bf16 and f16 use round-to-nearest-even, as ggml's converters do.
    """
    torch_dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    t = w.to(torch.float32).to(torch_dtype).contiguous()
    raw = t.view(torch.int16 if dtype != "f32" else torch.int32).numpy().view(np.uint8)
    return GGML_TYPE[dtype], raw.reshape(*w.shape[:-1], -1)
