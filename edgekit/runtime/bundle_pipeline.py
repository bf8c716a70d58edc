"""Run a built bundle on this machine: ONNX Runtime vision tower + llama.cpp decoder.

The bundle's manifest says which artifacts serve which part; this module wires them into the
same `answer()` verb as the reference pipeline. Hashes are verified before anything is loaded.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.runtime.pipeline import Answer


class BundlePipeline:
    def __init__(self, bundle: Path, *, n_threads: int | None = None):
        from edgekit.runtime.gguf_bundle import bundle_prompt_assets, open_gguf_bundle, thread_settings

        self.bundle = Path(bundle)
        # Seal, paths, ranges and hashes before loading anything; everything below comes from the manifest that
        # verified, and every artifact is read through the descriptor its hash was computed from.
        self.opened = open_gguf_bundle(self.bundle)
        self.manifest = self.opened.manifest
        parts = self.manifest["parts"]
        self.assets = bundle_prompt_assets(self.opened)
        self.settings, self.wait_policy_applied = thread_settings(self.manifest, n_threads)
        n_threads = self.settings.threads
        vision = parts["vision"]
        if vision.get("format") != "onnx":
            raise EdgekitError(f"{self.bundle}: parts.vision is {vision.get('format')!r}, not an ONNX graph; "
                               "run it with --vision mmproj, or rebuild the bundle")
        from edgekit.runtime.llama_decoder import LlamaDecoder
        from edgekit.runtime.onnx_vision import OnnxVision

        data = vision.get("external_data")
        self.vision = OnnxVision(self.bundle / vision["path"], threads=n_threads,
                                 model_bytes=self.opened.read(vision["path"], max_bytes=2 << 30),
                                 external_data=self.opened.fd(data) if data else None)
        self.resize_to = (self.vision.info.height, self.vision.info.width)  # the graph's static size
        self.decoder = LlamaDecoder(self.opened.path(parts["decoder"]["path"]), n_threads=n_threads,
                                    n_ctx=self.manifest["context"], label=self.bundle / parts["decoder"]["path"])
        self.backend = f"bundle ({vision['precision']} ONNX vision + {parts['decoder']['precision']} GGUF decoder)"

    def encode(self, question: str, images: list, *, think: bool):
        """Prompt ids and image embeddings for the decoder, and the seconds spent on (preprocess, vision)."""
        from edgekit.model.prompt import prepare_inputs
        from edgekit.runtime.prompt_segments import ImageEmbedding

        t0 = time.perf_counter()
        inputs = prepare_inputs(self.assets, question, images, think=think, resize_to=self.resize_to)
        t1 = time.perf_counter()
        merge = self.assets.spatial_merge_size
        embeds = []
        if len(inputs.image_grid_thw):
            out = self.vision.encode(inputs.pixel_values, inputs.image_grid_thw)  # [all tokens, hidden]
            start = 0
            for t, gh, gw in inputs.image_grid_thw:
                n = int(t * gh * gw) // (merge * merge)
                embeds.append(ImageEmbedding(np.ascontiguousarray(out[start:start + n]), (int(gh) // merge, int(gw) // merge)))
                start += n
        t2 = time.perf_counter()
        return inputs.input_ids.tolist(), embeds, (t1 - t0, t2 - t1)

    def answer(self, question: str, images: list, *, think: bool = False, max_new_tokens: int = 32,
               on_text: Callable[[str], None] | None = None, stop_at_end: bool = True) -> Answer:
        t0 = time.perf_counter()
        prompt_ids, embeds, (t_pre, t_vis) = self.encode(question, images, think=think)
        from edgekit.runtime.gguf_bundle import collect_answer

        t2 = time.perf_counter()
        tokens = self.decoder.generate(prompt_ids, embeds, max_new_tokens=max_new_tokens, stop_at_end=stop_at_end)
        ids, text, t_first, t3 = collect_answer(self.decoder, tokens, on_text)
        t_first = t_first or t3
        timings = {"preprocess": t_pre, "vision": t_vis, "prefill": t_first - t2, "decode": t3 - t_first, "total": t3 - t0}
        return Answer(text, ids, self.backend, timings, prompt_ids)

    def teacher_logits(self, question: str, images: list, *, think: bool, answer_ids: list[int]) -> np.ndarray:
        prompt_ids, embeds, _ = self.encode(question, images, think=think)
        return self.decoder.continuation_logits(prompt_ids, embeds, list(answer_ids))

    def close(self) -> None:
        self.decoder.close()
        self.opened.close()


VISION_BACKENDS = ("onnx", "mmproj")


def open_bundle(bundle: str | Path, *, n_threads: int | None = None, vision: str = "onnx"):
    """The one way to open a built bundle: verified (seal and hashes) before anything is loaded. n_threads None:
    the measured setting for this bundle on this machine (edgekit.runtime.settings), else every core. vision:
    'onnx' (the bundle's vision graph in ONNX Runtime) or 'mmproj' (everything in llama.cpp through libmtmd, the
    C++ host's path: edgekit.runtime.mtmd_pipeline)."""
    if vision == "mmproj":
        from edgekit.runtime.mtmd_pipeline import MtmdPipeline

        return MtmdPipeline(Path(bundle), n_threads=n_threads)
    if vision != "onnx":
        raise EdgekitError(f"--vision {vision!r}: choose one of {', '.join(VISION_BACKENDS)}")
    return BundlePipeline(Path(bundle), n_threads=n_threads)
