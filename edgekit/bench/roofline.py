"""The decode roofline of this machine: measured read bandwidth, and the bytes one decoded token reads.

Decoding one token at batch 1 reads every weight of the decoder and lm_head once (the embedding table: one row)
and the KV cache of every earlier position, so tokens/s <= bandwidth / bytes per token (edgekit plan states the
same bound from a target's data sheet). On a CPU the bandwidth is measured here: a bitwise-OR reduction over a
1 GiB buffer (far beyond the caches; an integer OR keeps the arithmetic far below the memory rate, where numpy's
pairwise float sum is compute-bound at about 60% of it) split across as many threads as the decoder uses, best of
several passes, in a fresh process so that no other thread pool competes.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

BANDWIDTH_BYTES = 1 << 30


def read_bandwidth(threads: int, n_bytes: int = BANDWIDTH_BYTES, repeats: int = 5) -> float:
    """Best-of-`repeats` read bandwidth in bytes/s (numpy's reductions release the GIL: the threads read in parallel)."""
    x = np.ones(n_bytes // 8, dtype=np.uint64)
    chunks = np.array_split(x, threads)
    with ThreadPoolExecutor(threads) as pool:

        def one_pass() -> float:
            t = time.perf_counter()
            list(pool.map(np.bitwise_or.reduce, chunks))
            return time.perf_counter() - t

        one_pass()  # pages faulted in, threads started
        best = min(one_pass() for _ in range(repeats))
    return x.nbytes / best


def read_bandwidth_fresh(threads: int) -> float:
    """read_bandwidth in a fresh interpreter: no thread pools of this process's runtimes running beside it."""
    import subprocess
    import sys

    code = f"from edgekit.bench.roofline import read_bandwidth; print(read_bandwidth({int(threads)}))"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=600)
    return float(out.stdout.split()[-1])


def gguf_bytes_per_token(gguf_path: Path, positions: int) -> int:
    """Bytes one decoded token reads from a GGUF decoder: every tensor once except the embedding table (one row),
    plus an f16 K and V cache of `positions` earlier tokens in every layer."""
    from gguf import GGUFReader

    reader = GGUFReader(str(gguf_path))
    total = 0
    for t in reader.tensors:
        if t.name == "token_embd.weight":
            total += int(t.n_bytes) // int(t.shape[1])  # one row of the [vocab, hidden] table
        else:
            total += int(t.n_bytes)
    arch = reader.fields["general.architecture"].contents()
    field = {k.split(".", 1)[1]: v.contents() for k, v in reader.fields.items() if k.startswith(f"{arch}.")}
    kv_dim = field["attention.head_count_kv"] * field.get(
        "attention.key_length", field["embedding_length"] // field["attention.head_count"]
    )
    return total + 2 * field["block_count"] * kv_dim * positions * 2  # K and V, 2 bytes each
