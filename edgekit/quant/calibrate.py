"""Streamed, sequential, resumable calibration of the decoder (`edgekit calibrate` / `quantize`).

The full-precision model runs over calibration samples — image, question and reference answer,
teacher-forced through the chat template — one decoder layer at a time:

  layer 0 input  = embed_tokens rows + vision-tower embeddings at the image tokens (M-RoPE positions
                   from edgekit.model.rope_index, as transformers computes them)
  for each layer i: load ONLY layer i's weights from safetensors (float32), run every sequence
                   through it collecting the inputs of its linears (XᵀX for GPTQ, samples and
                   |x| statistics for AWQ/SmoothQuant), quantize the layer, then run the QUANTIZED
                   layer to produce layer i+1's inputs (errors of earlier layers are seen by later ones).

Round-to-nearest needs no data: with `data_free_rtn` (what builds ask for) its layers are quantized straight from the
checkpoint with no forward pass (at MiMo-Embodied's size the passes would take hours only to report errors); without
it, RTN runs the passes like the other methods and reports each linear's output error.

Each finished layer is written atomically to the cache (codes + params), then the hidden states it
produced (one file, replaced layer by layer and removed at the end), keyed by (checkpoint hash, samples
hash, config): a killed run resumes after the last finished layer and ends with the same bytes as an
uninterrupted one, and a finished cache entry (codes only) makes the same calibration free next time.

Peak memory ≈ one layer in float32 (4·(2·h·(q+kv) + 3·h·I) bytes)
             + hidden states of all sequences, twice (2 · 4 · h · Σ L_seq bytes)
             + Hessians in float32 (4 · (3·h² + I²) bytes: qkv, o, gate/up, down inputs)
             + (layer 0 only) the vision tower in float32.
For MiMo-Embodied (h 4096, I 11008, 128 sequences of ~600 tokens): 0.9 + 2.5 + 0.7 GB ≈ 4 GB.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch

from edgekit.errors import EdgekitError
from edgekit.quant.calib_cache import (
    HIDDEN_FILE,
    CalibrationResult,
    cache_key,
    entry_lock,
    finished_layers,
    result_from_files,
    resume_point,
    save_hidden,
    save_layer,
)
from edgekit.quant.formats import parse as parse_format
from edgekit.quant.layer_stats import GROUPS, GroupStats, collect_stats
from edgekit.quant.layers import calibration_sequences, decoder_layer, hf_config, layer0_inputs, rotary, run_layer

CONFIG_VERSION = 7  # bump when an algorithm changes: invalidates cached calibrations
METHODS = ("rtn", "gptq", "awq", "smoothquant")
# The op before a group, into which a per-input-channel scale can be folded exactly.
FOLD_INTO = {"qkv": "input_layernorm.weight", "gate_up": "post_attention_layernorm.weight"}
AWQ_TOKENS = 4096  # rows of X kept per group for AWQ's searches
ERROR_ROWS = 512  # of those, about how many each linear's reported output error is measured on (on all 4096, the
# report was ~18 s of every MiMo-Embodied-size layer: 2.9 TFLOP)


@dataclass(frozen=True)
class QuantConfig:
    method: str = "gptq"
    grid: str = "gguf:q4_k"
    samples: str = "default"  # data/calibration_mix.py
    n_samples: int = 32
    damp: float = 0.01
    act_order: bool = False
    weighted_fit: bool = True  # GPTQ: block scales searched with the inputs' importance (grids.py)
    # SmoothQuant's migration strength (s = max|X|^alpha / max|W|^(1-alpha) per input channel, folded into the norm
    # before q/k/v and gate/up); 0: none. The weights then: INT8 per channel by RTN (W8A8, as the paper), GPTQ onto
    # FP8 / NVFP4 (whose activations TensorRT quantizes under a per-tensor scale too)
    alpha: float = 0.5
    resize_to: tuple[int, int] = (224, 224)  # calibration images (h, w), multiples of patch*merge
    seed: int = 0
    # Mixed precision: (group key "model.layers.{i}.{group}", grid) pairs that replace `grid` for one linear
    # group (quant/mixed.py chooses them); a group's linears share a grid because AWQ shares their scale.
    grid_overrides: tuple[tuple[str, str], ...] = ()
    version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        # Grids by their canonical format names (a Format or any spelling edgekit.quant.formats.parse accepts).
        from edgekit.quant.formats import parse

        object.__setattr__(self, "grid", parse(self.grid).grid_name)
        object.__setattr__(self, "grid_overrides", tuple((k, parse(g).grid_name) for k, g in self.grid_overrides))

    def key(self) -> dict:
        return asdict(self)

    @property
    def format(self):
        from edgekit.quant.formats import parse

        return parse(self.grid)

    def grid_for(self, layer: int, group: str) -> str:
        return dict(self.grid_overrides).get(f"model.layers.{layer}.{group}", self.grid)


# ---- quantization of one layer (its statistics: edgekit.quant.layer_stats) -------------------------------


def quantize_layer(layer, stats: dict[str, GroupStats], cfg: QuantConfig, prefix: str, index: int = 0):
    """Quantize every linear of one layer on its device; returns (quantized, folded norms, input scales, errors: in host
    memory; new state: on the layer's device)."""
    from edgekit.quant.awq import awq_quantize
    from edgekit.metrics import relative_error
    from edgekit.quant.grids import dequantize_weight, fit_and_quantize
    from edgekit.quant.gptq import gptq_quantize_shared
    from edgekit.quant.smoothquant import smooth_scales, w8a8_quantize

    quantized, folded, input_scales, errors, new_state = {}, {}, {}, {}, {}
    for group, names in GROUPS.items():
        st = stats[group]
        Ws = [layer.get_submodule(n).weight.detach().float() for n in names]
        X = torch.cat(st.sample)  # [rows, in]
        X_err = X[:: max(1, len(X) // ERROR_ROWS)]  # every sequence's rows, evenly
        grid = cfg.grid_for(index, group)
        scale, to_quantize, hessian = None, Ws, st.hessian
        smooth_then_gptq = cfg.method == "smoothquant" and grid != "int8:channel"  # FP8, NVFP4
        if smooth_then_gptq and cfg.alpha > 0 and group in FOLD_INTO:
            scale = smooth_scales(st.absmax, Ws, cfg.alpha)  # x' = x / s, W' = W · s: the same product
            to_quantize = [W * scale for W in Ws]
            hessian = st.hessian / scale.reshape(-1, 1) / scale.reshape(1, -1)  # Σ x'ᵀx'
        if cfg.method == "gptq" or smooth_then_gptq:
            qws = gptq_quantize_shared(
                to_quantize, hessian, grid, damp=cfg.damp, act_order=cfg.act_order, weighted_fit=cfg.weighted_fit
            )
        elif cfg.method == "awq":
            res = awq_quantize(Ws, X, grid, n_grid=10 if group in FOLD_INTO else 1)  # no fold target: s = 1
            qws, scale = res.quantized, (res.scales if group in FOLD_INTO else None)
        elif cfg.method == "smoothquant":
            res = w8a8_quantize(Ws, st.absmax, alpha=cfg.alpha if group in FOLD_INTO and cfg.alpha > 0 else None)
            qws, scale = res.weights, (res.scales if group in FOLD_INTO else None)
            for n in names:
                input_scales[prefix + n] = res.input_scale.cpu()
        else:
            qws = [fit_and_quantize(grid, W) for W in to_quantize]
        input_range = parse_format(grid).input_scale_range
        if input_range:  # NVFP4: the activations' per-tensor scale, from the same statistics pass
            absmax = st.absmax if scale is None else st.absmax / scale.to(st.absmax)  # a fold (AWQ, smoothing): x / s
            for n in names:
                input_scales[prefix + n] = (absmax.max() / input_range).reshape(()).cpu()
        if scale is not None:
            norm = FOLD_INTO[group]
            w_norm = layer.get_submodule(norm.rsplit(".", 1)[0]).weight.detach().float()
            new_state[norm] = w_norm / scale
            folded[prefix + norm] = new_state[norm].cpu()
        for n, W, qw in zip(names, Ws, qws):
            deq = dequantize_weight(qw)
            quantized[prefix + n + ".weight"] = qw.to_host()
            eff = deq / scale if scale is not None else deq  # the fake-quantized weight in the original basis
            errors[prefix + n + ".weight"] = relative_error(X_err @ eff.T, X_err @ W.T)
            new_state[n + ".weight"] = deq  # with the scale folded into the norm before it
    return quantized, folded, input_scales, errors, new_state


# ---- the resumable driver ------------------------------------------------------------------------


def calibrate(
    ckpt_path: str | Path,
    cfg: QuantConfig,
    cache_dir: str | Path,
    on_layer: Callable[[int, int, str], None] | None = None,
    device: str | torch.device = "cpu",
    data_free_rtn: bool = False,
) -> CalibrationResult:
    """Quantize every decoder linear (lm_head excluded) by `cfg`, layer by layer; resumable.
    A QAT checkpoint (edgekit.qat) gives its trained codes instead, for its own format only.
    `device`: where the layers (and the vision tower) run, one at a time; the cache is the same format on every
    device and not keyed by it (GPTQ on a GPU rounds a few codes differently: README, "On a GPU")."""
    from edgekit.devices import resolve_device
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.quant.grids import get_grid
    from edgekit.quant.trained import is_qat_dir, qat_result

    device = resolve_device(device)
    if cfg.method not in METHODS:
        raise EdgekitError(f"--method {cfg.method!r}: choose one of {', '.join(METHODS)}")
    if cfg.method == "smoothquant" and not cfg.format.quantizes_activations:
        raise EdgekitError(
            f"smoothquant migrates activation range into the weights, for formats whose activations "
            f"are quantized: int8:channel (W8A8), nvidia:fp8, nvidia:nvfp4; not {cfg.grid}"
        )
    if not 0 <= cfg.alpha <= 1:
        raise EdgekitError(f"--alpha {cfg.alpha}: SmoothQuant's migration strength is in [0, 1]")
    ckpt_path = Path(ckpt_path)
    if is_qat_dir(ckpt_path):  # trained codes: packed as they are, whatever weight method was asked for
        if cfg.method == "smoothquant" and cfg.grid == "int8:channel":
            raise EdgekitError(f"{ckpt_path}: a QAT checkpoint has weights only, no SmoothQuant activation scales")
        return qat_result(ckpt_path, cfg.grid, cfg.grid_overrides)
    from edgekit.outputs import refuse_overlap, spec_paths

    refuse_overlap(Path(cache_dir), [ckpt_path, *spec_paths(cfg.samples)], flag="calibration cache")
    ck = open_checkpoint(ckpt_path)
    if cfg.grid_overrides and cfg.method == "smoothquant":
        raise EdgekitError("mixed precision applies to weight grids; smoothquant is uniform W8A8")
    # Fail before spending time: every linear must fit its grid's blocks, every override must name a group.
    known = {f"model.layers.{i}.{g}" for i in range(ck.text.num_layers) for g in GROUPS}
    unknown = sorted(k for k, _ in cfg.grid_overrides if k not in known)
    if unknown:
        raise EdgekitError(f"grid overrides name no linear group of this checkpoint: {unknown[:3]}")
    for i in range(ck.text.num_layers):
        for group, names in GROUPS.items():
            for n in names:
                get_grid(cfg.grid_for(i, group)).check_width(ck.shape(f"model.layers.{i}.{n}.weight")[1])
    # no forward pass, whatever the model's size (unless the format stores activation scales: NVFP4)
    data_free = cfg.method == "rtn" and data_free_rtn and not cfg.format.input_scale_range
    if data_free:
        seqs, samples_hash = [], "none"
    else:
        seqs, samples_hash = calibration_sequences(ckpt_path, cfg.samples, cfg.n_samples, cfg.seed, cfg.resize_to)
    key = cache_key(ck.content_hash, samples_hash, cfg)
    work = Path(cache_dir) / key
    with entry_lock(work):  # one writer per cache entry; a killed run's temporaries are cleared
        if data_free:
            return _rtn_entry(work, ck, cfg, on_layer, device)
        return _calibrate_entry(work, ck, ckpt_path, cfg, seqs, samples_hash, on_layer, device)


def _rtn_entry(
    work: Path, ck, cfg: QuantConfig, on_layer: Callable[[int, int, str], None] | None, device: torch.device
) -> CalibrationResult:
    """Round-to-nearest on each linear's grid, layer by layer straight from the checkpoint (resumable like the rest;
    no layer errors: there are no calibration inputs to measure them on)."""
    from edgekit.atomic import write_json
    from edgekit.quant.grids import fit_and_quantize

    record = {"checkpoint": ck.content_hash, "samples_hash": "none", "config": cfg.key(), "sequences": 0, "tokens": 0}
    write_json(work / "calibration.json", record)
    n_layers = ck.text.num_layers
    done = finished_layers(work, n_layers)
    for i in range(n_layers):
        if i < done:
            if on_layer:
                on_layer(i, n_layers, "cached")
            continue
        prefix = f"model.layers.{i}."
        quantized = {
            prefix + n + ".weight": fit_and_quantize(
                cfg.grid_for(i, group), ck.get(prefix + n + ".weight").to(device)
            ).to_host()
            for group, names in GROUPS.items()
            for n in names
        }
        save_layer(work / f"layer_{i:04d}.safetensors", quantized, {}, {}, {})
        ck.close()
        if on_layer:
            on_layer(i, n_layers, "done")
    return result_from_files([work / f"layer_{i:04d}.safetensors" for i in range(n_layers)], record)


def _calibrate_entry(
    work: Path,
    ck,
    ckpt_path: Path,
    cfg: QuantConfig,
    seqs,
    samples_hash: str,
    on_layer: Callable[[int, int, str], None] | None,
    device: torch.device,
) -> CalibrationResult:
    """Run (or resume) the layers of one cache entry; the caller holds its lock."""
    from edgekit.atomic import write_json

    record = {
        "checkpoint": ck.content_hash,
        "samples_hash": samples_hash,
        "config": cfg.key(),
        "sequences": len(seqs),
        "tokens": int(sum(len(s.input_ids) for s in seqs)),
    }
    write_json(work / "calibration.json", record)
    hf_cfg = hf_config(ckpt_path)
    rope = rotary(hf_cfg).to(device)
    n_layers = ck.text.num_layers
    first, hidden = resume_point(work, n_layers)
    for i in range(first):
        if on_layer:
            on_layer(i, n_layers, "cached")
    if first < n_layers and hidden is None:
        hidden = layer0_inputs(ck, seqs, hf_cfg, device)
    for i in range(first, n_layers):
        layer = decoder_layer(ck, hf_cfg, i).to(device)  # one layer on the device at a time
        stats = collect_stats(layer, rope, hidden, seqs, AWQ_TOKENS, cfg.seed + i)
        prefix = f"model.layers.{i}."
        q, f, s, e, new_state = quantize_layer(layer, stats, cfg, prefix, i)
        del stats
        state = layer.state_dict()
        state.update(new_state)
        layer.load_state_dict(state)
        hidden = run_layer(layer, rope, hidden, seqs)  # the quantized layer feeds the next one
        save_layer(work / f"layer_{i:04d}.safetensors", q, f, s, e)
        save_hidden(work, i, hidden)
        del layer, q
        ck.close()  # drop the memory maps: pages read through them would stay resident
        if on_layer:
            on_layer(i, n_layers, "done")
    ck.close()
    (work / HIDDEN_FILE).unlink(missing_ok=True)  # finished: only the codes are kept
    return result_from_files([work / f"layer_{i:04d}.safetensors" for i in range(n_layers)], record)
