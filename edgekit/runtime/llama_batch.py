"""One llama_batch for llama.cpp's C API (through llama-cpp-python), its arrays numpy buffers owned here."""

from __future__ import annotations

import ctypes

import numpy as np


class Batch:
    """A llama_batch whose arrays are numpy buffers owned here (kept alive while decoding). `seqs`: each token's
    sequence (KV slot) id, default 0."""

    def __init__(
        self,
        lib,
        *,
        tokens: np.ndarray | None = None,
        embeds: np.ndarray | None = None,
        pos: np.ndarray,
        want_logits: np.ndarray,
        seqs: np.ndarray | None = None,
    ):
        n = int(tokens.shape[0] if tokens is not None else embeds.shape[0])
        self.tokens = None if tokens is None else np.ascontiguousarray(tokens, dtype=np.int32)
        self.embeds = None if embeds is None else np.ascontiguousarray(embeds, dtype=np.float32)
        self.pos = np.ascontiguousarray(pos, dtype=np.int32)
        self.n_seq = np.ones(n, dtype=np.int32)
        self.seqs = np.zeros(n, np.int32) if seqs is None else np.ascontiguousarray(seqs, dtype=np.int32)  # [n]
        base, step = self.seqs.ctypes.data, self.seqs.itemsize
        self.seq_ptrs = (ctypes.POINTER(ctypes.c_int32) * n)(
            *[ctypes.cast(base + i * step, ctypes.POINTER(ctypes.c_int32)) for i in range(n)]
        )
        self.logits = np.ascontiguousarray(want_logits, dtype=np.int8)
        b = lib.llama_batch()
        b.n_tokens = n
        b.token = self.tokens.ctypes.data_as(ctypes.POINTER(lib.llama_token)) if self.tokens is not None else None
        b.embd = self.embeds.ctypes.data_as(ctypes.POINTER(ctypes.c_float)) if self.embeds is not None else None
        b.pos = self.pos.ctypes.data_as(ctypes.POINTER(lib.llama_pos))
        b.n_seq_id = self.n_seq.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        b.seq_id = ctypes.cast(self.seq_ptrs, ctypes.POINTER(ctypes.POINTER(lib.llama_seq_id)))
        b.logits = self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))
        self.struct = b
