"""GGUF block packing: QuantizedWeight (integer codes + stored params) -> ggml block bytes.

Packers only re-lay integers and already-rounded params out as ggml stores them (each GGUF format names its
packer in edgekit.quant.gguf_layout); they never look at float weights, so nothing is rounded twice.
Output is `uint8 [out, n_blocks * type_size]`, one row of blocks per weight row, which is
the byte shape gguf-py's writer and `gguf.quants.dequantize` take.
"""

from __future__ import annotations

import numpy as np
import torch

from edgekit.quant.formats import gguf_block, parse
from edgekit.quant.grids import QuantizedWeight


def ggml_type(type_name: str) -> tuple[int, int]:
    """("q4_k", "f16", ...) -> (ggml_type id, bytes per block), from the gguf package's own tables."""
    from gguf import GGMLQuantizationType

    return int(GGMLQuantizationType[type_name.upper()]), gguf_block(type_name.upper())[1]


def pack_blocks(qw: QuantizedWeight) -> tuple[int, np.ndarray]:
    """QuantizedWeight on a gguf:* grid -> (ggml type id, uint8 [out, row_bytes]), by its format's packer."""
    fmt = parse(qw.grid)
    data = fmt.pack_gguf(qw)
    type_id, block_bytes = ggml_type(fmt.ggml_type)
    assert data.shape == (qw.shape[0], qw.shape[1] // fmt.grid.block * block_bytes)
    return type_id, np.ascontiguousarray(data)


def pack_raw(w: torch.Tensor, dtype: str) -> tuple[int, np.ndarray]:
    """Unquantized tensor -> (ggml type id, uint8 [..., row_bytes]) for f32 / f16 / bf16.

    bf16 and f16 use round-to-nearest-even, as ggml's converters do.
    """
    torch_dtype = {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    t = w.to(torch.float32).to(torch_dtype).contiguous()
    raw = t.view(torch.int16 if dtype != "f32" else torch.int32).numpy().view(np.uint8)
    return ggml_type(dtype)[0], raw.reshape(*w.shape[:-1], -1)
