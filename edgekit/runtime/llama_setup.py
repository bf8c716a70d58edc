"""Setting llama.cpp up for edgekit, apart from the decoder that uses it: its log callback (errors only, shared with
libmtmd) and a context's parameters (sequences, threads, the KV cache type)."""

from __future__ import annotations

import ctypes

from edgekit.errors import EdgekitError

_LOG_SILENCER = None
KV_CACHE_TYPES = ("f32", "f16", "q8_0")  # ggml types llama.cpp's KV cache takes here


def silence_llama_logs(lib):
    """llama.cpp logs every load to stderr; keep errors only. Returns the callback (also for libmtmd)."""
    global _LOG_SILENCER
    if _LOG_SILENCER is None:

        def _log(level, text, user_data):
            if level == 4 and text:  # GGML_LOG_LEVEL_ERROR
                import sys

                sys.stderr.write(text.decode("utf-8", "replace"))

        _LOG_SILENCER = lib.llama_log_callback(_log)
        lib.llama_log_set(_LOG_SILENCER, ctypes.c_void_p(0))
    return _LOG_SILENCER


def context_params(lib, *, n_ctx: int, n_seq: int, n_batch: int, n_threads: int, kv_cache: str):
    """llama_context_params for n_seq sequences (KV slots) of n_ctx positions each, in one unified cache when several."""
    if kv_cache not in KV_CACHE_TYPES:
        raise EdgekitError(f"kv_cache={kv_cache!r}: choose one of {', '.join(KV_CACHE_TYPES)}")
    from gguf import GGMLQuantizationType

    cparams = lib.llama_context_default_params()
    cparams.n_ctx = n_ctx * n_seq
    cparams.n_seq_max = n_seq
    cparams.kv_unified = n_seq > 1  # one pool: sequences that share a prefix share its cells (llama_memory_seq_cp)
    cparams.n_batch = cparams.n_ubatch = n_batch
    cparams.n_threads = cparams.n_threads_batch = n_threads
    # f16 is llama.cpp's default; parity tests use f32 so that only the weights differ from PyTorch.
    cparams.type_k = cparams.type_v = int(GGMLQuantizationType[kv_cache.upper()])  # the gguf package's id
    if kv_cache == "f32":
        cparams.flash_attn_type = 0  # DISABLED: the CPU flash-attention kernel rounds Q to f16
    return cparams
