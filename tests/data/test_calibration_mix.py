"""The default calibration set: counts per source, and the sequences they make."""

from __future__ import annotations

import json

import numpy as np
import pytest

from edgekit.data.calibration_mix import counts, load_passages
from edgekit.errors import EdgekitError


@pytest.mark.parametrize("n", [1, 7, 32, 64, 200])
def test_counts_add_up_and_follow_the_shares(n):
    with_real, without = counts(n, True, 12), counts(n, False, 12)
    assert sum(with_real.values()) == n and sum(without.values()) == n
    assert "real" not in without and without["text"] == with_real["text"] <= 12
    assert with_real["real"] >= n // 2 and with_real["builtin"] == n // 4


def test_counts_refuse_zero():
    with pytest.raises(EdgekitError, match="at least 1"):
        counts(0, True, 12)


def test_passages_load_and_a_bad_line_is_named(tmp_path):
    assert len(load_passages()) >= 10
    f = tmp_path / "t.jsonl"
    f.write_text(json.dumps({"id": "a", "text": "words"}) + "\n" + json.dumps({"id": "b"}) + "\n")
    with pytest.raises(EdgekitError, match=f"{f}:2"):
        load_passages(f)


def test_default_sequences_mix_real_builtin_and_text(small_ckpt, shared_samples, monkeypatch):
    from edgekit.data.calibration_mix import TEXT_TOKENS
    from edgekit.quant.layers import calibration_sequences

    monkeypatch.delenv("EDGEKIT_REAL_SAMPLES", raising=False)
    seqs, digest = calibration_sequences(small_ckpt, "default", 17, 3, (224, 224))
    plan = counts(17, True, len(load_passages()))
    text = [s for s in seqs if not len(s.grid_thw)]
    assert len(seqs) == 17 and len(text) == plan["text"]
    assert all(len(s.input_ids) <= TEXT_TOKENS and (s.positions == np.arange(len(s.input_ids))).all() for s in text)
    monkeypatch.setenv("EDGEKIT_REAL_SAMPLES", "off")  # without the real split: a different set, a different hash
    seqs_off, digest_off = calibration_sequences(small_ckpt, "default", 17, 3, (224, 224))
    assert len(seqs_off) == 17 and digest_off != digest
