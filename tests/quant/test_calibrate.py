"""Calibration plumbing: layer-by-layer equals transformers, exact packing into GGUF, kill-and-resume."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from edgekit.errors import EdgekitError
from edgekit.quant.calibrate import QuantConfig, calibrate


def test_layer_by_layer_equals_transformers(tiny_ckpt):
    """The streamed pipeline (embeddings + vision at image tokens, one layer at a time) reproduces HF's hidden states."""
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.quant.layers import calibration_sequences, decoder_layer, hf_config, layer0_inputs, rotary, run_layer
    from edgekit.quant.evaluate import load_reference

    seqs, _ = calibration_sequences(
        tiny_ckpt, "driving,embodied", 3, seed=int(time.time()) % 1000, resize_to=(224, 308)
    )
    ck = open_checkpoint(tiny_ckpt)
    cfg = hf_config(tiny_ckpt)
    hidden = layer0_inputs(ck, seqs, cfg)
    model = load_reference(tiny_ckpt)
    ref = []
    with torch.no_grad():
        for s in seqs:
            ids = torch.from_numpy(s.input_ids)[None]
            out = model(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                mm_token_type_ids=(ids == ck.token_ids.image).int(),
                pixel_values=torch.from_numpy(s.pixel_values),
                image_grid_thw=torch.from_numpy(s.grid_thw),
                output_hidden_states=True,
            )
            ref.append(out.hidden_states)
    rope = rotary(cfg)
    for i in range(ck.text.num_layers):
        for k in range(len(seqs)):
            scale = ref[k][i].abs().max()
            assert (hidden[k] - ref[k][i]).abs().max() <= 1e-4 * scale, f"layer {i} input, seq {k}"
        hidden = run_layer(decoder_layer(ck, cfg, i), rope, hidden, seqs)


def test_gguf_from_calibration_dequantizes_to_quantizer_output(tiny_ckpt, tmp_path):
    from gguf import GGUFReader
    from gguf.quants import dequantize

    from edgekit.export.gguf import write_decoder_gguf
    from edgekit.quant.grids import dequantize_weight

    result = calibrate(tiny_ckpt, QuantConfig(method="gptq", grid="gguf:q4_k", n_samples=4), tmp_path / "cache")
    out = write_decoder_gguf(tiny_ckpt, tmp_path / "d.gguf", "q4_k", calibrated=result)
    reader = GGUFReader(str(out))
    tensors = {t.name: t for t in reader.tensors}
    checked = 0
    for name, qw in result.quantized.items():
        i = int(name.split(".")[2])
        short = {
            "q_proj": "attn_q",
            "k_proj": "attn_k",
            "v_proj": "attn_v",
            "o_proj": "attn_output",
            "gate_proj": "ffn_gate",
            "up_proj": "ffn_up",
            "down_proj": "ffn_down",
        }[name.split(".")[-2]]
        t = tensors[f"blk.{i}.{short}.weight"]
        got = dequantize(t.data, t.tensor_type).reshape(qw.shape)
        assert np.array_equal(got, dequantize_weight(qw).numpy()), name
        checked += 1
    assert checked == len(result.quantized) == 7 * 2


def test_awq_folds_scales_into_norms(tiny_ckpt, tmp_path, test_seed):
    """The folded norm and the codes of W·s together compute the original linear, within Q4_0's error."""
    from edgekit.metrics import relative_error
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.quant.grids import dequantize_weight

    result = calibrate(tiny_ckpt, QuantConfig(method="awq", grid="gguf:q4_0", n_samples=4), tmp_path / "cache")
    assert set(result.folded) == {
        f"model.layers.{i}.{n}" for i in range(2) for n in ("input_layernorm.weight", "post_attention_layernorm.weight")
    }
    ck = open_checkpoint(tiny_ckpt)
    x = torch.randn(64, ck.text.hidden, generator=torch.Generator().manual_seed(test_seed))
    scales = []
    for i in range(2):
        for norm, linear in (("input_layernorm", "self_attn.q_proj"), ("post_attention_layernorm", "mlp.up_proj")):
            g = ck.get(f"model.layers.{i}.{norm}.weight").float()
            folded = result.folded[f"model.layers.{i}.{norm}.weight"].float()
            W = ck.get(f"model.layers.{i}.{linear}.weight").float()
            Q = dequantize_weight(result.quantized[f"model.layers.{i}.{linear}.weight"])
            err = relative_error((x * folded) @ Q.T, (x * g) @ W.T)
            assert err < 0.15, (i, linear, err, f"seed {test_seed}")  # Q4_0 alone: ~0.1 on these weights
            scales.append(float((g / folded).std()))
    print("spread of the folded scales per norm:", scales)


def test_refuses_grid_that_does_not_fit(tiny_ckpt, tmp_path):
    from edgekit.errors import EdgekitError

    with pytest.raises(EdgekitError, match="whose activations are quantized"):
        calibrate(tiny_ckpt, QuantConfig(method="smoothquant", grid="gguf:q4_k"), tmp_path)


@pytest.mark.slow
def test_killed_calibration_resumes_to_identical_result(small_ckpt, tmp_path):
    """Kill -9 after the first layer is written; rerun resumes and the cache equals an uninterrupted run's."""
    args = ["calibrate", str(small_ckpt), "--method", "gptq", "--n", "4", "--format", "gguf:q4_0"]
    cmd = [sys.executable, "-m", "edgekit.cli", *args, "--out", str(tmp_path / "a")]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and not list((tmp_path / "a").glob("*/layer_0000.safetensors")):
        time.sleep(0.2)
    assert proc.poll() is None, "calibration finished before it could be killed"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = sorted(p.name for p in (tmp_path / "a").glob("*/layer_*.safetensors"))
    assert 1 <= len(done_before) < 4
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    full = [sys.executable, "-m", "edgekit.cli", *args, "--out", str(tmp_path / "b")]
    assert subprocess.run(full, capture_output=True).returncode == 0
    a = {p.name: p.read_bytes() for p in sorted((tmp_path / "a").glob("*/*"))}
    b = {p.name: p.read_bytes() for p in sorted((tmp_path / "b").glob("*/*"))}
    assert a.keys() == b.keys() and len([k for k in a if k.startswith("layer_")]) == 4
    assert a == b


def test_resumed_calibration_clears_a_killed_runs_temporaries(tiny_ckpt, tmp_path):
    """A kill during an atomic write leaves `.NAME.xxxx.tmp`; the next run on that cache entry removes it, under
    the entry's lock, and the cached layers are reused as they are."""
    cfg = QuantConfig(method="rtn", grid="gguf:q4_0", n_samples=2)
    first = calibrate(tiny_ckpt, cfg, tmp_path / "cache")
    (entry,) = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    stamps = {p.name: p.stat().st_mtime_ns for p in entry.glob("layer_*.safetensors")}
    for junk in (".hidden.safetensors.ab12cd.tmp", ".tmpq1w2e3", ".layer_0001.safetensors.zz.tmp"):
        (entry / junk).write_bytes(b"half a file")
    again = calibrate(tiny_ckpt, cfg, tmp_path / "cache")
    assert sorted(p.name for p in entry.iterdir()) == [
        ".lock",
        "calibration.json",
        "digests.json",
        "layer_0000.safetensors",
        "layer_0001.safetensors",
    ]
    assert {p.name: p.stat().st_mtime_ns for p in entry.glob("layer_*.safetensors")} == stamps
    assert again.layer_errors == first.layer_errors


@pytest.mark.parametrize("n,panel", [(7, 512), (513, 256), (1100, 512), (64, 64)])
def test_upper_gram_panels_sum_to_the_full_xtx(n, panel):
    """The statistics pass accumulates XᵀX on and above the diagonal, one row panel at a time, and mirrors it once:
    the same matrix as X.T @ X over every sequence, exactly symmetric."""
    from edgekit.quant.layer_stats import add_gram_upper, mirror_upper

    gen = torch.Generator().manual_seed(torch.seed() % 2**31)
    H = torch.zeros(n, n)
    want = torch.zeros(n, n, dtype=torch.float64)
    for rows in (3, 50, 1):
        x = torch.randn(rows, n, generator=gen)
        add_gram_upper(H, x, panel=panel)
        want += x.double().T @ x.double()
    mirror_upper(H)
    assert torch.equal(H, H.T)
    assert torch.allclose(H.double(), want, rtol=1e-5, atol=1e-4 * float(want.abs().max()))


@pytest.mark.parametrize(
    "method,grid,alpha",
    [
        ("gptq", "nvidia:nvfp4", 0.5),
        ("awq", "nvidia:nvfp4", 0.5),
        ("gptq", "nvidia:fp8", 0.5),
        ("smoothquant", "nvidia:fp8", 0.5),
        ("smoothquant", "nvidia:nvfp4", 0.8),
    ],
)
def test_input_scales_are_the_activation_amax_the_folded_layer_sees(tiny_ckpt, method, grid, alpha, test_seed):
    """ModelOpt NVFP4 stores each linear's activation scale, amax / (6 * 448), FP8 amax / 448, from full-precision
    statistics (as ModelOpt calibrates): after AWQ's or SmoothQuant's (`smooth`) scales are folded into the norms
    before q/k/v and gate/up (smoothquant on FP8/NVFP4: the migration, then GPTQ), those inputs are x / s, and the
    scale must be theirs. Checked against the float layer with the folds applied (the norms divided by
    s, the linears' columns multiplied by s: the same function), its inputs hooked."""
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.quant.calibrate import AWQ_TOKENS, FOLD_INTO, quantize_layer
    from edgekit.quant.layer_stats import GROUPS, collect_stats
    from edgekit.quant.layers import calibration_sequences, decoder_layer, hf_config, rotary, run_layer

    seqs, _ = calibration_sequences(tiny_ckpt, "driving,embodied", 3, seed=test_seed % 1000, resize_to=(224, 224))
    ck, cfg = open_checkpoint(tiny_ckpt), hf_config(tiny_ckpt)
    gen = torch.Generator().manual_seed(test_seed)
    hidden = [torch.randn(1, len(s.input_ids), ck.text.hidden, generator=gen) for s in seqs]
    layer, rope = decoder_layer(ck, cfg, 0), rotary(cfg)
    stats = collect_stats(layer, rope, hidden, seqs, AWQ_TOKENS, 0)
    _, folded, input_scales, _, _ = quantize_layer(
        layer, stats, QuantConfig(method=method, grid=grid, alpha=alpha), "", 0
    )
    assert bool(folded) == (method in ("awq", "smoothquant"))
    with torch.no_grad():
        for group, norm in FOLD_INTO.items():
            if norm in folded:
                norm_w = layer.get_submodule(norm.rsplit(".", 1)[0]).weight
                s = norm_w.float() / folded[norm]
                norm_w.copy_(folded[norm])
                for n in GROUPS[group]:
                    layer.get_submodule(n).weight.mul_(s.reshape(1, -1))
    seen: dict[str, float] = {}

    def hook(group):
        return lambda module, args: seen.__setitem__(group, max(seen.get(group, 0.0), float(args[0].abs().max())))

    hooks = [layer.get_submodule(names[0]).register_forward_pre_hook(hook(g)) for g, names in GROUPS.items()]
    run_layer(layer, rope, hidden, seqs)
    for h in hooks:
        h.remove()
    for group, names in GROUPS.items():
        for n in names:
            want = seen[group] / (6 * 448 if grid == "nvidia:nvfp4" else 448)
            assert float(input_scales[n]) == pytest.approx(want, rel=1e-4), (group, n)


def test_smoothing_is_refused_where_activations_are_not_quantized(tiny_ckpt, tmp_path):
    """SmoothQuant migrates activation range into the weights: only onto formats whose activations are quantized
    (W8A8 INT8, FP8, NVFP4), with a strength in [0, 1]."""
    for cfg, match in (
        (QuantConfig(method="smoothquant", grid="gguf:q4_k"), "whose activations"),
        (QuantConfig(method="smoothquant", grid="nvidia:w4a16"), "whose activations"),
        (QuantConfig(method="smoothquant", grid="nvidia:nvfp4", alpha=1.5), "--alpha"),
    ):
        with pytest.raises(EdgekitError, match=match):
            calibrate(tiny_ckpt, cfg, tmp_path / "cache")
    assert not (tmp_path / "cache").exists()
