"""llama.cpp decoder backend and mmproj vision backend against transformers (the float32 oracle).

Acceptance (issue 3): f32 GGUF logits vs transformers on text-only and image+text prompts,
max |d| <= 1e-3 * max |logit|; greedy answers identical with image embeddings from PyTorch and from
the mmproj in llama.cpp; KL(FP || GGUF) reported for q8_0, q4_k, q4_0.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import require
import torch

require("llama_cpp")

from edgekit.export.gguf import write_decoder_gguf  # noqa: E402
from edgekit.export.mmproj import write_mmproj_gguf  # noqa: E402
from edgekit.model.processor import smart_resize  # noqa: E402
from edgekit.model.rope_index import llama_cpp_positions, mrope_positions  # noqa: E402
from edgekit.runtime.llama_decoder import LlamaDecoder  # noqa: E402
from edgekit.runtime.prompt_segments import ImageEmbedding, prompt_positions, section_major, split_prompt  # noqa: E402

LOGIT_TOL = 1e-3  # of max |logit|, from the issue
FALLBACK_QUESTIONS = [
    "What color is the traffic light?",
    "Where should the gripper move next?",
    "Is the pedestrian crossing the road?",
    "Give the bounding box of the red cup.",
    "What should the ego vehicle do?",
]


# ---- pure functions ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_prompt_positions_match_get_rope_index(seed):
    """The runtime's positions equal transformers' get_rope_index (edgekit.model.rope_index) for still images."""
    rng = np.random.default_rng(seed)
    image_id, start_id, end_id = 900, 901, 902
    ids, grids, images = [], [], []
    for _ in range(int(rng.integers(1, 4))):
        ids += rng.integers(0, 800, int(rng.integers(1, 9))).tolist() + [start_id]
        gh, gw = 2 * int(rng.integers(1, 9)), 2 * int(rng.integers(1, 9))  # odd merged grids included
        grids.append((1, gh, gw))
        n = gh * gw // 4
        ids += [image_id] * n + [end_id]
        images.append(ImageEmbedding(np.zeros((n, 8), np.float32), (gh // 2, gw // 2)))
    ids += rng.integers(0, 800, 5).tolist()
    want, _ = mrope_positions(
        np.asarray(ids),
        np.asarray(grids),
        spatial_merge_size=2,
        image_token_id=image_id,
        vision_start_token_id=start_id,
    )
    got = prompt_positions(split_prompt(ids, image_id, images))
    np.testing.assert_array_equal(got, want)
    n = got.shape[1]
    np.testing.assert_array_equal(section_major(got), llama_cpp_positions(want))
    assert section_major(got)[3 * n :].max() == 0


# ---- fixtures ------------------------------------------------------------------------------------


def _export(ckpt, tmp_path_factory, precision="f32", mmproj=None):
    d = tmp_path_factory.mktemp("llama")
    dec = write_decoder_gguf(ckpt, d / f"decoder-{precision}.gguf", precision)
    mm = write_mmproj_gguf(ckpt, d / f"mmproj-{mmproj}.gguf", mmproj) if mmproj else None
    return dec, mm


@pytest.fixture(scope="module")
def tiny_files(tiny_ckpt, tmp_path_factory):
    return _export(tiny_ckpt, tmp_path_factory, "f32", "f32")


@pytest.fixture(scope="module")
def tiny_ref(tiny_ckpt):
    from edgekit.runtime.torch_ref import TorchReference

    return TorchReference(tiny_ckpt)


def _aligned_images(n: int, seed: int, max_pixels: int = 100_352, samples=None) -> list[np.ndarray]:
    """RGB uint8 images whose sides are multiples of 28, so no backend resizes them (same pixels everywhere)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    paths = samples or []
    for i in range(n):
        if i < len(paths):
            img = Image.open(paths[i]).convert("RGB")
            h, w = smart_resize(img.height, img.width, 28, 6272, max_pixels)
            out.append(np.asarray(img.resize((w, h), Image.Resampling.BICUBIC)))
        else:
            h, w = 28 * int(rng.integers(3, 12)), 28 * int(rng.integers(3, 12))
            out.append(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
    return out


def _sample_questions(shared_root, n: int) -> list[tuple[str, str | None]]:
    """(question, image path) from the eval split of the real samples, or fixed questions without them."""
    if shared_root is None:
        return [(q, None) for q in FALLBACK_QUESTIONS[:n]]
    rows = []
    for name in ("embodied.jsonl", "driving.jsonl"):
        for line in (shared_root / name).read_text(encoding="utf-8").splitlines():
            r = json.loads(line)
            if r.get("split") == "eval":
                rows.append((r["question"][:300], str(shared_root / r["image"])))
    rng = np.random.default_rng(7)
    return [rows[i] for i in rng.choice(len(rows), n, replace=False)]


@pytest.fixture(scope="module")
def samples_root():
    from pathlib import Path

    root = Path(__file__).resolve().parents[3] / "shared" / "data" / "samples"
    return root if (root / "driving.jsonl").is_file() else None


def _embedding(ref, inputs) -> list[ImageEmbedding]:
    feats = ref.image_embeddings(inputs.pixel_values, inputs.image_grid_thw).numpy()  # [sum n, hidden]
    out, at = [], 0
    for t, h, w in inputs.image_grid_thw.tolist():
        n = t * h * w // 4
        out.append(ImageEmbedding(feats[at : at + n], (h // 2, w // 2)))
        at += n
    return out


def _assert_logits_close(got: np.ndarray, want: np.ndarray, what: str) -> float:
    rel = float(np.abs(got - want).max() / np.abs(want).max())
    assert rel <= LOGIT_TOL, f"{what}: max |d| = {rel:.2e} x max |logit|"
    return rel


# ---- f32 parity ----------------------------------------------------------------------------------


def test_f32_logits_match_transformers_tiny(tiny_ref, tiny_files, samples_root):
    ((question, path),) = _sample_questions(samples_root, 1)
    image = _aligned_images(1, seed=11, samples=[path] if path else None)
    with LlamaDecoder(tiny_files[0], kv_cache="f32") as dec:
        text_only = tiny_ref.prepare(question, [])
        rel_t = _assert_logits_close(
            dec.logits(text_only.input_ids[0].tolist()), tiny_ref.logits(text_only).numpy(), "text-only"
        )
        with_image = tiny_ref.prepare(question, image)
        rel_i = _assert_logits_close(
            dec.logits(with_image.input_ids[0].tolist(), _embedding(tiny_ref, with_image)),
            tiny_ref.logits(with_image).numpy(),
            "image+text",
        )
    print(f"tiny f32: text {rel_t:.1e}, image+text {rel_i:.1e} of max |logit|")


def test_f32_logits_match_transformers_small_two_images(small_ckpt, tmp_path_factory):
    from edgekit.runtime.torch_ref import TorchReference

    ref = TorchReference(small_ckpt)
    gguf_path, _ = _export(small_ckpt, tmp_path_factory, "f32")
    images = _aligned_images(2, seed=5)  # random sizes: odd merged grids
    inputs = ref.prepare("Which object is closest to the camera?", images)
    with LlamaDecoder(gguf_path, kv_cache="f32", n_batch=64) as dec:  # small batches: images span several
        got = dec.logits(inputs.input_ids[0].tolist(), _embedding(ref, inputs))
    rel = _assert_logits_close(got, ref.logits(inputs).numpy(), "small, two images")
    print(f"small f32 two images: {rel:.1e} of max |logit|")


def test_mmproj_embeddings_match_pytorch(tiny_ref, tiny_files):
    images = _aligned_images(3, seed=3)
    with LlamaDecoder(tiny_files[0]) as dec:
        from edgekit.runtime.mmproj_vision import MmprojVision

        with MmprojVision(tiny_files[1], dec) as vis:
            for img in images:
                inputs = tiny_ref.prepare("x", [img])
                (want,) = _embedding(tiny_ref, inputs)
                got = vis.embed(img)
                assert got.grid == want.grid
                rel = np.abs(got.embeds - want.embeds).max() / np.abs(want.embeds).max()
                assert rel < 2e-3, f"image {img.shape}: mmproj vs PyTorch {rel:.1e} of max |embedding|"


def test_greedy_answers_identical(tiny_ref, tiny_files, samples_root):
    """Five sample questions: llama.cpp greedy == transformers greedy, images via PyTorch and via the mmproj."""
    from edgekit.runtime.mmproj_vision import MmprojVision

    rows = _sample_questions(samples_root, 5)
    images = _aligned_images(5, seed=21, max_pixels=50_176, samples=[p for _, p in rows if p] or None)
    with LlamaDecoder(tiny_files[0], kv_cache="f32") as dec, MmprojVision(tiny_files[1], dec) as vis:
        for (question, _), img in zip(rows, images):
            inputs = tiny_ref.prepare(question, [img])
            want = tiny_ref.generate(inputs, max_new_tokens=12)
            want = [t for t in want if t not in tiny_ref.eos_ids]
            ids = inputs.input_ids[0].tolist()
            from_torch = list(dec.generate(ids, _embedding(tiny_ref, inputs), max_new_tokens=12))
            from_mmproj = list(dec.generate(ids, [vis.embed(img)], max_new_tokens=12))
            assert from_torch == want, question
            assert from_mmproj == want, question
            text = "".join(dec.stream_text(ids, [vis.embed(img)], max_new_tokens=12))
            assert text == tiny_ref.decode(want)


def test_in_place_greedy_equals_the_copied_logits_loop(tiny_files, samples_root):
    """Ten questions: the decode loop that reads the argmax in llama.cpp's buffer through one reused batch
    (`generate`) gives the same tokens as copying every step's logits out and taking numpy's argmax."""
    from edgekit.runtime.mmproj_vision import MmprojVision

    rows = _sample_questions(samples_root, 10)
    images = _aligned_images(10, seed=23, max_pixels=50_176, samples=[p for _, p in rows if p] or None)
    with LlamaDecoder(tiny_files[0]) as dec, MmprojVision(tiny_files[1], dec) as vis:
        for (question, _), img in zip(rows, images):
            ids = dec.tokenize(f"<|im_start|>user\n{question}<|im_end|>\n<|im_start|>assistant\n")
            embeds = [vis.embed(img)]
            ids = ids[:2] + [dec.image_token_id] * embeds[0].embeds.shape[0] + ids[2:]
            copied, last = [], dec.prefill(ids, embeds)[-1]
            for _ in range(20):
                copied.append(int(np.argmax(last)))
                last = dec.step(copied[-1])
            in_place = list(dec.generate(ids, embeds, max_new_tokens=20, stop_at_end=False))
            assert in_place == copied, question


# ---- quantized fidelity --------------------------------------------------------------------------


def _kl(p_logits: np.ndarray, q_logits: np.ndarray) -> float:
    """Mean over positions of KL(softmax(p) || softmax(q)), in nats (float64)."""
    p = torch.log_softmax(torch.from_numpy(p_logits).double(), -1)
    q = torch.log_softmax(torch.from_numpy(q_logits).double(), -1)
    return float((p.exp() * (p - q)).sum(-1).mean())


def test_quantized_kl_reported_and_ordered(tiny_ckpt, tiny_ref, tmp_path_factory, samples_root):
    rows = _sample_questions(samples_root, 3)
    images = _aligned_images(3, seed=31, max_pixels=50_176, samples=[p for _, p in rows if p] or None)
    prompts = [tiny_ref.prepare(q, [img]) for (q, _), img in zip(rows, images)]
    refs = [tiny_ref.logits(x).numpy() for x in prompts]
    embeds = [_embedding(tiny_ref, x) for x in prompts]
    kl = {}
    for precision in ("q8_0", "q4_k", "q4_0"):
        path, _ = _export(tiny_ckpt, tmp_path_factory, precision)
        with LlamaDecoder(path, kv_cache="f32") as dec:
            kl[precision] = float(
                np.mean([_kl(r, dec.logits(x.input_ids[0].tolist(), e)) for r, x, e in zip(refs, prompts, embeds)])
            )
    print("mean per-token KL(FP || GGUF) nats: " + ", ".join(f"{k} {v:.2e}" for k, v in kl.items()))
    assert 0 < kl["q8_0"] < 1e-3
    assert kl["q8_0"] < kl["q4_k"] < kl["q4_0"]
