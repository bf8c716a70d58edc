"""Summary statistics for the benchmark, as pure functions (numpy): percentiles and bootstrap intervals.

Intervals are percentile bootstraps over samples (Efron & Tibshirani 1993, ch. 13): resample the samples with
replacement B times, take the statistic each time, report the 2.5th and 97.5th percentiles. A variant and the
reference answered the same samples, so their difference is bootstrapped *paired* (the same resampled indices
for both), which is much tighter than two independent intervals. Ratios of sums (mean per-token KL pooled over
samples of different lengths) resample whole samples, keeping each sample's tokens together.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

BOOTSTRAP_RESAMPLES = 2000


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 90, 99)) -> dict[str, float]:
    """{'p50': ..., 'p90': ..., 'p99': ..., 'mean': ...} (linear interpolation between order statistics)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {**{f"p{q:g}": float("nan") for q in qs}, "mean": float("nan")}
    return {**{f"p{q:g}": float(np.percentile(v, q)) for q in qs}, "mean": float(v.mean())}


def _indices(n: int, seed: int, resamples: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))  # [B, n]


def bootstrap_mean(values: Sequence[float], *, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES) -> dict:
    """{'mean', 'ci95': [lo, hi], 'n'} of per-sample values."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return {"mean": None, "ci95": [None, None], "n": 0}
    means = v[_indices(v.size, seed, resamples)].mean(axis=1)  # [B]
    return {"mean": float(v.mean()), "ci95": _interval(means), "n": int(v.size)}


def bootstrap_paired_difference(
    a: Sequence[float], b: Sequence[float], *, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES
) -> dict:
    """Mean of a − b over paired samples, with its paired bootstrap interval."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        raise ValueError(f"paired values need equal lengths, got {x.shape} and {y.shape}")
    return bootstrap_mean(x - y, seed=seed, resamples=resamples)


def bootstrap_ratio(
    numerators: Sequence[float], denominators: Sequence[float], *, seed: int = 0, resamples: int = BOOTSTRAP_RESAMPLES
) -> dict:
    """sum(num) / sum(den) over samples (e.g. KL summed over a sample's tokens / its token count), resampling
    whole samples."""
    num, den = np.asarray(numerators, dtype=np.float64), np.asarray(denominators, dtype=np.float64)
    if num.size == 0 or den.sum() <= 0:
        return {"mean": None, "ci95": [None, None], "n": int(num.size)}
    idx = _indices(num.size, seed, resamples)
    ratios = num[idx].sum(axis=1) / np.maximum(den[idx].sum(axis=1), 1e-300)  # [B]
    return {"mean": float(num.sum() / den.sum()), "ci95": _interval(ratios), "n": int(num.size)}


def _interval(draws: np.ndarray) -> list[float]:
    lo, hi = np.percentile(draws, [2.5, 97.5])
    return [float(lo), float(hi)]
