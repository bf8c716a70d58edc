"""Fidelity of a quantized model to the full-precision one: pure functions over logits and tensors."""

from __future__ import annotations

import torch


def token_kl(p_logits: torch.Tensor, q_logits: torch.Tensor) -> torch.Tensor:
    """Per-position KL(P‖Q) of next-token distributions, [L, vocab] x2 -> [L] (float64)."""
    logp = torch.log_softmax(p_logits.to(torch.float64), dim=-1)
    logq = torch.log_softmax(q_logits.to(torch.float64), dim=-1)
    return (logp.exp() * (logp - logq)).sum(-1)


def mean_token_kl(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    """Mean KL(FP‖Q) over every position of every sequence."""
    kls = torch.cat([token_kl(p, q) for p, q in pairs])
    return float(kls.mean())


def top1_agreement(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    same = torch.cat([(p.argmax(-1) == q.argmax(-1)) for p, q in pairs])
    return float(same.to(torch.float64).mean())


def relative_error(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """‖ref − approx‖ / ‖ref‖ (per-layer output error)."""
    ref = reference.to(torch.float64)
    return float((ref - approx.to(torch.float64)).norm() / ref.norm().clamp_min(1e-30))
