"""Image embeddings from an mmproj GGUF, computed by llama.cpp's libmtmd (llama_cpp.mtmd_cpp).

libmtmd does its own preprocessing (resize to its min/max pixel limits, normalise with the mean/std
stored in the mmproj), then runs the vision tower and merger. Given an image whose sides are
already multiples of patch*merge (28 px) and inside the pixel limits, its resize is the identity
and the result is comparable with PyTorch's vision tower on the same pixels.

The output plugs into `LlamaDecoder` as an `ImageEmbedding` (merged-token grid rows x cols).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

from edgekit.closing import Closing
from edgekit.errors import EdgekitError
from edgekit.runtime.llama_decoder import LlamaDecoder
from edgekit.runtime.llama_setup import silence_llama_logs
from edgekit.runtime.prompt_segments import ImageEmbedding

CHUNK_IMAGE = 1  # MTMD_INPUT_CHUNK_TYPE_IMAGE


class MmprojVision(Closing):
    """Vision backend: RGB uint8 image -> ImageEmbedding, through libmtmd."""

    def __init__(
        self, mmproj_path: str | Path, decoder: LlamaDecoder, *, n_threads: int = 2, label: str | Path | None = None
    ):
        """mmproj_path may be a verified bundle's descriptor path (/proc/self/fd/N); label names the file in
        messages."""
        from llama_cpp import mtmd_cpp as mtmd

        path = Path(mmproj_path)
        self._ctx = None
        if not path.is_file():
            raise EdgekitError(f"{path}: mmproj file not found; write it with `edgekit export-decoder --mmproj PATH`")
        self._mtmd = mtmd
        quiet = silence_llama_logs(decoder._lib)
        mtmd.mtmd_log_set(quiet, ctypes.c_void_p(0))
        mtmd.mtmd_helper_log_set(quiet, ctypes.c_void_p(0))
        params = mtmd.mtmd_context_params_default()
        params.use_gpu = False
        params.print_timings = False
        params.n_threads = n_threads
        params.warmup = False
        params.flash_attn_type = 0  # disabled: the CPU flash-attention kernel rounds to f16
        self._ctx = mtmd.mtmd_init_from_file(str(path).encode(), decoder._model, params)
        path = Path(label) if label is not None else path
        if not self._ctx:
            raise EdgekitError(
                f"{path}: libmtmd could not load this mmproj (see the error above); it must come "
                "from the same checkpoint as the decoder GGUF"
            )
        self.hidden = decoder.hidden

    def embed(self, image: np.ndarray) -> ImageEmbedding:
        """uint8 [H, W, 3] RGB -> ImageEmbedding (float32 [rows*cols, hidden])."""
        mtmd = self._mtmd
        pixels = np.ascontiguousarray(image, dtype=np.uint8)
        if pixels.ndim != 3 or pixels.shape[2] != 3:
            raise EdgekitError(f"image array has shape {list(pixels.shape)}; pass RGB uint8 [H, W, 3]")
        h, w = pixels.shape[:2]
        bitmap = mtmd.mtmd_bitmap_init(w, h, pixels.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
        chunks = mtmd.mtmd_input_chunks_init()
        try:
            marker = mtmd.mtmd_default_marker()
            text = mtmd.mtmd_input_text(text=marker, text_len=len(marker), add_special=False, parse_special=True)
            bitmaps = (mtmd.mtmd_bitmap_p_ctypes * 1)(bitmap)
            rc = mtmd.mtmd_tokenize(self._ctx, chunks, ctypes.byref(text), bitmaps, 1)
            if rc != 0:
                raise EdgekitError(f"libmtmd could not tokenize a {w}x{h} image (code {rc})")
            chunk = next(
                (
                    mtmd.mtmd_input_chunks_get(chunks, i)
                    for i in range(mtmd.mtmd_input_chunks_size(chunks))
                    if mtmd.mtmd_input_chunk_get_type(mtmd.mtmd_input_chunks_get(chunks, i)) == CHUNK_IMAGE
                ),
                None,
            )
            if chunk is None:
                raise AssertionError("libmtmd returned no image chunk for an image marker")
            tokens = mtmd.mtmd_input_chunk_get_tokens_image(chunk)
            cols, rows = mtmd.mtmd_image_tokens_get_nx(tokens), mtmd.mtmd_image_tokens_get_ny(tokens)
            n = mtmd.mtmd_input_chunk_get_n_tokens(chunk)
            if n != rows * cols:
                raise AssertionError(f"libmtmd image has {n} tokens for a {rows}x{cols} grid")
            rc = mtmd.mtmd_encode_chunk(self._ctx, chunk)
            if rc != 0:
                raise EdgekitError(f"libmtmd failed to encode a {w}x{h} image (code {rc})")
            out = mtmd.mtmd_get_output_embd(self._ctx)
            embeds = np.ctypeslib.as_array(out, shape=(n * self.hidden,)).reshape(n, self.hidden).copy()  # [n, hidden]
        finally:
            mtmd.mtmd_input_chunks_free(chunks)
            mtmd.mtmd_bitmap_free(bitmap)
        return ImageEmbedding(embeds, (rows, cols))

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            self._mtmd.mtmd_free(self._ctx)
            self._ctx = None
