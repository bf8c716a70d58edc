"""make-tiny: complete, deterministic, loads in transformers, realistic outlier channels."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch

from edgekit.model.checkpoint import open_checkpoint
from edgekit.model.fixtures import make_tiny


def _digest(d):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(d.iterdir())}


def test_same_seed_same_bytes_other_seed_differs(tmp_path):
    a = make_tiny(tmp_path / "a", "tiny", seed=3)
    b = make_tiny(tmp_path / "b", "tiny", seed=3)
    c = make_tiny(tmp_path / "c", "tiny", seed=4)
    assert _digest(a) == _digest(b)
    assert _digest(a)["model.safetensors"] != _digest(c)["model.safetensors"]


def test_structure_matches_mimo_embodied(tiny_ckpt):
    ck = open_checkpoint(tiny_ckpt)
    t, v = ck.text, ck.vision
    assert v.head_dim == 80 and v.window_size == 112 and v.merge == 2 and v.patch == 14
    assert t.heads == 4 * t.kv_heads and t.head_dim == 128
    assert sum(t.mrope_section) == t.head_dim // 2
    assert not t.tie_embeddings and "lm_head.weight" in ck.tensors
    assert v.fullatt_blocks and all((i + 1) % (v.fullatt_blocks[0] + 1) == 0 for i in v.fullatt_blocks)
    assert "model.layers.0.self_attn.q_proj.bias" in ck.tensors
    assert "visual.blocks.0.mlp.gate_proj.bias" in ck.tensors
    for tok in (
        "<|im_start|>",
        "<|im_end|>",
        "<|endoftext|>",
        "<|vision_start|>",
        "<|vision_end|>",
        "<|image_pad|>",
        "<|video_pad|>",
        "<think>",
        "</think>",
    ):
        assert tok in ck.special_tokens, tok
    assert t.vocab >= max(ck.special_tokens.values()) + 1  # embedding rows past the tokenizer are padding


def test_outlier_channels_dominate_residual(tiny_ckpt):
    """The residual stream has a few large-magnitude channels, as trained LLMs do."""
    ck = open_checkpoint(tiny_ckpt)
    outliers = json.loads((tiny_ckpt / "edgekit_fixture.json").read_text())["outlier_channels"]
    emb = ck.get("model.embed_tokens.weight").float()
    per_channel = emb.abs().mean(0)
    others = torch.ones_like(per_channel, dtype=torch.bool)
    others[outliers] = False
    assert per_channel[outliers].min() > 10 * per_channel[others].median()


def test_transformers_loads_and_generates(tiny_ckpt):
    from transformers import AutoTokenizer, Qwen2_5_VLForConditionalGeneration

    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(str(tiny_ckpt), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(tiny_ckpt))
    ids = tok("Is the pedestrian crossing?", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=5, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 5
    # The checkpoint's tensors are what transformers loaded (bf16 upcast is exact).
    ck = open_checkpoint(tiny_ckpt)
    sd = model.state_dict()
    for name in ("model.layers.1.mlp.down_proj.weight", "visual.blocks.2.attn.qkv.bias", "lm_head.weight"):
        hf = (
            name.replace("model.", "model.language_model.", 1)
            if name.startswith("model.")
            else ("model." + name if name.startswith("visual.") else name)
        )
        assert torch.equal(sd[hf], ck.get(name).float()), name


def test_chat_template_think_and_no_think(tiny_ckpt):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_ckpt))

    def msg(text):
        return [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]}]

    think = tok.apply_chat_template(msg("Where is the cup?"), tokenize=False, add_generation_prompt=True)
    no_think = tok.apply_chat_template(msg("Where is the cup? /no_think"), tokenize=False, add_generation_prompt=True)
    assert think.endswith("<|im_start|>assistant\n")
    assert no_think.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert "<|vision_start|><|image_pad|><|vision_end|>Where is the cup?" in think
    ids = tok(no_think, add_special_tokens=False).input_ids
    vocab = tok.get_vocab()
    assert vocab["<think>"] in ids and vocab["</think>"] in ids and vocab["<|image_pad|>"] in ids


@pytest.mark.slow
def test_medium_preset_has_real_vocab_size(tmp_path):
    from edgekit.model.fixtures import PRESETS, build_config

    p = PRESETS["medium"]
    assert p.vocab_size == 151680
    cfg = build_config(
        p,
        {
            k: i
            for i, k in enumerate(
                [
                    "<|endoftext|>",
                    "<|im_end|>",
                    "<|vision_start|>",
                    "<|vision_end|>",
                    "<|vision_pad|>",
                    "<|image_pad|>",
                    "<|video_pad|>",
                ]
            )
        },
        p.vocab_size,
    )
    assert cfg["vocab_size"] == 151680
