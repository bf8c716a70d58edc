"""M-RoPE 3-D position ids (temporal, height, width) for a sequence of text, image and video tokens.

Same rule as transformers' Qwen2.5-VL `get_rope_index` (5.x), in numpy:
- a run of text tokens counts up by one on all three axes;
- a run of vision tokens (one image or video, t x h/m x w/m merged tokens) starts at the running
  position p; its ids are (p + t_idx * interval, p + row, p + col), and the running position then
  advances by max(h, w) / m, so the text after an image continues from there.
- rope_delta = max(position) + 1 - L shifts the 1-D positions of tokens generated later.
Runs are found from the token types (image_token_id -> 1, video_token_id -> 2), which is what HF's
`mm_token_type_ids` carries.
"""

from __future__ import annotations

import numpy as np

from edgekit.errors import EdgekitError

TEXT, IMAGE, VIDEO = 0, 1, 2


def token_types(input_ids: np.ndarray, image_token_id: int, video_token_id: int | None = None) -> np.ndarray:
    """int64 [L]: 0 text, 1 image placeholder, 2 video placeholder (HF's mm_token_type_ids)."""
    ids = np.asarray(input_ids, dtype=np.int64)
    types = np.zeros_like(ids)
    types[ids == image_token_id] = IMAGE
    if video_token_id is not None and video_token_id >= 0:
        types[ids == video_token_id] = VIDEO
    return types


def type_runs(types: np.ndarray) -> list[tuple[int, int, int]]:
    """Maximal runs of equal type as (type, start, end)."""
    if len(types) == 0:
        return []
    cuts = np.flatnonzero(np.diff(types)) + 1
    starts = np.concatenate([[0], cuts])
    ends = np.concatenate([cuts, [len(types)]])
    return [(int(types[s]), int(s), int(e)) for s, e in zip(starts, ends)]


def vision_positions(start: int, grid_thw, merge: int, interval: float = 1.0) -> np.ndarray:
    """int64 [3, t*h/m*w/m] ids of one image/video's merged tokens, row-major over (t, h, w)."""
    t, h, w = (int(v) for v in grid_thw)
    hm, wm = h // merge, w // merge
    # float32 like torch's default dtype, then truncated, so fractional video intervals match HF.
    t_ids = (np.arange(t, dtype=np.float32) * np.float32(interval)).astype(np.int64) + start  # [t]
    tt, hh, ww = np.meshgrid(t_ids, np.arange(hm) + start, np.arange(wm) + start, indexing="ij")  # [t, hm, wm]
    return np.stack([tt, hh, ww]).reshape(3, -1)


def mrope_positions(
    input_ids: np.ndarray,
    image_grid_thw: np.ndarray | None,
    *,
    spatial_merge_size: int,
    image_token_id: int,
    vision_start_token_id: int | None = None,
    video_grid_thw: np.ndarray | None = None,
    video_token_id: int | None = None,
    second_per_grid_ts: list[float] | None = None,
    tokens_per_second: float = 2.0,
) -> tuple[np.ndarray, int]:
    """input_ids [L] -> (positions int64 [3, L], rope_delta).

    Grids are consumed in order, one per run of placeholder tokens. If vision_start_token_id is
    given, every run must follow it (as the chat template writes it); a mismatch between runs and
    grids is an error rather than silently wrong positions.
    """
    ids = np.asarray(input_ids, dtype=np.int64).reshape(-1)
    grids = {
        IMAGE: np.asarray(image_grid_thw if image_grid_thw is not None else np.zeros((0, 3)), np.int64).reshape(-1, 3),
        VIDEO: np.asarray(video_grid_thw if video_grid_thw is not None else np.zeros((0, 3)), np.int64).reshape(-1, 3),
    }
    used = {IMAGE: 0, VIDEO: 0}
    names = {IMAGE: "image", VIDEO: "video"}
    merge2 = spatial_merge_size * spatial_merge_size

    pieces, pos = [], 0
    for kind, start, end in type_runs(token_types(ids, image_token_id, video_token_id)):
        n = end - start
        if kind == TEXT:
            pieces.append(np.broadcast_to(np.arange(pos, pos + n), (3, n)))  # [3, n]
            pos += n
            continue
        i = used[kind]
        if i >= len(grids[kind]):
            raise EdgekitError(
                f"token {start}: {names[kind]} placeholder run #{i + 1} but only {len(grids[kind])} "
                f"{names[kind]} grid(s) given; one grid_thw row is needed per {names[kind]}"
            )
        grid = grids[kind][i]
        if n != int(grid.prod()) // merge2:
            raise EdgekitError(
                f"token {start}: {names[kind]} #{i + 1} has {n} placeholder tokens but grid_thw {grid.tolist()} "
                f"needs {int(grid.prod()) // merge2}; expand each placeholder to t*h*w/merge^2 tokens"
            )
        if vision_start_token_id is not None and (start == 0 or ids[start - 1] != vision_start_token_id):
            raise EdgekitError(
                f"token {start}: {names[kind]} #{i + 1} is not preceded by vision_start "
                f"(id {vision_start_token_id}); wrap it as <|vision_start|>...<|vision_end|>"
            )
        interval = 1.0
        if kind == VIDEO:
            secs = 1.0 if second_per_grid_ts is None else float(second_per_grid_ts[i])
            interval = float(np.float32(tokens_per_second) * np.float32(secs))
        pieces.append(vision_positions(pos, grid, spatial_merge_size, interval))
        pos += max(int(grid[1]), int(grid[2])) // spatial_merge_size
        used[kind] += 1

    for kind in (IMAGE, VIDEO):
        if used[kind] != len(grids[kind]):
            raise EdgekitError(
                f"{len(grids[kind])} {names[kind]} grid(s) given but the token ids hold {used[kind]} "
                f"{names[kind]} placeholder run(s); the prompt and the images disagree"
            )
    if not pieces:
        return np.zeros((3, 0), dtype=np.int64), 0
    positions = np.concatenate(pieces, axis=1).astype(np.int64)  # [3, L]
    return positions, int(positions.max()) + 1 - len(ids)


def decode_positions(past_length: int, n_new: int, rope_delta: int) -> np.ndarray:
    """int64 [3, n_new] ids of tokens appended after a prefix of past_length tokens (all axes equal)."""
    row = np.arange(past_length, past_length + n_new, dtype=np.int64) + rope_delta
    return np.ascontiguousarray(np.broadcast_to(row, (3, n_new)))


def llama_cpp_positions(positions: np.ndarray) -> np.ndarray:
    """[3, n] -> int32 [4*n] section-major (all t, all h, all w, then zeros), llama.cpp's M-RoPE batch layout."""
    pos = np.asarray(positions, dtype=np.int64)
    out = np.concatenate([pos, np.zeros((1, pos.shape[1]), dtype=np.int64)], axis=0)  # [4, n]
    return out.reshape(-1).astype(np.int32)
