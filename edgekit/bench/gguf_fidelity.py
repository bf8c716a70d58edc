"""KL(FP‖Q) of GGUF decoders measured in llama.cpp itself, on held-out prompts.

The f32 GGUF is the reference; every file gets the same prompts with the same image embeddings
(the PyTorch vision tower's), fed as embeddings with M-RoPE positions. Prompts come from the samples'
'eval' split (same generator as calibration) or from the held-out set (edgekit.data.heldout: unlike it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def heldout_prompts(ckpt_path: Path, samples: str, n: int, seed: int = 1, resize_to=(224, 224)):
    """[(input_ids, [ImageEmbedding])] for n 'eval' samples, teacher-forced with their reference answers."""
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.quant.layers import calibration_sequences, hf_config, layer0_inputs

    seqs, _ = calibration_sequences(ckpt_path, samples, n, seed, resize_to, split_name="eval")
    ck = open_checkpoint(ckpt_path)
    hidden = layer0_inputs(ck, seqs, hf_config(ckpt_path))
    return [(s.input_ids.tolist(), [_image_embedding(ck, s, h)]) for s, h in zip(seqs, hidden)]


def heldout_set_prompts(ckpt_path: Path, items) -> list[tuple[list[int], list]]:
    """[(input_ids, [ImageEmbedding] or [])] for held-out items (edgekit.data.heldout), teacher-forced with their
    partial answers; images at their own size (odd sizes give odd grids)."""
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.quant.layers import hf_config, layer0_inputs

    ck = open_checkpoint(ckpt_path)
    seqs = heldout_chat_sequences(ck, items)
    with_image = [s for s in seqs if len(s.grid_thw)]
    hidden = iter(layer0_inputs(ck, with_image, hf_config(ckpt_path)) if with_image else [])  # the vision tower once
    prompts = [(s.input_ids.tolist(), [_image_embedding(ck, s, next(hidden))] if len(s.grid_thw) else []) for s in seqs]
    ck.close()
    return prompts


def heldout_chat_sequences(ck, items) -> list:
    """Held-out items (edgekit.data.heldout) as teacher-forced chat sequences (CalibSeq), thinking off, images at
    their own size."""
    from edgekit.model.prompt_assets import PromptAssets
    from edgekit.quant.layers import chat_sequence

    assets = PromptAssets.from_checkpoint(ck)
    return [
        chat_sequence(assets, assets.tokenizer, it.prompt, [it.image] if it.image else [], it.continuation, None)
        for it in items
    ]


def _image_embedding(ck, s, h: torch.Tensor):
    from edgekit.runtime.prompt_segments import ImageEmbedding

    mask = torch.from_numpy(s.input_ids == ck.token_ids.image)
    _, gh, gw = (int(x) for x in s.grid_thw[0])
    merge = ck.vision.merge
    return ImageEmbedding(np.ascontiguousarray(h[0][mask].numpy()), (gh // merge, gw // merge))


def gguf_logits(path: Path, prompts) -> list[np.ndarray]:
    from edgekit.runtime.llama_decoder import LlamaDecoder

    with LlamaDecoder(path, n_ctx=2048) as dec:
        return [dec.logits(ids, images) for ids, images in prompts]


def llama_cpp_quantize(src: Path, dst: Path, ftype: int, pure: bool = True) -> Path:
    """llama.cpp's own quantizer (llama_model_quantize), e.g. ftype 14 = MOSTLY_Q4_K_S; pure: every tensor that type."""
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.pure = pure
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), params)
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize failed ({rc})")
    return dst


def kl_table(reference: list[np.ndarray], others: dict[str, list[np.ndarray]]) -> dict[str, float]:
    from edgekit.metrics import mean_token_kl

    return {name: mean_token_kl(list(zip(reference, logits))) for name, logits in others.items()}
