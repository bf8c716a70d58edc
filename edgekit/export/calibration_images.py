"""Calibration and held-out images for the vision tower, and the graph inputs made from them.

Images come from sample sets (built-in names, JSONL files or folders of them, read by
edgekit.data.samples, the one sample loader) or from plain image folders.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from edgekit.errors import EdgekitError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")


def sample_images(sources: Iterable[str | Path]) -> list[tuple[Path, str | None]]:
    """(image file, split) from sample sets: a JSONL file, a folder of *.jsonl, an image folder, or a built-in name.

    `split` is the line's "calib" / "eval" field (None where absent). Driving lines with several
    cameras contribute every camera.
    """
    from edgekit.data.samples import load_samples

    sources = list(sources)
    items: list[tuple[Path, str | None]] = []
    for src in sources:
        p = Path(src)
        if p.is_dir() and not sorted(p.glob("*.jsonl")):
            items += [(q, None) for q in sorted(p.rglob("*")) if q.suffix.lower() in IMAGE_SUFFIXES]
            continue
        for s in load_samples(src):
            items += [(Path(i), s.split) for i in (s.images or (s.image,))]
    seen: set[Path] = set()
    unique = [(q, sp) for q, sp in items if not (q in seen or seen.add(q))]
    if not unique:
        raise EdgekitError(f"--samples {', '.join(map(str, sources))}: no images found")
    return unique


def split_calibration(
    items: Sequence[tuple[Path, str | None]], calib_max: int, eval_max: int
) -> tuple[list[Path], list[Path]]:
    """(calibration images, held-out images): by each line's split; unlabelled images hold out every 4th.

    At most calib_max / eval_max, picked evenly across the list so every source is represented.
    """
    calib = [p for p, sp in items if sp == "calib"]
    held = [p for p, sp in items if sp == "eval"]
    rest = [p for p, sp in items if sp not in ("calib", "eval")]
    calib += [p for i, p in enumerate(rest) if i % 4 != 3]
    held += [p for i, p in enumerate(rest) if i % 4 == 3]
    return _evenly(calib, calib_max), _evenly(held, eval_max)


def _evenly(items: list, k: int) -> list:
    if len(items) <= k:
        return list(items)
    return [items[int(i * len(items) / k)] for i in range(k)]


def patch_batches(images: Sequence, info, processor_cfg) -> list[np.ndarray]:
    """Images (paths, PIL images or uint8 arrays) -> graph inputs, `info.images` images per batch.

    A trailing group smaller than the graph's image count is filled by repeating its images.
    """
    from edgekit.data.images import load_image
    from edgekit.model.processor import preprocess_image

    if not images:
        return []
    rows = []
    for im in images:
        pil = load_image(im) if isinstance(im, (str, Path)) else im
        patches, _ = preprocess_image(pil, processor_cfg, resize_to=(info.height, info.width))
        rows.append(patches)  # [gh*gw, patch_dim]
    batches = []
    for start in range(0, len(rows), info.images):
        group = rows[start : start + info.images]
        group += [group[i % len(group)] for i in range(info.images - len(group))]
        batches.append(np.concatenate(group, axis=0))  # [N*gh*gw, patch_dim]
    return batches
