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
    def __init__(self, bundle: Path, *, n_threads: int | None = None, n_seq: int = 1):
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
            raise EdgekitError(
                f"{self.bundle}: parts.vision is {vision.get('format')!r}, not an ONNX graph; "
                "run it with --vision mmproj, or rebuild the bundle"
            )
        from edgekit.runtime.llama_decoder import LlamaDecoder
        from edgekit.runtime.onnx_vision import OnnxVision

        data = vision.get("external_data")
        self.vision = OnnxVision(
            self.bundle / vision["path"],
            threads=n_threads,
            model_bytes=self.opened.read(vision["path"], max_bytes=2 << 30),
            external_data=self.opened.fd(data) if data else None,
        )
        self.resize_to = (self.vision.info.height, self.vision.info.width)  # the graph's static size
        self.decoder = LlamaDecoder(
            self.opened.path(parts["decoder"]["path"]),
            n_threads=n_threads,
            n_ctx=self.manifest["context"],
            label=self.bundle / parts["decoder"]["path"],
            n_seq=n_seq,
        )
        self.backend = f"bundle ({vision['precision']} ONNX vision + {parts['decoder']['precision']} GGUF decoder)"

    def encode(self, question: str, images: list, *, think: bool):
        """Prompt ids and image embeddings for the decoder, and the seconds spent on (preprocess, vision)."""
        from edgekit.model.prompt import IMAGE

        return self.encode_chat([("user", [IMAGE] * len(images) + [question])], images, think=think)

    def encode_chat(self, turns, images: list, *, think: bool, cache=None):
        """`encode` for a conversation ((role, parts) turns, edgekit.model.prompt.prepare_chat). `cache`: a mapping
        of image key -> embedding (e.g. a server's, bounded); an image whose pixels, as resized for the graph, were
        encoded before by this bundle is neither normalised nor run through the vision graph again."""
        import hashlib

        from edgekit.model.processor import grid_of, model_pixels, patches_of
        from edgekit.model.prompt import as_image, chat_inputs
        from edgekit.runtime.prompt_segments import ImageEmbedding

        t0 = time.perf_counter()
        cfg = self.assets.image
        pixels = [model_pixels(as_image(im), cfg, resize_to=self.resize_to) for im in images]  # uint8 [3, H, W] each
        grids = [grid_of(px, cfg) for px in pixels]
        inputs = chat_inputs(self.assets, turns, np.asarray(grids, np.int64).reshape(-1, 3), think=think)
        seal = self.manifest["seal"]["sha256"].encode()
        keys = [hashlib.sha256(seal + str(px.shape).encode() + px.tobytes()).hexdigest() for px in pixels]
        found = {k: cache.get(key) for k, key in enumerate(keys)} if cache is not None else {}
        todo = [k for k in range(len(pixels)) if found.get(k) is None]
        patches = np.concatenate([patches_of(pixels[k], cfg) for k in todo]) if todo else None
        t1 = time.perf_counter()
        if todo:  # every image not in the cache, through the graph together
            out = self.vision.encode(patches, np.asarray([grids[k] for k in todo]))  # [tokens, hidden]
            n = out.shape[0] // len(todo)
            for j, k in enumerate(todo):
                found[k] = np.ascontiguousarray(out[j * n : (j + 1) * n])
                if cache is not None:
                    cache[keys[k]] = found[k]
        merge = self.assets.spatial_merge_size
        embeds = [ImageEmbedding(found[k], (gh // merge, gw // merge), keys[k]) for k, (_, gh, gw) in enumerate(grids)]
        t2 = time.perf_counter()
        return inputs.input_ids.tolist(), embeds, (t1 - t0, t2 - t1)

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
        t0 = time.perf_counter()
        prompt_ids, embeds, (t_pre, t_vis) = self.encode(question, images, think=think)
        from edgekit.runtime.gguf_bundle import collect_answer

        t2 = time.perf_counter()
        tokens = self.decoder.generate(prompt_ids, embeds, max_new_tokens=max_new_tokens, stop_at_end=stop_at_end)
        ids, text, t_first, t3 = collect_answer(self.decoder, tokens, on_text)
        t_first = t_first or t3
        timings = {
            "preprocess": t_pre,
            "vision": t_vis,
            "prefill": t_first - t2,
            "decode": t3 - t_first,
            "total": t3 - t0,
        }
        return Answer(text, ids, self.backend, timings, prompt_ids)

    def teacher_logits(self, question: str, images: list, *, think: bool, answer_ids: list[int]) -> np.ndarray:
        prompt_ids, embeds, _ = self.encode(question, images, think=think)
        return self.decoder.continuation_logits(prompt_ids, embeds, list(answer_ids))

    def close(self) -> None:
        self.decoder.close()
        self.opened.close()


VISION_BACKENDS = ("onnx", "mmproj")


def open_bundle(bundle: str | Path, *, n_threads: int | None = None, vision: str = "onnx", n_seq: int = 1):
    """The one way to open a built bundle: verified (seal and hashes) before anything is loaded. n_threads None:
    the measured setting for this bundle on this machine (edgekit.runtime.settings), else every core. vision:
    'onnx' (the bundle's vision graph in ONNX Runtime) or 'mmproj' (everything in llama.cpp through libmtmd, the
    C++ host's path: edgekit.runtime.mtmd_pipeline). n_seq: KV slots (edgekit.runtime.kv_slots; ONNX vision only)."""
    if vision == "mmproj":
        if n_seq > 1:
            raise EdgekitError(
                f"--parallel {n_seq} needs --vision onnx: libmtmd evaluates each prompt whole into one sequence"
            )
        from edgekit.runtime.mtmd_pipeline import MtmdPipeline

        return MtmdPipeline(Path(bundle), n_threads=n_threads)
    if vision != "onnx":
        raise EdgekitError(f"--vision {vision!r}: choose one of {', '.join(VISION_BACKENDS)}")
    return BundlePipeline(Path(bundle), n_threads=n_threads, n_seq=n_seq)
