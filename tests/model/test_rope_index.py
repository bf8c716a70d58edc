"""edgekit.model.rope_index against transformers' Qwen2.5-VL get_rope_index (exact integers)."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from edgekit.errors import EdgekitError
from edgekit.model.rope_index import decode_positions, llama_cpp_positions, mrope_positions, token_types

VISION_START, VISION_END, IMAGE_ID, VIDEO_ID = 150, 151, 152, 153
VOCAB = 160


def hf_model(spatial_merge_size=2, tokens_per_second=2):
    """A tiny Qwen2_5_VLModel: get_rope_index only reads the config, so the weights don't matter."""
    from transformers import Qwen2_5_VLConfig
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLModel

    cfg = Qwen2_5_VLConfig(
        text_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            vocab_size=VOCAB,
            bos_token_id=0,
            eos_token_id=1,
            rope_scaling={"type": "mrope", "mrope_section": [2, 3, 3]},
        ),
        vision_config=dict(
            depth=1,
            hidden_size=32,
            intermediate_size=64,
            num_heads=2,
            out_hidden_size=32,
            fullatt_block_indexes=[0],
            spatial_merge_size=spatial_merge_size,
            tokens_per_second=tokens_per_second,
        ),
        image_token_id=IMAGE_ID,
        video_token_id=VIDEO_ID,
        vision_start_token_id=VISION_START,
        vision_end_token_id=VISION_END,
    )
    with torch.device("meta"):
        return Qwen2_5_VLModel(cfg)


@pytest.fixture(scope="module")
def model():
    return hf_model()


def random_grid(rng, merge, t=1):
    h, w = (int(v) * merge for v in rng.integers(1, 24, 2))
    return [t, h, w]


def random_sequence(rng, n_images, n_videos=0, merge=2):
    """Text, then images/videos interleaved with text runs of random length (0 allowed between)."""
    kinds = ["image"] * n_images + ["video"] * n_videos
    rng.shuffle(kinds)
    ids = list(rng.integers(0, 100, int(rng.integers(1, 9))))
    images, videos = [], []
    for kind in kinds:
        if kind == "image":
            grid = random_grid(rng, merge)
            images.append(grid)
            tok = IMAGE_ID
        else:
            grid = random_grid(rng, merge, t=int(rng.integers(1, 5)))
            videos.append(grid)
            tok = VIDEO_ID
        n = grid[0] * grid[1] * grid[2] // (merge * merge)
        ids += [VISION_START] + [tok] * n + [VISION_END]
        ids += list(rng.integers(0, 100, int(rng.integers(0, 6))))
    as_grid = lambda g: np.array(g, np.int64).reshape(-1, 3)  # noqa: E731
    return np.array(ids, dtype=np.int64), as_grid(images), as_grid(videos)


def hf_rope(model, ids, images, videos=None, seconds=None):
    types = token_types(ids, IMAGE_ID, VIDEO_ID)
    pos, delta = model.get_rope_index(
        torch.from_numpy(ids)[None],
        mm_token_type_ids=torch.from_numpy(types)[None],
        image_grid_thw=torch.from_numpy(images) if len(images) else None,
        video_grid_thw=torch.from_numpy(videos) if videos is not None and len(videos) else None,
        second_per_grid_ts=torch.tensor(seconds, dtype=torch.float32) if seconds is not None else None,
    )
    return pos[:, 0].numpy(), int(delta.item())


@pytest.mark.parametrize("n_images", [1, 2, 3, 5])
def test_images_match_hf(model, n_images):
    rng = np.random.default_rng(100 + n_images)
    for _ in range(8):
        ids, images, _ = random_sequence(rng, n_images)
        pos, delta = mrope_positions(
            ids, images, spatial_merge_size=2, image_token_id=IMAGE_ID, vision_start_token_id=VISION_START
        )
        ref, ref_delta = hf_rope(model, ids, images)
        assert pos.dtype == np.int64 and pos.shape == (3, len(ids))
        assert np.array_equal(pos, ref)
        assert delta == ref_delta


def test_videos_and_images_match_hf(model):
    rng = np.random.default_rng(42)
    for _ in range(6):
        ids, images, videos = random_sequence(rng, int(rng.integers(0, 3)), int(rng.integers(1, 3)))
        seconds = [float(s) for s in rng.choice([0.5, 1.0, 1 / 3, 2.0, 0.7], len(videos))]
        pos, delta = mrope_positions(
            ids,
            images,
            spatial_merge_size=2,
            image_token_id=IMAGE_ID,
            vision_start_token_id=VISION_START,
            video_grid_thw=videos,
            video_token_id=VIDEO_ID,
            second_per_grid_ts=seconds,
            tokens_per_second=2,
        )
        ref, ref_delta = hf_rope(model, ids, images, videos, seconds)
        assert np.array_equal(pos, ref) and delta == ref_delta


def test_merge_size_one_matches_hf():
    model = hf_model(spatial_merge_size=1)
    rng = np.random.default_rng(8)
    ids, images, _ = random_sequence(rng, 3, merge=1)
    pos, delta = mrope_positions(ids, images, spatial_merge_size=1, image_token_id=IMAGE_ID)
    ref, ref_delta = hf_rope(model, ids, images)
    assert np.array_equal(pos, ref) and delta == ref_delta


def test_image_positions_by_hand():
    """3 text tokens, vision_start, a 1x4x6 grid (2x3 tokens), vision_end, 2 text tokens."""
    ids = np.array([5, 6, 7, VISION_START] + [IMAGE_ID] * 6 + [VISION_END, 8, 9])
    pos, delta = mrope_positions(
        ids, np.array([[1, 4, 6]]), spatial_merge_size=2, image_token_id=IMAGE_ID, vision_start_token_id=VISION_START
    )
    expect = np.array(
        [
            [0, 1, 2, 3, 4, 4, 4, 4, 4, 4, 7, 8, 9],
            [0, 1, 2, 3, 4, 4, 4, 5, 5, 5, 7, 8, 9],
            [0, 1, 2, 3, 4, 5, 6, 4, 5, 6, 7, 8, 9],
        ]
    )
    assert np.array_equal(pos, expect)
    assert delta == 10 - 13


def test_text_only_is_one_dimensional():
    ids = np.arange(17) % 100
    pos, delta = mrope_positions(ids, None, spatial_merge_size=2, image_token_id=IMAGE_ID)
    assert np.array_equal(pos, np.broadcast_to(np.arange(17), (3, 17))) and delta == 0


def test_decode_positions_match_hf_cached_step(model):
    """After the prompt, HF shifts plain positions by rope_delta; so must the runtime."""
    rng = np.random.default_rng(77)
    ids, images, _ = random_sequence(rng, 2)
    _, delta = mrope_positions(ids, images, spatial_merge_size=2, image_token_id=IMAGE_ID)
    model.rope_deltas = torch.tensor([[delta]])
    n_new = 3
    cache = SimpleNamespace(get_seq_length=lambda: len(ids))
    ref = model.compute_3d_position_ids(
        input_ids=None,
        image_grid_thw=None,
        video_grid_thw=None,
        inputs_embeds=torch.zeros(1, n_new, 4),
        attention_mask=None,
        past_key_values=cache,
    )
    assert np.array_equal(decode_positions(len(ids), n_new, delta), ref[:, 0].numpy())


def test_mismatches_are_errors():
    ids = np.array([1, VISION_START] + [IMAGE_ID] * 6 + [VISION_END])
    common = dict(spatial_merge_size=2, image_token_id=IMAGE_ID, vision_start_token_id=VISION_START)
    with pytest.raises(EdgekitError, match="has 6 placeholder tokens but grid_thw \\[1, 4, 4\\] needs 4"):
        mrope_positions(ids, np.array([[1, 4, 4]]), **common)
    with pytest.raises(EdgekitError, match="only 0 image grid"):
        mrope_positions(ids, None, **common)
    with pytest.raises(EdgekitError, match="2 image grid\\(s\\) given but the token ids hold 1"):
        mrope_positions(ids, np.array([[1, 4, 6], [1, 2, 2]]), **common)
    no_start = np.array([1, 2] + [IMAGE_ID] * 6)
    with pytest.raises(EdgekitError, match="not preceded by vision_start"):
        mrope_positions(no_start, np.array([[1, 4, 6]]), **common)


def test_llama_cpp_layout_is_section_major():
    rng = np.random.default_rng(4)
    pos = rng.integers(0, 1000, (3, 11))
    flat = llama_cpp_positions(pos)
    assert flat.dtype == np.int32 and flat.shape == (44,)
    for i in range(11):
        assert [flat[i], flat[11 + i], flat[22 + i], flat[33 + i]] == [pos[0, i], pos[1, i], pos[2, i], 0]
