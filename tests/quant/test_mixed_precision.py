"""Mixed precision: the budget allocator (pure), and a --budget-bits GGUF that llama.cpp runs, with per-tensor types
as chosen, exact codes, and lower KL than uniform Q4_K at a size between uniform Q4_K and Q5_K."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from edgekit.errors import EdgekitError
from edgekit.quant.mixed import GroupSensitivity, allocate, average_bits, bits_per_weight, choose_grids

LADDER = ("gguf:q4_k", "gguf:q5_k", "gguf:q6_k", "gguf:q8_0")


def _groups(rng, n=12, sensitive=3):
    groups = []
    for i in range(n):
        base = rng.uniform(0.004, 0.006) * (20.0 if i == sensitive else 1.0)
        errs = {g: base / 4**k for k, g in enumerate(LADDER)}  # ~4x less error per extra bit, as measured
        groups.append(GroupSensitivity(f"model.layers.{i}.qkv", int(rng.integers(1, 9)) * 65536, errs))
    return groups


def test_allocator_spends_bits_where_error_drops_most():
    rng = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
    groups = _groups(rng)
    floor = bits_per_weight("gguf:q4_k")
    # a budget that buys exactly one Q4_K -> Q5_K upgrade of the 20x-sensitive group: it goes first
    budget = floor + groups[3].params * (bits_per_weight("gguf:q5_k") - floor) / sum(g.params for g in groups)
    choice = allocate(groups, budget)
    assert average_bits(groups, choice) <= budget + 1e-9
    assert choice["model.layers.3.qkv"] != "gguf:q4_k"
    for extra in (0.0, 0.3, 1.2, 1.8, 3.4):
        choice = allocate(groups, budget + extra)
        assert average_bits(groups, choice) <= budget + extra + 1e-9
        assert choice["model.layers.3.qkv"] != "gguf:q4_k"  # once affordable, always upgraded
    assert set(allocate(groups, 16.0).values()) == {"gguf:q8_0"}
    with pytest.raises(EdgekitError, match="cheapest candidates already need"):
        allocate(groups, 4.0)
    edge_floor = average_bits(
        groups, {g.key: "gguf:q8_0" if g.key.split(".")[2] in ("0", "11") else "gguf:q4_k" for g in groups}
    )
    pinned = choose_grids(groups, edge_floor + 0.2, "gguf:q4_k", edge={0, 11}, edge_grid="gguf:q8_0")
    assert pinned["model.layers.0.qkv"] == pinned["model.layers.11.qkv"] == "gguf:q8_0"
    assert average_bits(groups, pinned) <= edge_floor + 0.2 + 1e-9


@pytest.mark.slow
def test_budget_bits_gguf_runs_in_llama_cpp(small_ckpt, tmp_path):
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from edgekit.bench.gguf_fidelity import gguf_logits, heldout_prompts, kl_table
    from edgekit.cli import main
    from edgekit.export.gguf import write_decoder_gguf
    from edgekit.quant.calibrate import QuantConfig, calibrate
    from edgekit.quant.grids import dequantize_weight

    out, cache = tmp_path / "mixed.gguf", tmp_path / "cache"
    assert (
        main(
            [
                "quantize",
                str(small_ckpt),
                "--method",
                "rtn",
                "--format",
                "gguf:q4_k",
                "--budget-bits",
                "5.0",
                "--lm-head",
                "q8_0",
                "--embeddings",
                "q6_k",
                "--n",
                "6",
                "--evaluate",
                "0",
                "--cache",
                str(cache),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    report = json.loads(out.with_suffix(".quantization.json").read_text())["mixed_precision"]
    assert 4.5 < report["average_bits"] <= 5.0
    reader = GGUFReader(str(out))
    types = {t.name: t.tensor_type.name for t in reader.tensors}
    assert types["output.weight"] == "Q8_0" and types["token_embd.weight"] == "Q6_K"
    short = {
        "qkv": ("attn_q", "attn_k", "attn_v"),
        "o": ("attn_output",),
        "gate_up": ("ffn_gate", "ffn_up"),
        "down": ("ffn_down",),
    }
    for key, grid in report["choice"].items():
        i, group = key.split(".")[2], key.split(".")[3]
        assert {types[f"blk.{i}.{s}.weight"] for s in short[group]} == {grid.split(":")[1].upper()}
    # the codes in the file are the quantizer's, for every chosen type
    overrides = tuple(sorted((k, v) for k, v in report["choice"].items() if v != "gguf:q4_k"))
    result = calibrate(
        small_ckpt, QuantConfig(method="rtn", grid="gguf:q4_k", n_samples=6, grid_overrides=overrides), cache
    )
    tensors = {t.name: t for t in reader.tensors}
    name = next(k for k, v in report["choice"].items() if v != "gguf:q4_k") + ""
    i, group = name.split(".")[2], name.split(".")[3]
    src = {"qkv": "self_attn.q_proj", "o": "self_attn.o_proj", "gate_up": "mlp.gate_proj", "down": "mlp.down_proj"}[
        group
    ]
    qw = result.quantized[f"model.layers.{i}.{src}.weight"]
    t = tensors[f"blk.{i}.{short[group][0]}.weight"]
    assert np.array_equal(dequantize(t.data, t.tensor_type).reshape(qw.shape), dequantize_weight(qw).numpy())
    # llama.cpp runs it; more bits where chosen -> lower KL than uniform Q4_K, size between Q4_K and Q5_K
    f32 = write_decoder_gguf(small_ckpt, tmp_path / "f32.gguf", "f32")
    q4 = write_decoder_gguf(small_ckpt, tmp_path / "q4k.gguf", "q4_k")
    q5 = write_decoder_gguf(small_ckpt, tmp_path / "q5k.gguf", "q5_k")
    assert q4.stat().st_size < out.stat().st_size < q5.stat().st_size * 1.05
    prompts = heldout_prompts(small_ckpt, "driving,embodied", 4)
    kl = kl_table(gguf_logits(f32, prompts), {"mixed": gguf_logits(out, prompts), "q4_k": gguf_logits(q4, prompts)})
    print(kl)
    assert kl["mixed"] < kl["q4_k"]
