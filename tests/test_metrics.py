"""edgekit.metrics against independent computations (torch's own KL, numpy's norms, rasterised boxes)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from edgekit import metrics as M


def test_kl_divergence_matches_torch(test_seed):
    import numpy as np
    import torch

    from edgekit.metrics import kl_divergence

    rng = np.random.default_rng(test_seed)
    p, q = rng.normal(size=37) * 3, rng.normal(size=37) * 3
    ref = torch.nn.functional.kl_div(
        torch.log_softmax(torch.tensor(q), 0), torch.log_softmax(torch.tensor(p), 0), log_target=True, reduction="sum"
    )
    assert abs(kl_divergence(p, q) - float(ref)) < 1e-9
    assert kl_divergence(p, p) == 0.0


def test_sequence_metrics_against_direct_sums(test_seed):
    rng = np.random.default_rng(test_seed)
    pairs = [(rng.normal(size=(n, 29)), rng.normal(size=(n, 29))) for n in (3, 1, 7)]
    per_token = [M.kl_divergence(p[i], q[i]) for p, q in pairs for i in range(len(p))]
    assert M.mean_token_kl(pairs) == pytest.approx(np.mean(per_token), rel=1e-12)
    assert M.mean_token_kl([(torch.from_numpy(p), torch.from_numpy(q)) for p, q in pairs]) == M.mean_token_kl(pairs)
    same = [p[i].argmax() == q[i].argmax() for p, q in pairs for i in range(len(p))]
    assert M.top1_agreement(pairs) == pytest.approx(np.mean(same))
    assert M.token_agreement([1, 2, 3], [1, 5, 3, 4]) == 0.5 and M.token_agreement([], []) == 1.0


def test_tensor_metrics(test_seed):
    rng = np.random.default_rng(test_seed)
    ref = rng.normal(size=(6, 40))
    noise = rng.normal(size=ref.shape) * 1e-2
    assert M.relative_error(ref + noise, ref) == pytest.approx(np.linalg.norm(noise) / np.linalg.norm(ref))
    assert M.relative_max_error(ref + noise, ref) == pytest.approx(np.abs(noise).max() / np.abs(ref).max())
    cos = M.image_cosines(np.concatenate([ref, -ref]), np.concatenate([ref, ref]), 2)
    assert cos == pytest.approx([1.0, -1.0]) and M.cosine(ref, 2 * ref) == pytest.approx(1.0)


def test_box_iou_equals_rasterised_overlap(test_seed):
    rng = np.random.default_rng(test_seed)
    for _ in range(50):
        a, b = (np.sort(rng.integers(0, 40, size=(2, 2)), axis=0).T.reshape(-1)[[0, 2, 1, 3]] for _ in range(2))
        ga, gb = np.zeros((40, 40), bool), np.zeros((40, 40), bool)
        ga[a[1] : a[3], a[0] : a[2]], gb[b[1] : b[3], b[0] : b[2]] = True, True
        union = (ga | gb).sum()
        assert M.box_iou(a, b) == pytest.approx((ga & gb).sum() / union if union else 0.0, abs=1e-12)
