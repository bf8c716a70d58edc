"""Vision backend on onnxruntime: an `edgekit export-vision` graph (FP32, FP16 or INT8 QDQ).

The graph is static: N images of one planned size. `encode` takes the processor's patches for
any number of images of that size: fewer than N are padded by repeating the last image, more are
run in groups of N, and only the real images' tokens are returned. `embed` goes from an RGB
image to an `ImageEmbedding` for the llama.cpp decoder, like `MmprojVision.embed`.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.model.vision_graph import INPUT, VisionGraphInfo
from edgekit.ort_session import load_session, session_options


class OnnxVision:
    def __init__(
        self,
        path: str | Path,
        *,
        threads: int = 2,
        processor_cfg=None,
        model_bytes: bytes | None = None,
        external_data: int | None = None,
    ):
        """path: the graph's file; model_bytes (a verified bundle's): the graph itself, hashed from these very bytes,
        with `path` naming it in messages only; external_data: the descriptor of its `.data` file (weights over 2 GB),
        mapped read-only and handed to ONNX Runtime as memory (the verified file, never a name)."""

        path = Path(path)
        if model_bytes is None and not path.is_file():
            raise EdgekitError(f"{path}: vision ONNX not found; write it with `edgekit export-vision`")
        self.path = path
        opts = session_options(threads)
        self._data_map = None
        if external_data is not None:
            import onnx

            from edgekit.export.onnx_files import check_external_refs, data_file_name

            size = os.fstat(external_data).st_size
            check_external_refs(onnx.load_model_from_string(model_bytes), path.name, size)
            self._data_map = mmap.mmap(external_data, size, access=mmap.ACCESS_READ)
            buffer = np.frombuffer(self._data_map, dtype=np.uint8)
            opts.add_external_initializers_from_files_in_memory([data_file_name(path)], [buffer], [size])
        try:
            self.session = load_session(path if model_bytes is None else model_bytes, opts, path)
        finally:
            if self._data_map is not None:
                # ONNX Runtime copied the weights: drop the mapped pages (2.7 GB at 7B). Were they still read, they
                # would come back from the same verified file.
                self._data_map.madvise(mmap.MADV_DONTNEED)
        self.info = VisionGraphInfo.from_metadata(self.session.get_modelmeta().custom_metadata_map, str(path))
        self._input = INPUT
        self.processor_cfg = processor_cfg

    @property
    def per_image(self) -> int:
        return self.info.grid_h * self.info.grid_w

    def encode(self, patches: np.ndarray, grid_thw) -> np.ndarray:
        """patches float32 [n*gh*gw, patch_dim], grid_thw [n, 3] -> embeddings float32 [n*gh*gw/merge^2, out_hidden]."""
        info = self.info
        grid = np.asarray(grid_thw, dtype=np.int64).reshape(-1, 3)
        want = (1, info.grid_h, info.grid_w)
        for row in grid:
            if tuple(int(x) for x in row) != want:
                raise EdgekitError(
                    f"{self.path}: graph was exported for images resized to {info.width}x{info.height} "
                    f"(grid {want}); got grid {tuple(int(x) for x in row)}. Resize images to that size "
                    "(processor resize_to) or export another --resolution"
                )
        n = len(grid)
        patches = np.ascontiguousarray(patches, dtype=np.float32)
        if patches.shape != (n * self.per_image, info.patch_dim):
            raise EdgekitError(
                f"patches have shape {list(patches.shape)}; {n} image(s) need [{n * self.per_image}, {info.patch_dim}]"
            )
        per_tok = self.per_image // (info.merge * info.merge)
        images = patches.reshape(n, self.per_image, info.patch_dim)  # [n, gh*gw, patch_dim]
        outs = []
        for start in range(0, n, info.images):
            group = list(images[start : start + info.images])
            real = len(group)
            group += [group[-1]] * (info.images - real)
            feed = np.concatenate(group, axis=0)  # [N*gh*gw, patch_dim]
            emb = self.session.run(None, {self._input: feed})[0]  # [N*tokens, out_hidden]
            outs.append(emb[: real * per_tok])
        return np.concatenate(outs, axis=0).astype(np.float32, copy=False)

    def embed(self, image):
        """One RGB image (PIL or uint8 [H, W, 3]) -> ImageEmbedding, resized to the graph's size."""
        from edgekit.model.processor import preprocess_image
        from edgekit.runtime.prompt_segments import ImageEmbedding

        if self.processor_cfg is None:
            raise EdgekitError("OnnxVision.embed needs processor_cfg (load_processor_config(checkpoint))")
        patches, grid = preprocess_image(image, self.processor_cfg, resize_to=(self.info.height, self.info.width))
        emb = self.encode(patches, [grid])
        m = self.info.merge
        return ImageEmbedding(emb, (self.info.grid_h // m, self.info.grid_w // m))
