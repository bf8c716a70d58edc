"""The full-precision decoder one layer at a time, for calibration and sensitivity (pure plumbing, no quantizing).

calibration_sequences  samples -> teacher-forced token sequences with M-RoPE positions and pixels
layer0_inputs          token embeddings with the vision tower's embeddings at image tokens
decoder_layer          one transformers decoder layer with only its weights loaded (float32)
rotary, run_layer      M-RoPE and one layer's forward pass over every sequence
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgekit.errors import EdgekitError


@dataclass
class CalibSeq:
    input_ids: np.ndarray  # int64 [L]
    positions: np.ndarray  # int64 [3, L]
    pixel_values: np.ndarray  # float32 [patches, patch_dim]
    grid_thw: np.ndarray  # int64 [k, 3]


def calibration_sequences(
    ckpt_path: Path, spec: str, n: int, seed: int, resize_to: tuple[int, int], split_name: str = "calib"
) -> tuple[list[CalibSeq], str]:
    """Teacher-forced sequences from samples; returns them and a hash of exactly what was used.
    spec "default" (calibration only) is the documented mix of data/calibration_mix.py."""
    from edgekit.data.calibration_mix import DEFAULT_SPEC
    from edgekit.data.reference_answers import format_answer_for_teacher_forcing
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.model.prompt_assets import PromptAssets

    ck = open_checkpoint(ckpt_path)
    assets = PromptAssets.from_checkpoint(ck)
    ck.close()
    tok = assets.tokenizer
    if spec == DEFAULT_SPEC and split_name == "calib":
        chosen, passages = _default_mix(n, seed)
    else:
        chosen, passages = _chosen_samples(spec, split_name, n, seed), []
    if not chosen and not passages:
        raise EdgekitError(f"--samples {spec}: no '{split_name}' samples to calibrate on")
    h = hashlib.sha256()
    seqs = []
    for s in chosen:
        seqs.append(
            chat_sequence(assets, tok, s.question, [s.load_image()], format_answer_for_teacher_forcing(s), resize_to)
        )
        h.update(s.id.encode() + b"\0" + seqs[-1].input_ids.tobytes() + seqs[-1].pixel_values.tobytes())
    for p in passages:
        seqs.append(text_sequence(tok, p.text, assets.image.patch_dim))
        h.update(p.id.encode() + b"\0" + seqs[-1].input_ids.tobytes())
    return seqs, h.hexdigest()


def _chosen_samples(spec: str, split_name: str, n: int, seed: int) -> list:
    from edgekit.data.samples import load_samples
    from edgekit.data.selection import mix, split

    return mix(split(load_samples(spec.split(",") if "," in spec else spec), split_name), n, seed)


def _default_mix(n: int, seed: int) -> tuple[list, list]:
    """(samples, generic passages) of the default calibration set, counted as data/calibration_mix.py says."""
    import random

    from edgekit.data.calibration_mix import counts, load_passages, real_samples_files
    from edgekit.data.samples import BUILTIN_SETS

    real = real_samples_files()
    passages = load_passages()
    plan = counts(n, bool(real), len(passages))
    chosen = _chosen_samples(",".join(map(str, real)), "calib", plan["real"], seed) if plan.get("real") else []
    chosen += _chosen_samples(",".join(BUILTIN_SETS), "calib", plan["builtin"], seed)
    return chosen, random.Random(seed).sample(passages, plan["text"])


def chat_sequence(assets, tok, question: str, images: list, answer: str, resize_to) -> CalibSeq:
    """Question (+ images) through the chat template with thinking off, then `answer` and the end-of-turn token,
    teacher-forced: the sequence the model would see while answering."""
    from edgekit.model.prompt import prepare_inputs

    inputs = prepare_inputs(assets, question, images, think=False, resize_to=resize_to)
    extra = np.asarray(tok.encode(answer + "<|im_end|>", add_special_tokens=False).ids, dtype=np.int64)
    start = int(inputs.position_ids.max()) + 1 if inputs.position_ids.size else 0
    tail = np.broadcast_to(np.arange(start, start + len(extra), dtype=np.int64), (3, len(extra)))
    return CalibSeq(
        np.concatenate([inputs.input_ids, extra]),
        np.concatenate([inputs.position_ids, tail], 1),
        inputs.pixel_values,
        inputs.image_grid_thw,
    )


def text_sequence(tok, text: str, patch_dim: int) -> CalibSeq:
    """Raw text, no chat template, cut at TEXT_TOKENS tokens (1-D positions on all three M-RoPE axes)."""
    from edgekit.data.calibration_mix import TEXT_TOKENS

    ids = np.asarray(tok.encode(text, add_special_tokens=False).ids[:TEXT_TOKENS], dtype=np.int64)
    positions = np.ascontiguousarray(np.broadcast_to(np.arange(len(ids), dtype=np.int64), (3, len(ids))))
    return CalibSeq(ids, positions, np.zeros((0, patch_dim), np.float32), np.zeros((0, 3), np.int64))


def hf_config(ckpt_path: Path):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(ckpt_path))
    cfg.text_config._attn_implementation = "sdpa"
    cfg.vision_config._attn_implementation = "sdpa"
    return cfg


def layer0_inputs(ck, seqs: list[CalibSeq], cfg, device: torch.device | None = None) -> list[torch.Tensor]:
    """Token embeddings with the vision tower's embeddings at image tokens: [1, L, hidden] each, in host memory
    (the tower runs on `device`)."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    from edgekit.devices import to_host

    device = device or torch.device("cpu")
    embed = ck.get("model.embed_tokens.weight")
    vision = Qwen2_5_VisionTransformerPretrainedModel._from_config(cfg.vision_config)
    state = {n[len("visual.") :]: ck.get(n).float() for n in ck.tensor_names() if n.startswith("visual.")}
    vision.load_state_dict(state, strict=True)
    vision.eval().float().to(device)
    out = []
    with torch.no_grad():
        for s in seqs:
            x = embed[torch.from_numpy(s.input_ids)].float()  # [L, hidden]
            if len(s.grid_thw):
                feats = vision(
                    torch.from_numpy(s.pixel_values).to(device), grid_thw=torch.from_numpy(s.grid_thw).to(device)
                ).pooler_output
                mask = torch.from_numpy(s.input_ids == ck.token_ids.image)
                x[mask] = to_host(feats.float())
            out.append(x.unsqueeze(0))
    del vision, state
    return out


def decoder_layer(ck, cfg, i: int, overrides: dict | None = None):
    """transformers' decoder layer i in float32, weights streamed from the checkpoint."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLDecoderLayer

    layer = Qwen2_5_VLDecoderLayer(cfg.text_config, layer_idx=i)
    prefix = f"model.layers.{i}."
    state = {n[len(prefix) :]: ck.get(n).float() for n in ck.tensor_names() if n.startswith(prefix)}
    state.update(overrides or {})
    layer.load_state_dict(state, strict=True)
    return layer.eval().float()


def rotary(cfg):
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLRotaryEmbedding

    return Qwen2_5_VLRotaryEmbedding(config=cfg.text_config)


def run_layer(layer, rope, hidden: list[torch.Tensor], seqs: list[CalibSeq]) -> list[torch.Tensor]:
    """Every sequence through one layer on the layer's device; inputs and outputs stay in host memory."""
    from edgekit.devices import to_host

    device = next(layer.parameters()).device
    out = []
    with torch.no_grad():
        for x, s in zip(hidden, seqs):
            x = x.to(device)
            pos = torch.from_numpy(s.positions).unsqueeze(1).to(device)  # [3, 1, L]
            out.append(to_host(layer(x, attention_mask=None, position_embeddings=rope(x, pos))))
    return out
