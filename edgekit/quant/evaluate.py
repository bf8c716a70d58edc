"""Measure a calibration result against the full-precision model on held-out samples (torch, fake-quant).

The fake-quantized model is transformers' own Qwen2.5-VL with every quantized linear replaced by
its dequantized weight (and folded norms), and for W8A8 the linear inputs fake-quantized per
tensor to INT8. Inputs are the processor's whole output (mm_token_type_ids included).
"""

from __future__ import annotations

from pathlib import Path

import torch

from edgekit.quant.calibrate import CalibrationResult, QuantConfig
from edgekit.quant.layers import CalibSeq, calibration_sequences

HF_PREFIX = {"model.": "model.language_model.", "visual.": "model.visual."}


def _hf_name(name: str) -> str:
    for a, b in HF_PREFIX.items():
        if name.startswith(a):
            return b + name[len(a) :]
    return name


def load_reference(ckpt_path: Path):
    from transformers import Qwen2_5_VLForConditionalGeneration
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    return Qwen2_5_VLForConditionalGeneration.from_pretrained(str(ckpt_path), dtype=torch.float32).eval()


def apply_result(model, result: CalibrationResult) -> list:
    """Replace weights by their quantized versions in place (on the model's device); returns hook handles (the
    activations' fake quantization where the result has input scales, the format's: INT8, E2M1 blocks, E4M3)."""
    from edgekit.quant.formats import parse as parse_format
    from edgekit.quant.grids import dequantize_weight

    state = model.state_dict()
    with torch.no_grad():
        for name, qw in result.quantized.items():
            state[_hf_name(name)].copy_(dequantize_weight(qw))
        for name, w in result.folded.items():
            state[_hf_name(name)].copy_(w)
    return [
        quantize_inputs(
            model.get_submodule(_hf_name(name)), parse_format(result.quantized[name + ".weight"].grid), scale
        )
        for name, scale in result.input_scales.items()
    ]


def quantize_inputs(linear: torch.nn.Module, fmt, scale: torch.Tensor, *, straight_through: bool = False):
    """Hook `linear` so that its input is fake-quantized as `fmt`'s runtime quantizes it under `scale` (INT8, E2M1
    blocks, E4M3); straight_through: the identity's gradient on the way back (QAT). Returns the hook's handle."""

    def hook(module, args):
        x = args[0]
        q = fmt.activation_qdq(x, scale.to(x.device))
        return (x + (q - x).detach(),) if straight_through else (q,)

    return linear.register_forward_pre_hook(hook)


def sequence_logits(model, seqs: list[CalibSeq], image_token_id: int) -> list[torch.Tensor]:
    """Logits [L, vocab] of each sequence, computed on the model's device, returned in host memory."""
    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for s in seqs:
            ids = torch.from_numpy(s.input_ids).unsqueeze(0).to(device)
            kw = {
                "input_ids": ids,
                "attention_mask": torch.ones_like(ids),
                "mm_token_type_ids": (ids == image_token_id).int(),
            }
            if len(s.grid_thw):
                kw.update(
                    pixel_values=torch.from_numpy(s.pixel_values).to(device),
                    image_grid_thw=torch.from_numpy(s.grid_thw).to(device),
                )
            out.append(model(**kw).logits[0].float().cpu())
    return out


def heldout_sequences(ckpt_path: Path, cfg: QuantConfig, n: int) -> list[CalibSeq]:
    """Samples from the 'eval' split: disjoint from calibration (no shared image)."""
    seqs, _ = calibration_sequences(ckpt_path, cfg.samples, n, cfg.seed + 1, cfg.resize_to, split_name="eval")
    return seqs


def kl_against_reference(
    ckpt_path: str | Path,
    results: dict[str, CalibrationResult],
    cfg: QuantConfig,
    n_eval: int = 16,
    device: torch.device | str = "cpu",
) -> dict[str, dict[str, float]]:
    """{label: {"kl": mean KL(FP‖Q) per token, "top1": top-1 agreement}} on held-out samples."""
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.metrics import mean_token_kl, top1_agreement

    ckpt_path = Path(ckpt_path)
    image_id = open_checkpoint(ckpt_path).token_ids.image
    seqs = heldout_sequences(ckpt_path, cfg, n_eval)
    model = load_reference(ckpt_path).to(device)
    reference = sequence_logits(model, seqs, image_id)
    fp_state = {k: v.to("cpu", copy=True) for k, v in model.state_dict().items()}  # host memory, not the GPU's
    out = {}
    for label, result in results.items():
        handles = apply_result(model, result)
        q = sequence_logits(model, seqs, image_id)
        for h in handles:
            h.remove()
        model.load_state_dict(fp_state)
        pairs = list(zip(reference, q))
        out[label] = {"kl": mean_token_kl(pairs), "top1": top1_agreement(pairs)}
    return out
