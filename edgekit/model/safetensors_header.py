"""Read and validate a safetensors file's header without touching tensor data.

A safetensors file is: 8-byte little-endian header length N, N bytes of JSON
`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`, then the data.
Reading only the header lets `inspect` work on shards larger than free memory, and checking
offsets against the file size catches truncated downloads before anything is loaded.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from math import prod
from pathlib import Path

from edgekit.errors import EdgekitError

DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
    "U16": 2,
    "U32": 4,
    "U64": 8,
}
MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    name: str
    dtype: str
    shape: tuple[int, ...]
    begin: int  # byte offset of the data, relative to the start of the data section
    end: int
    file: Path

    @property
    def numel(self) -> int:
        return prod(self.shape)


def read_header(path: Path) -> dict[str, TensorInfo]:
    """Parse and validate the header of one safetensors file. Raises EdgekitError naming the file."""
    from edgekit.json_files import parse_json
    from edgekit.safe_files import open_regular

    path = Path(path)
    fd = open_regular(path)
    try:
        size = os.fstat(fd).st_size
        head = os.pread(fd, 8, 0)
        if len(head) < 8:
            raise EdgekitError(f"{path}: truncated safetensors file ({size} bytes, no header); re-download it")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise EdgekitError(
                f"{path}: corrupt or truncated safetensors header (declares {n} header bytes, file has {size}); re-download it"
            )
        raw = os.pread(fd, n, 8)
    finally:
        os.close(fd)
    try:
        header = parse_json(raw, f"{path} (safetensors header)")
    except EdgekitError as e:
        raise EdgekitError(f"{e.message}; re-download it") from None
    if not isinstance(header, dict):
        raise EdgekitError(f"{path}: corrupt safetensors header (not a JSON object)")
    data_size = size - 8 - n
    infos: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = entry["dtype"], tuple(int(s) for s in entry["shape"]), entry["data_offsets"]
            if (
                not all(isinstance(x, int) and not isinstance(x, bool) for x in (begin, end))
                or min(shape, default=0) < 0
            ):
                raise TypeError
        except (KeyError, TypeError, ValueError):
            raise EdgekitError(f"{path}: corrupt safetensors header entry for tensor '{name}'") from None
        if dtype not in DTYPE_BYTES:
            raise EdgekitError(f"{path}: tensor '{name}' has unknown dtype {dtype}")
        if end - begin != prod(shape) * DTYPE_BYTES[dtype] or begin < 0:
            raise EdgekitError(
                f"{path}: tensor '{name}' byte range {begin}..{end} does not match shape {list(shape)} {dtype}"
            )
        if end > data_size:
            raise EdgekitError(
                f"{path}: truncated safetensors file: tensor '{name}' ends at byte {end} of the data section "
                f"but the file holds only {data_size}; re-download it"
            )
        infos[name] = TensorInfo(name, dtype, shape, int(begin), int(end), path)
    # Two tensors sharing bytes is a corrupt (or crafted) file: a write to one would change the other.
    spans = sorted((i.begin, i.end, i.name) for i in infos.values() if i.end > i.begin)
    for (b0, e0, n0), (b1, e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise EdgekitError(
                f"{path}: tensors '{n0}' (bytes {b0}..{e0}) and '{n1}' (bytes {b1}..{e1}) overlap; "
                "the file is corrupt, re-download it"
            )
    return infos
