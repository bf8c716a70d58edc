"""A curriculum over how much of the scene the model sees: crops around the object a question is about.

The generated scenes' evidence is a few pixels among thousands (a traffic light's lit lamp is ~6 px across in the
280x168 image the tiny preset sees). A question whose answer depends on one object alone (`Question.focus`) is
asked early in a run about a window of the image around that object, at the very scale the model sees the whole
image at (so the object's pixels are the ones it will meet later), and the window grows to the whole image over the
curriculum's steps. Crops are cut from the image resized as the processor resizes it, on its token grid (patch x
merge: 28 px for Qwen2.5-VL), so the processor keeps them as they are.
"""

from __future__ import annotations

import math
import random


def crop_fraction(start: float, steps: int, step: int) -> float:
    """Fraction of the seen image's width and height a focus crop covers at optimiser step `step`: `start` at step
    0, growing linearly to 1 (the whole image) at `steps`; 1 when there is no curriculum (steps == 0)."""
    if steps <= 0 or step >= steps:
        return 1.0
    return start + (1.0 - start) * step / steps


def focus_crop(image, processor, focus: tuple[int, int, int, int], fraction: float, rng: random.Random):
    """`image` resized as `processor` (ImageProcessorConfig) resizes it, then cut to a window of `fraction` of it on
    the processor's token grid that contains all of `focus` (a box in `image`'s pixels, both ends inclusive), placed
    at random by `rng`. The whole resized image when the window would be all of it."""
    from edgekit.model.processor import target_size

    grid = processor.factor
    h, w = target_size(image.size[1], image.size[0], processor)
    resized = image.resize((w, h), processor.resample)
    sx, sy = w / image.size[0], h / image.size[1]
    x0f, y0f = focus[0] * sx, focus[1] * sy
    x1f, y1f = (focus[2] + 1) * sx, (focus[3] + 1) * sy  # exclusive ends in the seen image
    cw = min(w, max(2 * grid, _on_grid(max(fraction * w, x1f - x0f + 2), grid)))
    ch = min(h, max(2 * grid, _on_grid(max(fraction * h, y1f - y0f + 2), grid)))
    if cw >= w and ch >= h:
        return resized
    x = rng.randint(max(0, math.ceil(x1f) - cw), max(0, min(math.floor(x0f), w - cw)))
    y = rng.randint(max(0, math.ceil(y1f) - ch), max(0, min(math.floor(y0f), h - ch)))
    return resized.crop((x, y, x + cw, y + ch))


def _on_grid(size: float, grid: int) -> int:
    return math.ceil(size / grid) * grid
