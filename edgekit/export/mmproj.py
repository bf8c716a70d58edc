"""The vision tower and merger as a llama.cpp "mmproj" GGUF (arch `clip`, projector `qwen2.5vl_merger`).

libmtmd (llama.cpp's multimodal library) loads this file and runs Qwen2.5-ViT itself: RMSNorm
blocks with SiLU-gated MLPs, window attention with full attention every `n_wa_pattern`-th block,
2x2 patch merge, then the merger MLP into the text model's hidden size.

Facts from llama.cpp (convert_hf_to_gguf.py `Qwen2VLVisionModel`, tools/mtmd/clip.cpp):
- the fused `attn.qkv` is split into `attn_q`, `attn_k`, `attn_v` (rows in q, k, v order);
- the Conv3D patch embedding [hidden, C, T=2, P, P] becomes two Conv2D kernels, one per temporal
  slot: `v.patch_embd.weight` (t=0) and `v.patch_embd.weight.1` (t=1);
- `clip.vision.n_wa_pattern` = fullatt_block_indexes[0] + 1, which requires the full-attention
  blocks to be evenly spaced (true for Qwen2.5-VL and MiMo-Embodied);
- image mean/std come from preprocessor_config.json.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.export.gguf import QuantizeFn, TensorPlan, encode_float, rtn_block_bytes, write_gguf_streamed
from edgekit.quant.formats import Format, parse

MMPROJ_FORMATS = ("gguf:f32", "gguf:f16", "gguf:q8_0")
PROJECTOR = "qwen2.5vl_merger"


def window_attention_pattern(fullatt_blocks: tuple[int, ...], depth: int, where: str) -> int:
    """llama.cpp's n_wa_pattern: full attention at blocks n-1, 2n-1, ...; any other layout is refused."""
    if not fullatt_blocks:
        raise EdgekitError(f"{where}: vision_config.fullatt_block_indexes is empty; Qwen2.5-VL needs it")
    n = fullatt_blocks[0] + 1
    expected = tuple(range(n - 1, depth, n))
    if tuple(fullatt_blocks) != expected:
        raise EdgekitError(
            f"{where}: fullatt_block_indexes {list(fullatt_blocks)} are not every {n}th block {list(expected)}; "
            "llama.cpp's mmproj can only express an evenly spaced pattern"
        )
    return n


def mmproj_format(fmt: Format | str) -> Format:
    fmt = parse(fmt)
    if fmt.name not in MMPROJ_FORMATS:
        raise EdgekitError(f"mmproj format {fmt.name!r}: choose one of {', '.join(MMPROJ_FORMATS)}")
    return fmt


def _type_for(shape: tuple[int, ...], fmt: Format) -> str:
    if len(shape) > 2:  # conv kernels: im2col wants a float kernel
        return "F32" if fmt.name == "gguf:f32" else "F16"
    return fmt.gguf_storage(shape).ggml_type


def mmproj_tensor_plan(ckpt, fmt: Format | str) -> list[TensorPlan]:
    fmt = mmproj_format(fmt)
    v = ckpt.vision
    if v.temporal_patch != 2:
        raise EdgekitError(
            f"{ckpt.path}/config.json: temporal_patch_size {v.temporal_patch}; "
            "llama.cpp's Qwen2.5-VL mmproj supports 2 only"
        )
    plan: list[TensorPlan] = []

    def add(gguf_name: str, source: str, shape: tuple[int, ...], transform: str = "") -> None:
        plan.append(TensorPlan(gguf_name, source, shape, _type_for(shape, fmt), transform))

    conv = "visual.patch_embed.proj.weight"
    kshape = (v.hidden, v.in_chans, v.patch, v.patch)
    add("v.patch_embd.weight", conv, kshape, "t0")
    add("v.patch_embd.weight.1", conv, kshape, "t1")
    h = v.hidden
    for i in range(v.depth):
        src, dst = f"visual.blocks.{i}.", f"v.blk.{i}."
        add(dst + "ln1.weight", src + "norm1.weight", (h,))
        for part in ("q", "k", "v"):
            add(dst + f"attn_{part}.weight", src + "attn.qkv.weight", (h, h), part)
            add(dst + f"attn_{part}.bias", src + "attn.qkv.bias", (h,), part)
        add(dst + "attn_out.weight", src + "attn.proj.weight", (h, h))
        add(dst + "attn_out.bias", src + "attn.proj.bias", (h,))
        add(dst + "ln2.weight", src + "norm2.weight", (h,))
        for a, b in (("ffn_gate", "gate_proj"), ("ffn_up", "up_proj"), ("ffn_down", "down_proj")):
            add(dst + f"{a}.weight", src + f"mlp.{b}.weight", tuple(ckpt.shape(src + f"mlp.{b}.weight")))
            add(dst + f"{a}.bias", src + f"mlp.{b}.bias", tuple(ckpt.shape(src + f"mlp.{b}.bias")))
    add("v.post_ln.weight", "visual.merger.ln_q.weight", (h,))
    for k in ("0", "2"):
        add(f"mm.{k}.weight", f"visual.merger.mlp.{k}.weight", tuple(ckpt.shape(f"visual.merger.mlp.{k}.weight")))
        add(f"mm.{k}.bias", f"visual.merger.mlp.{k}.bias", tuple(ckpt.shape(f"visual.merger.mlp.{k}.bias")))
    return plan


def apply_transform(w, transform: str):
    """The slice of a checkpoint tensor one mmproj tensor holds."""
    if transform == "":
        return w
    if transform in ("t0", "t1"):
        return w[:, :, int(transform[1])]  # [hidden, C, T, P, P] -> [hidden, C, P, P]
    third = w.shape[0] // 3  # fused qkv rows: q, then k, then v
    k = "qkv".index(transform)
    return w[k * third : (k + 1) * third]


def add_mmproj_hparams(writer, ckpt, fmt: Format) -> None:
    v, pre = ckpt.vision, ckpt.preprocessor_config or {}
    where = f"{ckpt.path}/config.json"
    for key in ("image_mean", "image_std"):
        if key not in pre:
            raise EdgekitError(
                f"{ckpt.path}/preprocessor_config.json: missing '{key}'; the mmproj needs the normalisation constants"
            )
    writer.add_type("mmproj")
    writer.add_file_type(fmt.gguf_file_type)
    writer.add_clip_has_vision_encoder(True)
    writer.add_clip_projector_type(PROJECTOR)
    writer.add_vision_projection_dim(ckpt.text.hidden)
    writer.add_vision_image_size(560)  # nominal; llama.cpp sizes Qwen2.5-VL images from min/max pixels
    writer.add_vision_patch_size(v.patch)
    writer.add_vision_embedding_length(v.hidden)
    writer.add_vision_feed_forward_length(v.intermediate)
    writer.add_vision_block_count(v.depth)
    writer.add_vision_head_count(v.heads)
    writer.add_vision_attention_layernorm_eps(1e-6)  # Qwen2.5-ViT's RMSNorm eps (fixed in transformers)
    writer.add_vision_image_mean([float(x) for x in pre["image_mean"]])
    writer.add_vision_image_std([float(x) for x in pre["image_std"]])
    writer.add_vision_use_silu(True)
    writer.add_vision_spatial_merge_size(v.merge)
    writer.add_vision_n_wa_pattern(window_attention_pattern(v.fullatt_blocks, v.depth, where))
    writer.add_vision_window_size(v.window_size)
    if "min_pixels" in pre and "max_pixels" in pre:
        writer.add_vision_min_pixels(int(pre["min_pixels"]))
        writer.add_vision_max_pixels(int(pre["max_pixels"]))


def write_mmproj_gguf(
    ckpt_path: str | Path,
    out: str | Path,
    fmt: Format | str = "gguf:f16",
    *,
    quantize: QuantizeFn | None = None,
    on_tensor: Callable[[TensorPlan], None] | None = None,
) -> Path:
    """`edgekit export-decoder --mmproj PATH`: vision tower + merger as a libmtmd-loadable GGUF."""
    import torch

    from edgekit.model.checkpoint import open_checkpoint

    fmt = mmproj_format(fmt)
    ckpt = open_checkpoint(ckpt_path)
    plan = mmproj_tensor_plan(ckpt, fmt)
    quantize = quantize or rtn_block_bytes
    cache: dict[str, object] = {}

    def load(p: TensorPlan) -> np.ndarray:
        if p.source not in cache:  # q, k, v (and t0, t1) slice one source: keep only the latest
            cache.clear()
            ckpt.close()  # unmap what was read so far: mapped pages would count in RSS until the end
            cache[p.source] = ckpt.get(p.source).to(torch.float32)
        w = apply_transform(cache[p.source], p.transform).contiguous()  # [*p.shape]
        if tuple(w.shape) != p.shape:
            raise EdgekitError(
                f"tensor '{p.source}': slice {p.transform!r} has shape {list(w.shape)}, expected {list(p.shape)}"
            )
        if p.ggml_type in ("F32", "F16"):
            return encode_float(w, p.ggml_type)
        return np.ascontiguousarray(quantize(p.source + (f"[{p.transform}]" if p.transform else ""), w, p.ggml_type))

    try:
        return write_gguf_streamed(out, "clip", lambda w: add_mmproj_hparams(w, ckpt, fmt), plan, load, on_tensor)
    finally:
        ckpt.close()
