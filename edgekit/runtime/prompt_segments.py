"""A prompt as llama.cpp is fed it: text and image segments, and their M-RoPE positions (pure functions).

A prompt is the checkpoint's token ids, with each image standing as a run of `<|image_pad|>` ids, plus one
`ImageEmbedding` per run from any vision backend (PyTorch, ONNX, mmproj). Positions follow transformers'
get_rope_index for still images: the image's tokens sit at (p, p+row, p+col) and the text after it continues at
p + max(rows, cols). llama.cpp takes an image batch's positions section-major (t for all tokens, then h, then w,
then 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from edgekit.errors import EdgekitError


@dataclass(frozen=True)
class ImageEmbedding:
    """One image as the language model sees it: embeddings of its merged tokens, row-major."""

    embeds: np.ndarray  # float32 [rows * cols, hidden]
    grid: tuple[int, int]  # (rows, cols) of merged tokens = (grid_h / merge, grid_w / merge)
    key: str | None = None  # what the embeddings are of (pixels + bundle seal): equal keys, equal embeddings

    def __post_init__(self):
        rows, cols = self.grid
        if self.embeds.ndim != 2 or self.embeds.shape[0] != rows * cols:
            raise EdgekitError(
                f"image embedding has shape {list(self.embeds.shape)}; grid {rows}x{cols} needs [{rows * cols}, hidden]"
            )


def image_positions(start: int, grid: tuple[int, int]) -> np.ndarray:
    """M-RoPE positions of one still image's tokens: int32 [3, rows*cols] (t, h, w)."""
    rows, cols = grid
    r = np.repeat(np.arange(rows, dtype=np.int32), cols)  # [n]
    c = np.tile(np.arange(cols, dtype=np.int32), rows)  # [n]
    return np.stack([np.full_like(r, start), start + r, start + c])  # [3, n]


def next_position_after_image(start: int, grid: tuple[int, int]) -> int:
    return start + max(grid)


def section_major(pos3: np.ndarray) -> np.ndarray:
    """[3, n] -> int32 [4*n]: t for every token, then h, then w, then a zero section."""
    n = pos3.shape[1]
    return np.concatenate([pos3.reshape(-1), np.zeros(n, dtype=np.int32)]).astype(np.int32)


def prompt_positions(segments) -> np.ndarray:
    """M-RoPE positions of a whole prompt, int32 [3, L], as transformers' get_rope_index for still images."""
    parts, nxt = [], 0
    for kind, seg in segments:
        if kind == "text":
            row = np.arange(nxt, nxt + len(seg), dtype=np.int32)  # [k]
            parts.append(np.stack([row, row, row]))
            nxt += len(seg)
        else:
            parts.append(image_positions(nxt, seg.grid))
            nxt = next_position_after_image(nxt, seg.grid)
    return np.concatenate(parts, axis=1) if parts else np.zeros((3, 0), np.int32)


def split_prompt(input_ids: Sequence[int], image_token_id: int, images: Sequence[ImageEmbedding]):
    """Yield ("text", ids) and ("image", ImageEmbedding) segments in prompt order."""
    ids = np.asarray(input_ids, dtype=np.int64)
    is_img = ids == image_token_id
    n_img_tokens = int(is_img.sum())
    expected = sum(im.embeds.shape[0] for im in images)
    if n_img_tokens != expected:
        raise EdgekitError(
            f"prompt has {n_img_tokens} image tokens but the images give {expected} embeddings; "
            "build the prompt with the processor's token counts for these images"
        )
    segments, i, k = [], 0, 0
    while i < len(ids):
        if is_img[i]:
            im = images[k]
            n = im.embeds.shape[0]
            if not is_img[i : i + n].all():
                raise EdgekitError(f"image {k}: expected a run of {n} image tokens at position {i}")
            segments.append(("image", im))
            i, k = i + n, k + 1
        else:
            j = i
            while j < len(ids) and not is_img[j]:
                j += 1
            segments.append(("text", ids[i:j].tolist()))
            i = j
    return segments
