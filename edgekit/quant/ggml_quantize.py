"""GGUF blocks by llama.cpp's own quantizer, on every core.

`libggml-base.so` (installed by llama-cpp-python) exports `ggml_quantize_chunk(type, src, dst, start, nrows,
n_per_row, imatrix)`: the reference quantizer `llama-quantize` itself runs. For an uncalibrated tensor edgekit
writes exactly its bytes (an RTN GGUF is then byte-identical to llama.cpp's for the same type); the K-quant grids
fit their block scales with it on a CPU (edgekit.quant.grids), 1.4-5.9x faster on two cores than the same search
in torch on MiMo's shapes (benchmarks/bench_kquant_fit.py). Rows are split across threads (the foreign call releases the GIL; every row is quantized
independently). Calibrated codes never come here: they are packed as they are (edgekit.export.gguf_blocks).
"""

from __future__ import annotations

import ctypes
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError

MIN_ROWS_PER_THREAD = 16


@lru_cache(maxsize=1)
def _library():
    try:
        import llama_cpp
    except ImportError:
        raise EdgekitError("writing quantized GGUF needs llama-cpp-python (pip install 'edgekit[gguf]')") from None
    path = Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"
    if not path.is_file():
        raise EdgekitError(f"{path}: not found; reinstall llama-cpp-python (scripts/build_llama_cpp.sh)")
    lib = ctypes.CDLL(str(path))
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [
        ctypes.c_int,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_int64,
        ctypes.c_void_p,
    ]
    return lib


def library_loads() -> bool:
    """Whether the library above is installed and loads (edgekit without llama-cpp-python fits in torch)."""
    try:
        _library()
    except EdgekitError:
        return False
    return True


def quantize_rows(
    x: np.ndarray, type_name: str, threads: int | None = None, importance: np.ndarray | None = None
) -> np.ndarray:
    """float32 [rows, n] -> the GGUF blocks of `type_name` ("Q4_K", ...; uint8 [rows * n / block * bytes]), llama.cpp's
    RTN, or its importance-weighted fit with `importance` [n] (an imatrix row, as llama-quantize passes it). Type ids
    and block sizes are the gguf package's (the format's own tables)."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    type_id = GGMLQuantizationType[type_name]
    block, size = GGML_QUANT_SIZES[type_id]
    x = np.ascontiguousarray(x, dtype=np.float32)
    rows, n = x.shape
    if n % block:
        raise EdgekitError(f"{type_name}: rows of {n} values are not whole {block}-value blocks")
    row_bytes = n // block * size
    imatrix = None
    if importance is not None:
        importance = np.ascontiguousarray(importance, dtype=np.float32)
        if importance.shape != (n,):
            raise EdgekitError(f"{type_name}: an importance of shape {importance.shape} for rows of {n} values")
        imatrix = importance.ctypes.data
    out = np.empty(rows * row_bytes, np.uint8)
    lib = _library()
    if threads is None:
        from edgekit.cores import available_cores

        threads = available_cores()
    parts = max(1, min(threads, rows // MIN_ROWS_PER_THREAD))
    bounds = np.linspace(0, rows, parts + 1).astype(int)

    def run(k: int) -> int:
        r0, r1 = int(bounds[k]), int(bounds[k + 1])
        # start is an element offset; ggml writes the rows at dst + start / n_per_row * row_bytes
        return lib.ggml_quantize_chunk(int(type_id), x.ctypes.data, out.ctypes.data, r0 * n, r1 - r0, n, imatrix)

    with ThreadPoolExecutor(parts) as pool:
        written = sum(pool.map(run, range(parts)))
    if written != out.nbytes:
        raise AssertionError(f"ggml_quantize_chunk wrote {written} bytes, expected {out.nbytes}")
    return out
