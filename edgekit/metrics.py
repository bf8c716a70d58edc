"""Every number edgekit reports about fidelity or task accuracy, as pure functions (float64, numpy).

Arrays may be numpy arrays or CPU torch tensors (both convert with np.asarray). Nothing here loads a model.

  distributions  token_kl, kl_divergence, mean_token_kl, top1_agreement, token_agreement
  tensors        relative_error, relative_max_error, cosine, image_cosines
  geometry       box_iou, point_in_box, point_in_polygon, fraction_in_mask
  text           rouge_l
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def _f64(x) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor: through its own float64 conversion (bf16 has no numpy dtype)
        import torch

        x = x.detach().to(torch.float64).cpu().numpy()
    return np.asarray(x, dtype=np.float64)


# ---- distributions -------------------------------------------------------------------------------


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def token_kl(p_logits, q_logits) -> np.ndarray:
    """Per-position KL(P‖Q) of next-token distributions given as logits: [L, vocab] x2 -> [L]."""
    logp, logq = _log_softmax(_f64(p_logits)), _log_softmax(_f64(q_logits))
    return (np.exp(logp) * (logp - logq)).sum(axis=-1)


def kl_divergence(p_logits, q_logits) -> float:
    """KL(P‖Q) of one pair of next-token distributions given as logits [vocab]."""
    return float(token_kl(_f64(p_logits)[None], _f64(q_logits)[None])[0])


def mean_token_kl(pairs: Sequence[tuple]) -> float:
    """Mean KL(FP‖Q) over every position of every (reference logits, variant logits) sequence pair."""
    return float(np.concatenate([token_kl(p, q) for p, q in pairs]).mean())


def top1_agreement(pairs: Sequence[tuple]) -> float:
    """Fraction of positions where the variant's most likely token is the reference's."""
    same = np.concatenate([_f64(p).argmax(-1) == _f64(q).argmax(-1) for p, q in pairs])
    return float(same.mean())


def token_agreement(a: Sequence[int], b: Sequence[int]) -> float:
    """Fraction of positions where two greedy token sequences agree (the longer length counts)."""
    n = max(len(a), len(b))
    return 1.0 if n == 0 else sum(x == y for x, y in zip(a, b)) / n


# ---- tensors -------------------------------------------------------------------------------------


def relative_error(approx, reference) -> float:
    """‖approx − reference‖ / ‖reference‖ (Frobenius)."""
    ref = _f64(reference)
    return float(np.linalg.norm(_f64(approx) - ref) / max(np.linalg.norm(ref), 1e-30))


def relative_max_error(approx, reference) -> float:
    """max |approx − reference| / max |reference|."""
    ref = _f64(reference)
    return float(np.abs(_f64(approx) - ref).max() / max(np.abs(ref).max(), 1e-30))


def cosine(a, b) -> float:
    a, b = _f64(a).reshape(-1), _f64(b).reshape(-1)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def image_cosines(out, ref, images: int) -> np.ndarray:
    """Cosine similarity per image between two [images*tokens, hidden] embeddings -> [images]."""
    a, b = _f64(out).reshape(images, -1), _f64(ref).reshape(images, -1)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


# ---- geometry (grounding scores) -----------------------------------------------------------------


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def point_in_box(p: Sequence[float], box: Sequence[float]) -> bool:
    return box[0] <= p[0] <= box[2] and box[1] <= p[1] <= box[3]


def point_in_polygon(p: Sequence[float], polygon: Sequence[Sequence[float]]) -> bool:
    """Even-odd rule."""
    x, y = p
    inside = False
    for (x1, y1), (x2, y2) in zip(polygon, list(polygon[1:]) + [polygon[0]]):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def fraction_in_mask(points: Sequence[tuple[float, float]], mask) -> float:
    """Fraction of points whose pixel (floor of x, y) is inside the bool mask [H, W]; outside the image is a miss."""
    h, w = mask.shape
    hits = 0
    for x, y in points:
        col, row = math.floor(x), math.floor(y)
        hits += bool(0 <= row < h and 0 <= col < w and mask[row, col])
    return hits / len(points)


# ---- text ----------------------------------------------------------------------------------------


def _lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence (dynamic programming, one row at a time)."""
    if len(a) < len(b):
        a, b = b, a
    row = [0] * (len(b) + 1)
    for x in a:
        diagonal = 0
        for j, y in enumerate(b, 1):
            diagonal, row[j] = row[j], diagonal + 1 if x == y else max(row[j], row[j - 1])
    return row[-1]


def rouge_l(candidate: Sequence[str], reference: Sequence[str], beta: float = 1.2) -> float:
    """ROUGE-L F-measure of two token lists (Lin 2004), with recall weighted by beta = 1.2 as in the COCO caption
    evaluation's Rouge scorer (pycocoevalcap), which DriveLM's language metrics use. Two empty lists score 1."""
    if not candidate or not reference:
        return float(not candidate and not reference)
    lcs = _lcs_length(candidate, reference)
    if lcs == 0:
        return 0.0
    precision, recall = lcs / len(candidate), lcs / len(reference)
    return (1 + beta**2) * precision * recall / (recall + beta**2 * precision)
