"""Generate random-weight checkpoints with MiMo-Embodied's architecture (`edgekit make-tiny`).

No real weights can be downloaded where edgekit is tested, so the project makes its own
checkpoints of the same structure and tests every export against real runtimes on them:
vision head_dim 80, 112 px windows with full attention every k-th block, 2x2 merge, SiLU gated
MLPs with biases; text GQA 4:1 with head_dim 128, M-RoPE sections summing to head_dim/2, q/k/v
biases, untied lm_head; a trained byte-level BPE tokenizer with the Qwen2.5-VL special tokens;
a chat template with think / no-think; preprocessor_config.json. Weights are bf16 in the Hub
tensor layout (`model.layers.*`, `visual.*`), sharded with an index for the larger presets.

Realistic statistics matter because quantization is tested on them: a few residual channels
carry large-magnitude activations (as trained LLMs have), so activation-aware methods (AWQ,
SmoothQuant, GPTQ's Hessian) face the problem they exist to solve.

Same preset and seed, same bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from edgekit.errors import EdgekitError


@dataclass(frozen=True)
class Preset:
    text_layers: int
    text_hidden: int
    text_heads: int
    text_kv_heads: int
    text_intermediate: int
    bpe_vocab: int
    vocab_size: int | None  # None: learned + added tokens, padded to a multiple of 64
    vision_depth: int
    vision_hidden: int
    vision_intermediate: int
    fullatt_every: int
    max_pixels: int
    shard_bytes: int | None  # None: one model.safetensors
    outlier_channels: int = 4
    outlier_scale: float = 24.0


PRESETS: dict[str, Preset] = {
    # seconds to create and run: unit tests
    "tiny": Preset(2, 512, 4, 1, 1024, 1000, None, 4, 160, 320, 2, 401_408, None),
    # tens of millions of parameters: integration tests, quantization acceptance
    "small": Preset(4, 1024, 8, 2, 2816, 4000, None, 8, 320, 640, 4, 401_408, 64 << 20),
    # a few hundred million with the real vocabulary size: benchmarks
    "medium": Preset(8, 1024, 8, 2, 2816, 8000, 151_680, 16, 640, 1280, 4, 1_003_520, 256 << 20),
    # MiMo-Embodied-7B's exact dimensions (8.3 B parameters, 16.6 GB of bf16 in 4 shards): benchmarks at the real
    # size only, never CI. Written tensor by tensor: peak memory is one shard plus one float32 tensor.
    "full": Preset(36, 4096, 32, 8, 11008, 8000, 151_680, 32, 1280, 3420, 8, 12_845_056, 4300 << 20),
}
PLANTED_PEAK = 1.0e5  # beyond FP16's 65,504: what `plant_vision_peak` writes into one block's residual stream

# Qwen2.5-VL's CLIP normalisation constants (the processor's image_mean / image_std).
IMAGE_MEAN = [0.48145466, 0.4578275, 0.40821073]
IMAGE_STD = [0.26862954, 0.26130258, 0.27577711]


def build_config(p: Preset, token_ids: dict[str, int], vocab_size: int) -> dict:
    head_dim = p.text_hidden // p.text_heads
    unit = head_dim // 16  # M-RoPE sections in Qwen2.5-VL proportions 2:3:3, summing to head_dim / 2
    section = [2 * unit, 3 * unit, 3 * unit]
    return {
        "architectures": ["Qwen2_5_VLForConditionalGeneration"],
        "model_type": "qwen2_5_vl",
        "attention_dropout": 0.0,
        "bos_token_id": token_ids["<|endoftext|>"],
        "eos_token_id": token_ids["<|im_end|>"],
        "pad_token_id": token_ids["<|endoftext|>"],
        "vision_start_token_id": token_ids["<|vision_start|>"],
        "vision_end_token_id": token_ids["<|vision_end|>"],
        "vision_token_id": token_ids["<|vision_pad|>"],
        "image_token_id": token_ids["<|image_pad|>"],
        "video_token_id": token_ids["<|video_pad|>"],
        "hidden_act": "silu",
        "hidden_size": p.text_hidden,
        "initializer_range": 0.02,
        "intermediate_size": p.text_intermediate,
        "max_position_embeddings": 32768,
        "max_window_layers": p.text_layers,
        "num_attention_heads": p.text_heads,
        "num_hidden_layers": p.text_layers,
        "num_key_value_heads": p.text_kv_heads,
        "rms_norm_eps": 1e-06,
        "rope_theta": 1000000.0,
        "rope_scaling": {"type": "mrope", "mrope_section": section},
        "sliding_window": 32768,
        "use_sliding_window": False,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
        "use_cache": True,
        "vocab_size": vocab_size,
        "vision_config": {
            "depth": p.vision_depth,
            "hidden_act": "silu",
            "hidden_size": p.vision_hidden,
            "intermediate_size": p.vision_intermediate,
            "num_heads": p.vision_hidden // 80,  # head_dim 80, as in Qwen2.5-ViT
            "in_chans": 3,
            "out_hidden_size": p.text_hidden,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "spatial_patch_size": 14,
            "temporal_patch_size": 2,
            "window_size": 112,
            "fullatt_block_indexes": list(range(p.fullatt_every - 1, p.vision_depth, p.fullatt_every)),
            "tokens_per_second": 2,
        },
    }


def _tensor_seed(seed: int, name: str) -> int:
    """A per-tensor seed, so each tensor's values depend on (seed, name) only, not on order."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{name}".encode()).digest()[:8], "little") & ((1 << 63) - 1)


def init_tensor(
    name: str,
    shape: tuple[int, ...],
    seed: int,
    outliers: list[int],
    outlier_scale: float,
    peak_block: int | None = None,
):
    """Draw one weight (float32) by the rules below; pure function of (name, shape, seed, peak_block)."""
    import torch

    g = torch.Generator().manual_seed(_tensor_seed(seed, name))
    if name.endswith("norm.weight") or ".norm1." in name or ".norm2." in name or "ln_q" in name or "layernorm" in name:
        w = 1.0 + 0.05 * torch.randn(shape, generator=g)
    elif name.endswith(".bias"):
        w = 0.02 * torch.randn(shape, generator=g)
    else:
        w = 0.02 * torch.randn(shape, generator=g)
    if name == "model.embed_tokens.weight" and outliers:
        # Massive-activation channels: large in every token's residual state, as in trained LLMs.
        w[:, outliers] *= outlier_scale
    if name.startswith("model.layers.") and name.endswith(("o_proj.weight", "down_proj.weight")) and outliers:
        # Layers write into the same channels too, so the outliers persist (and grow) with depth.
        w[outliers, :] *= 4.0
    if peak_block is not None and name == f"visual.blocks.{peak_block}.mlp.down_proj.bias":
        # Massive activations in the vision residual stream from this block on, beyond FP16's range (as the real
        # tower reportedly nears it from block 17): what the FP16 overflow guard exists for.
        w[:2] = PLANTED_PEAK
    return w


def _tensor_shapes(config: dict) -> dict[str, tuple[int, ...]]:
    from edgekit.model.checkpoint import expected_shapes
    from edgekit.model.config import read_text_dims, read_vision_dims

    return expected_shapes(read_text_dims(config), read_vision_dims(config))


def _write_json(path: Path, obj: dict) -> None:
    path.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _write_weights(
    out: Path,
    shapes: dict[str, tuple[int, ...]],
    p: Preset,
    seed: int,
    outliers: list[int],
    on_tensor=None,
    peak_block: int | None = None,
) -> None:
    import torch
    from safetensors.torch import save_file

    names = sorted(shapes)
    shards: list[list[str]] = [[]]
    size = 0
    for name in names:
        nbytes = 2 * int(torch.Size(shapes[name]).numel())
        if p.shard_bytes and shards[-1] and size + nbytes > p.shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    files = (
        ["model.safetensors"]
        if len(shards) == 1 and not p.shard_bytes
        else [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    )
    weight_map, total = {}, 0
    for fname, shard in zip(files, shards):
        tensors = {}
        for name in shard:
            tensors[name] = init_tensor(name, shapes[name], seed, outliers, p.outlier_scale, peak_block).to(
                torch.bfloat16
            )
            total += tensors[name].numel() * 2
            weight_map[name] = fname
            if on_tensor:
                on_tensor(name)
        save_file(tensors, str(out / fname), metadata={"format": "pt"})
        del tensors
    if len(files) > 1 or p.shard_bytes:
        _write_json(out / "model.safetensors.index.json", {"metadata": {"total_size": total}, "weight_map": weight_map})


def make_tiny(
    out_dir: str | Path,
    preset: str = "tiny",
    seed: int = 0,
    *,
    on_tensor=None,
    plant_vision_peak: int | None = None,
    plant_outliers: bool = True,
    max_pixels: int | None = None,
) -> Path:
    """Write a complete random-weight checkpoint to `out_dir` (created; must be empty or absent).
    plant_vision_peak: a vision block whose output carries activations of PLANTED_PEAK (beyond FP16).
    plant_outliers=False: no massive-activation channels (an init to train from: training grows its own).
    max_pixels: the image processor's pixel budget instead of the preset's."""
    if preset not in PRESETS:
        raise EdgekitError(f"unknown preset '{preset}'; choose one of {', '.join(PRESETS)}")
    p = PRESETS[preset]
    if plant_vision_peak is not None and not 0 <= plant_vision_peak < p.vision_depth:
        raise EdgekitError(
            f"--plant-vision-peak {plant_vision_peak}: preset '{preset}' has vision blocks 0..{p.vision_depth - 1}"
        )
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise EdgekitError(f"{out}: directory is not empty; choose a new output directory")
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)

    tok = _train(p, seed)
    vocab = tok.get_vocab(with_added_tokens=True)
    n_tokens = len(vocab)
    vocab_size = p.vocab_size or -(-n_tokens // 64) * 64
    if vocab_size < n_tokens:
        raise EdgekitError(f"preset '{preset}': vocab_size {vocab_size} < tokenizer size {n_tokens}")
    token_ids = {content: vocab[content] for content in vocab if content.startswith("<")}
    config = build_config(p, token_ids, vocab_size)
    shapes = _tensor_shapes(config)

    import random

    outliers = sorted(random.Random(seed).sample(range(p.text_hidden), p.outlier_channels)) if plant_outliers else []
    _write_weights(tmp, shapes, p, seed, outliers, on_tensor, plant_vision_peak)
    _write_tokenizer_files(tmp, tok, token_ids)
    _write_json(tmp / "config.json", config)
    _write_json(
        tmp / "generation_config.json",
        {
            "bos_token_id": token_ids["<|endoftext|>"],
            "eos_token_id": [token_ids["<|im_end|>"], token_ids["<|endoftext|>"]],
            "pad_token_id": token_ids["<|endoftext|>"],
            "do_sample": False,
        },
    )
    _write_json(
        tmp / "preprocessor_config.json",
        {
            "image_processor_type": "Qwen2VLImageProcessor",
            "processor_class": "Qwen2_5_VLProcessor",
            "do_resize": True,
            "do_rescale": True,
            "do_normalize": True,
            "do_convert_rgb": True,
            "rescale_factor": 1 / 255,
            "image_mean": IMAGE_MEAN,
            "image_std": IMAGE_STD,
            "min_pixels": 3136,
            "max_pixels": max_pixels or p.max_pixels,
            "patch_size": 14,
            "temporal_patch_size": 2,
            "merge_size": 2,
        },
    )
    _write_json(
        tmp / "edgekit_fixture.json",
        {
            "preset": preset,
            "seed": seed,
            "outlier_channels": outliers,
            "note": "random weights generated by edgekit make-tiny",
            **(
                {"planted_vision_peak": {"block": plant_vision_peak, "value": PLANTED_PEAK}}
                if plant_vision_peak is not None
                else {}
            ),
        },
    )
    if out.exists():
        out.rmdir()
    os.replace(tmp, out)
    return out


def _train(p: Preset, seed: int):
    from edgekit.model.tokenizer_train import train_tokenizer

    return train_tokenizer(p.bpe_vocab, seed=seed)


def chat_template() -> str:
    return resources.files("edgekit.model").joinpath("chat_template.jinja").read_text(encoding="utf-8")


def _write_tokenizer_files(out: Path, tok, token_ids: dict[str, int]) -> None:
    from edgekit.model.tokenizer_train import ADDED_TOKENS

    # tokenizers serialises deterministically; reformat with sorted keys for stable bytes.
    _write_json(out / "tokenizer.json", json.loads(tok.to_str()))
    template = chat_template()
    added = {
        str(token_ids[c]): {
            "content": c,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": s,
        }
        for c, s in ADDED_TOKENS
    }
    _write_json(
        out / "tokenizer_config.json",
        {
            "tokenizer_class": "Qwen2Tokenizer",
            "added_tokens_decoder": added,
            "additional_special_tokens": [c for c, s in ADDED_TOKENS if s and c not in ("<|endoftext|>", "<|im_end|>")],
            "bos_token": None,
            "eos_token": "<|im_end|>",
            "pad_token": "<|endoftext|>",
            "unk_token": None,
            "model_max_length": 32768,
            "clean_up_tokenization_spaces": False,
            "errors": "replace",
            "split_special_tokens": False,
            "add_prefix_space": False,
            "chat_template": template,
        },
    )
    (out / "chat_template.jinja").write_text(template, encoding="utf-8")
