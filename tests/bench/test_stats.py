"""Percentiles and bootstrap intervals (edgekit/bench/stats.py) against numpy and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from edgekit.bench import stats as ST


def test_percentiles_match_numpy(test_seed):
    v = np.random.default_rng(test_seed).exponential(size=37)
    got = ST.percentiles(v)
    for q in (50, 90, 99):
        assert got[f"p{q}"] == pytest.approx(np.percentile(v, q))
    assert got["mean"] == pytest.approx(v.mean())
    assert np.isnan(ST.percentiles([])["p50"])


def test_bootstrap_interval_covers_the_mean_and_shrinks_with_n(test_seed):
    rng = np.random.default_rng(test_seed)
    small = ST.bootstrap_mean(rng.integers(0, 2, 20), seed=1)
    large = ST.bootstrap_mean(rng.integers(0, 2, 2000), seed=1)
    for r in (small, large):
        assert r["ci95"][0] <= r["mean"] <= r["ci95"][1]
    assert large["ci95"][1] - large["ci95"][0] < (small["ci95"][1] - small["ci95"][0]) / 3
    # a constant has a zero-width interval; the same seed gives the same interval
    assert ST.bootstrap_mean([0.25] * 9)["ci95"] == [0.25, 0.25]
    assert ST.bootstrap_mean([1, 0, 1], seed=3) == ST.bootstrap_mean([1, 0, 1], seed=3)
    assert ST.bootstrap_mean([]) == {"mean": None, "ci95": [None, None], "n": 0}


def test_paired_difference_is_tighter_than_independent_intervals(test_seed):
    rng = np.random.default_rng(test_seed)
    base = rng.normal(size=200)
    variant = base + 0.1 + rng.normal(scale=0.01, size=200)  # the same samples, slightly better
    d = ST.bootstrap_paired_difference(variant, base, seed=2)
    assert d["mean"] == pytest.approx(0.1, abs=0.01) and 0.09 < d["ci95"][0] < d["ci95"][1] < 0.11
    assert ST.bootstrap_paired_difference(base, base)["ci95"] == [0.0, 0.0]
    with pytest.raises(ValueError):
        ST.bootstrap_paired_difference([1, 2], [1])


def test_ratio_pools_tokens_and_resamples_whole_samples():
    kl_sums, tokens = [0.5, 0.1, 0.3], [10, 2, 4]
    r = ST.bootstrap_ratio(kl_sums, tokens, seed=0)
    assert r["mean"] == pytest.approx(0.9 / 16)  # not the mean of per-sample means (0.05, 0.05, 0.075)
    assert r["ci95"][0] >= 0.05 - 1e-12 and r["ci95"][1] <= 0.075 + 1e-12  # every resample mixes these ratios
    assert ST.bootstrap_ratio([], [])["mean"] is None
