"""The next token from logits: greedy at temperature 0 (what `edgekit run` does: lowest id on ties), else sampling
with temperature and nucleus (top_p) from a seeded generator. Pure numpy."""

from __future__ import annotations

import numpy as np


def next_token(
    logits: np.ndarray, temperature: float, top_p: float, rng: np.random.Generator, allowed: np.ndarray | None = None
) -> int:
    """logits [vocab]; `allowed`: a boolean mask of tokens a grammar permits (None: all)."""
    z = np.asarray(logits, dtype=np.float64)
    if allowed is not None:
        z = np.where(allowed, z, -np.inf)
    if temperature <= 0:
        return int(np.argmax(z))
    z = (z - z.max()) / temperature
    p = np.exp(z)
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        cut = int(np.searchsorted(np.cumsum(p[order]), top_p)) + 1  # smallest set whose mass reaches top_p
        keep = order[:cut]
        return int(keep[rng.choice(len(keep), p=p[keep] / p[keep].sum())])
    return int(rng.choice(len(p), p=p))
