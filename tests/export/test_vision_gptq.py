"""GPTQ with fixed per-channel scales (edgekit/export/vision_gptq.py) on fresh random layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit.export.vision_gptq import gptq_fixed_scale, output_error

QMAX = 127  # onnxruntime's symmetric int8 weight scale: absmax / 127


def _layer(rng, n: int, k: int, dead: int = 0):
    """Weights [N, K], per-row absmax scales, and H = XᵀX/rows of inputs with a shared mean and correlated columns."""
    W = torch.from_numpy(rng.standard_normal((n, k)))
    mix = rng.standard_normal((k, k)) / np.sqrt(k)
    X = rng.standard_normal((4 * k, k)) @ (np.eye(k) + mix) + 3.0 * rng.standard_normal(k)  # mean ≠ 0, as in the tower
    X[:, :dead] = 0.0
    H = torch.from_numpy(X.T @ X / X.shape[0])
    scale = W.abs().amax(dim=1) / QMAX
    return W, H, scale


@pytest.mark.parametrize("n,k", [(8, 48), (37, 129), (64, 300)])
def test_fixed_scale_gptq_beats_round_to_nearest(n, k):
    rng = np.random.default_rng(np.random.SeedSequence().entropy)
    W, H, scale = _layer(rng, n, k)
    rtn = torch.clamp(torch.round(W / scale[:, None]), -QMAX, QMAX)
    Q = gptq_fixed_scale(W, H, scale, damp=0.01)
    assert Q.shape == (n, k) and -128 <= int(Q.min()) and int(Q.max()) <= 127
    assert output_error(W, H, scale, Q.double()) < 0.6 * output_error(W, H, scale, rtn)
    # codes stay near their nearest: GPTQ moves a code by a step or two, never to a new range
    assert int((Q.double() - rtn).abs().max()) <= 3


def test_dead_inputs_get_zero_codes_and_do_not_break_the_factorisation():
    rng = np.random.default_rng(np.random.SeedSequence().entropy)
    W, H, scale = _layer(rng, 16, 40, dead=5)
    Q = gptq_fixed_scale(W, H, scale, damp=0.01)
    assert torch.all(Q[:, :5] == 0) and torch.isfinite(Q.double()).all()
