"""A GGUF bundle run entirely by llama.cpp: the mmproj through libmtmd and the decoder, the C++ host's path.

Step for step what hosts/cpp/src/session.cpp does, so `edgekit run --bundle DIR --vision mmproj` and the C++
host give the same greedy answer from the same bundle:
  1. the image resized to the bundle's resolution by the processor (Pillow bicubic; the C++ host reproduces it
     byte for byte), so libmtmd's own Qwen2.5-VL resize (aspect kept, black padding) is the identity;
  2. the prompt assembled from the manifest's chat-template frames (edgekit.model.chat_frames), the image
     placeholder replaced by libmtmd's media marker;
  3. mtmd_tokenize, then per chunk: text through mtmd_helper_eval_chunk_single, images through mtmd_encode_chunk
     and mtmd_helper_decode_image_chunk (M-RoPE positions as libmtmd lays them out; the text after an image
     continues from the position it returns);
  4. greedy tokens from the position libmtmd returned (LlamaDecoder.greedy_continuation).
"""

from __future__ import annotations

import ctypes
import time
from pathlib import Path
from typing import Callable

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.runtime.mmproj_vision import CHUNK_IMAGE
from edgekit.runtime.pipeline import Answer


class MtmdPipeline:
    def __init__(self, bundle: Path, *, n_threads: int | None = None):
        from edgekit.runtime.gguf_bundle import bundle_prompt_assets, open_gguf_bundle, thread_settings
        from edgekit.runtime.llama_decoder import LlamaDecoder
        from edgekit.runtime.mmproj_vision import MmprojVision

        self.bundle = Path(bundle)
        self.opened = open_gguf_bundle(self.bundle)  # every artifact read below through the descriptor that was hashed
        self.manifest = self.opened.manifest
        parts = self.manifest["parts"]
        if "mmproj" not in parts:
            raise EdgekitError(f"{self.bundle}: has no mmproj part; --vision mmproj needs a GGUF bundle with one")
        if not self.manifest.get("prompt"):
            raise EdgekitError(f"{self.bundle}: its manifest has no chat-template frames (an older build); rebuild it")
        self.settings, self.wait_policy_applied = thread_settings(self.manifest, n_threads)
        threads = self.settings.threads
        self.assets = bundle_prompt_assets(self.opened)
        self.processor = self.assets.image
        w, h = self.manifest["preprocessing"]["resolution"]
        self.resize_to = (int(h), int(w))
        self.decoder = LlamaDecoder(
            self.opened.path(parts["decoder"]["path"]),
            n_threads=threads,
            n_ctx=self.manifest["context"],
            label=self.bundle / parts["decoder"]["path"],
        )
        self.vision = MmprojVision(
            self.opened.path(parts["mmproj"]["path"]),
            self.decoder,
            n_threads=threads,
            label=self.bundle / parts["mmproj"]["path"],
        )
        from llama_cpp import mtmd_cpp

        self._mtmd, self._lib = mtmd_cpp, self.decoder._lib
        self.backend = f"bundle ({parts['mmproj']['precision']} mmproj + {parts['decoder']['precision']} GGUF decoder, llama.cpp only)"

    def _pixels(self, image) -> np.ndarray:
        from edgekit.model.processor import target_size, to_rgb_pil
        from edgekit.model.prompt import as_image

        pil = to_rgb_pil(as_image(image))
        h, w = target_size(pil.height, pil.width, self.processor, self.resize_to)
        if pil.size != (w, h):
            pil = pil.resize((w, h), resample=self.processor.resample)
        return np.ascontiguousarray(np.asarray(pil, dtype=np.uint8))  # [h, w, 3]

    def _prefill(self, question: str, images: list, think: bool) -> tuple[int, float, float, int]:
        """Evaluate the prompt; returns (next position, preprocess s, vision s, prompt tokens)."""
        from edgekit.model.chat_frames import prompt_from_frames
        from edgekit.model.prompt import check_text

        check_text(question, "the prompt")
        t0 = time.perf_counter()
        pixels = [self._pixels(im) for im in images]  # the cameras in order, in front of the question
        marker = self._mtmd.mtmd_default_marker().decode()
        text = prompt_from_frames(self.manifest["prompt"], question, think=think, images=len(pixels), marker=marker)
        return self._evaluate(text, pixels, t0)

    def prefill_chat(
        self, turns, images: list, *, think: bool, max_new_tokens: int, cache=None
    ) -> tuple[int, tuple[float, float, float]]:
        """A conversation ((role, parts) turns, edgekit.model.prompt.prepare_chat) evaluated through libmtmd, the
        decoder left at its next-token distribution (for `edgekit serve`). The prompt is the checkpoint's template
        rendered in Python, images as libmtmd's markers. Returns (prompt tokens, (preprocess, vision, prefill) s).
        `cache` is unused: libmtmd encodes every image."""
        from edgekit.model.chat_frames import IMAGE_PLACEHOLDER
        from edgekit.model.prompt import build_prompt_turns

        t0 = time.perf_counter()
        pixels = [self._pixels(im) for im in images]
        text = build_prompt_turns(self.assets.chat_template, turns, think=think)
        text = text.replace(IMAGE_PLACEHOLDER, self._mtmd.mtmd_default_marker().decode())
        n_past, t_pre, t_vis, n_prompt = self._evaluate(text, pixels, t0)
        self.decoder.n_past, self.decoder.prompt_tokens = n_past, n_prompt
        self.decoder.check_room(max_new_tokens)
        return n_prompt, (t_pre, t_vis, time.perf_counter() - t0 - t_pre - t_vis)

    def _evaluate(self, text: str, pixels: list, t0: float) -> tuple[int, float, float, int]:
        """mtmd_tokenize the prompt text (media markers) with its images, then evaluate every chunk."""
        mtmd, lib = self._mtmd, self._lib
        self.decoder.reset()
        data = text.encode("utf-8")
        chunks = mtmd.mtmd_input_chunks_init()
        bitmaps = (mtmd.mtmd_bitmap_p_ctypes * max(1, len(pixels)))()
        try:
            for k, px in enumerate(pixels):
                h, w = px.shape[:2]
                bitmaps[k] = mtmd.mtmd_bitmap_init(w, h, px.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8)))
            entry = mtmd.mtmd_input_text(text=data, text_len=len(data), add_special=False, parse_special=True)
            rc = mtmd.mtmd_tokenize(self.vision._ctx, chunks, ctypes.byref(entry), bitmaps, len(pixels))
            if rc != 0:
                raise EdgekitError(f"libmtmd could not tokenize the prompt (code {rc})")
            n_tokens = int(mtmd.mtmd_helper_get_n_tokens(chunks))
            t1 = time.perf_counter()
            vision_s, n_past = 0.0, lib.llama_pos(0)
            n = mtmd.mtmd_input_chunks_size(chunks)
            for i in range(n):
                chunk = mtmd.mtmd_input_chunks_get(chunks, i)
                if mtmd.mtmd_input_chunk_get_type(chunk) == CHUNK_IMAGE:
                    tv = time.perf_counter()
                    if mtmd.mtmd_encode_chunk(self.vision._ctx, chunk) != 0:
                        raise EdgekitError("libmtmd failed to encode the image")
                    vision_s += time.perf_counter() - tv
                    rc = mtmd.mtmd_helper_decode_image_chunk(
                        self.vision._ctx,
                        self.decoder._ctx,
                        chunk,
                        mtmd.mtmd_get_output_embd(self.vision._ctx),
                        n_past,
                        0,
                        self.decoder.n_batch,
                        ctypes.byref(n_past),
                        mtmd.mtmd_helper_post_decode_callback(),
                        None,
                    )
                else:
                    rc = mtmd.mtmd_helper_eval_chunk_single(
                        self.vision._ctx,
                        self.decoder._ctx,
                        chunk,
                        n_past,
                        0,
                        self.decoder.n_batch,
                        i == n - 1,
                        ctypes.byref(n_past),
                    )
                if rc != 0:
                    raise EdgekitError(f"llama.cpp failed to evaluate prompt chunk {i} (code {rc})")
        finally:
            mtmd.mtmd_input_chunks_free(chunks)
            for k in range(len(pixels)):
                if bitmaps[k]:
                    mtmd.mtmd_bitmap_free(bitmaps[k])
        return int(n_past.value), t1 - t0, vision_s, n_tokens

    def answer(
        self,
        question: str,
        images: list,
        *,
        think: bool = False,
        max_new_tokens: int = 32,
        on_text: Callable[[str], None] | None = None,
        stop_at_end: bool = True,
    ) -> Answer:
        from edgekit.runtime.gguf_bundle import collect_answer

        t0 = time.perf_counter()
        n_past, t_pre, t_vis, n_prompt = self._prefill(question, images, think)
        self.decoder.n_past, self.decoder.prompt_tokens = n_past, n_prompt
        tokens = self.decoder.greedy_continuation(max_new_tokens, stop_at_end=stop_at_end)  # greedy, as the C++ host
        ids, text, t_first, t_end = collect_answer(self.decoder, tokens, on_text)
        t_first = t_first or t_end
        timings = {
            "preprocess": t_pre,
            "vision": t_vis,
            "prefill": t_first - t0 - t_pre - t_vis,
            "decode": t_end - t_first,
            "total": t_end - t0,
        }
        return Answer(text, ids, self.backend, timings, [])  # libmtmd holds the prompt as chunks, not one id list

    def teacher_logits(self, question: str, images: list, *, think: bool, answer_ids: list[int]) -> np.ndarray:
        n_past, *_ = self._prefill(question, images, think)
        first = self.decoder.last_logits()
        self.decoder.n_past = n_past
        return np.stack([first] + self.decoder.extend(list(answer_ids)))

    def close(self) -> None:
        self.vision.close()
        self.decoder.close()
        self.opened.close()
