"""SmoothQuant (Xiao et al., 2023) for W8A8: pure functions over tensors.

INT8 activations fail on the few channels with huge magnitudes: one per-tensor scale must cover
them, so every other channel gets a handful of levels. SmoothQuant moves that range into the
weights: s_j = max|X_j|^α / max|W_j|^(1−α), X' = X / s (folded into the previous op), W' = W·s.
Weights are then per-output-channel INT8, activations per-tensor symmetric INT8.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from edgekit.quant.grids import QuantizedWeight, dequantize_weight, fit_and_quantize


def smooth_scales(x_absmax: torch.Tensor, weights: list[torch.Tensor], alpha: float = 0.5) -> torch.Tensor:
    """Per input channel s [in]; linears reading the same input share it (the previous op folds one s)."""
    w_absmax = torch.stack([W.abs().amax(0) for W in weights]).amax(0).to(torch.float32).clamp_min(1e-5)
    return (x_absmax.to(torch.float32).clamp_min(1e-5).pow(alpha) / w_absmax.pow(1 - alpha)).clamp_min(1e-5)


def activation_scale(x_absmax_after: torch.Tensor) -> torch.Tensor:
    """Static per-tensor symmetric INT8 scale of the (smoothed) input."""
    return (x_absmax_after.max() / 127.0).clamp_min(1e-12).to(torch.float32)


def fake_quant_activation(X: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return torch.round(X / scale).clamp(-128, 127) * scale


@dataclass
class W8A8:
    scales: torch.Tensor  # [in] smoothing factor s (1 where not smoothed)
    input_scale: torch.Tensor  # scalar: per-tensor INT8 activation scale of X / s
    weights: list[QuantizedWeight]  # int8:channel codes of W · s


def w8a8_quantize(weights: list[torch.Tensor], x_absmax: torch.Tensor, *, alpha: float | None = 0.5) -> W8A8:
    """SmoothQuant W8A8 (alpha=None: naive W8A8 without smoothing)."""
    s = smooth_scales(x_absmax, weights, alpha) if alpha is not None else torch.ones_like(x_absmax, dtype=torch.float32)
    qws = [fit_and_quantize("int8:channel", W.to(torch.float32) * s) for W in weights]
    return W8A8(s, activation_scale(x_absmax.to(torch.float32) / s), qws)


def w8a8_output(X: torch.Tensor, q: W8A8, k: int = 0) -> torch.Tensor:
    """What an INT8 GEMM computes for weight k: Q(X/s)·Q(W·s)ᵀ (fake-quantized, float32)."""
    return fake_quant_activation(X.to(torch.float32) / q.scales, q.input_scale) @ dequantize_weight(q.weights[k]).T
