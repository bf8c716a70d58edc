"""Streamed, sequential, resumable calibration of the decoder (`edgekit calibrate` / `quantize`).

The full-precision model runs over calibration samples — image, question and reference answer,
teacher-forced through the chat template — one decoder layer at a time:

  layer 0 input  = embed_tokens rows + vision-tower embeddings at the image tokens (M-RoPE positions
                   from edgekit.model.rope_index, as transformers computes them)
  for each layer i: load ONLY layer i's weights from safetensors (float32), run every sequence
                   through it collecting the inputs of its linears (XᵀX for GPTQ, samples and
                   |x| statistics for AWQ/SmoothQuant), quantize the layer, then run the QUANTIZED
                   layer to produce layer i+1's inputs (errors of earlier layers are seen by later ones).

Each finished layer is written atomically to the cache (codes + params + the hidden states it
produced), keyed by (checkpoint hash, samples hash, config): a killed run resumes after the last
finished layer and ends with the same bytes as an uninterrupted one.

Peak memory ≈ one layer in float32 (4·(2·h·(q+kv) + 3·h·I) bytes)
             + hidden states of all sequences, twice (2 · 4 · h · Σ L_seq bytes)
             + Hessians in float64 (8 · (3·h² + I²) bytes: qkv, o, gate/up, down inputs)
             + (layer 0 only) the vision tower in float32.
For MiMo-Embodied (h 4096, I 11008, 128 sequences of ~600 tokens): 0.9 + 2.5 + 1.4 GB ≈ 5 GB.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from collections.abc import Mapping
from typing import Callable

import numpy as np
import torch

from edgekit.errors import EdgekitError

CONFIG_VERSION = 2  # bump when an algorithm changes: invalidates cached calibrations
METHODS = ("rtn", "gptq", "awq", "smoothquant")
# Linear groups of a decoder layer: the linears in a group read the same input.
GROUPS = {
    "qkv": ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"),
    "o": ("self_attn.o_proj",),
    "gate_up": ("mlp.gate_proj", "mlp.up_proj"),
    "down": ("mlp.down_proj",),
}
# The op before a group, into which a per-input-channel scale can be folded exactly.
FOLD_INTO = {"qkv": "input_layernorm.weight", "gate_up": "post_attention_layernorm.weight"}
AWQ_TOKENS = 4096  # rows of X kept per group for AWQ's searches


@dataclass(frozen=True)
class QuantConfig:
    method: str = "gptq"
    grid: str = "gguf:q4_k"
    samples: str = "driving,embodied"
    n_samples: int = 32
    damp: float = 0.01
    act_order: bool = False
    alpha: float = 0.5  # SmoothQuant migration strength; 0 = naive W8A8 (no smoothing)
    resize_to: tuple[int, int] = (224, 224)  # calibration images (h, w), multiples of patch*merge
    seed: int = 0
    # Mixed precision: (group key "model.layers.{i}.{group}", grid) pairs that replace `grid` for one linear
    # group (quant/mixed.py chooses them); a group's linears share a grid because AWQ shares their scale.
    grid_overrides: tuple[tuple[str, str], ...] = ()
    version: int = CONFIG_VERSION

    def key(self) -> dict:
        return asdict(self)

    def grid_for(self, layer: int, group: str) -> str:
        return dict(self.grid_overrides).get(f"model.layers.{layer}.{group}", self.grid)


@dataclass
class CalibSeq:
    input_ids: np.ndarray  # int64 [L]
    positions: np.ndarray  # int64 [3, L]
    pixel_values: np.ndarray  # float32 [patches, patch_dim]
    grid_thw: np.ndarray  # int64 [k, 3]


@dataclass
class CalibrationResult:
    quantized: Mapping  # linear name -> QuantizedWeight (codes of W·s where a smoothing scale s applies), read lazily
    folded: dict = field(default_factory=dict)  # norm weight name -> float32 tensor with 1/s folded in
    input_scales: dict = field(default_factory=dict)  # linear name -> per-tensor INT8 activation scale (W8A8)
    layer_errors: dict = field(default_factory=dict)  # linear name -> relative output error on calibration inputs
    record: dict = field(default_factory=dict)  # what was calibrated on: checkpoint and samples hashes, config


# ---- calibration data --------------------------------------------------------------------------

def calibration_sequences(ckpt_path: Path, spec: str, n: int, seed: int, resize_to: tuple[int, int],
                          split_name: str = "calib") -> tuple[list[CalibSeq], str]:
    """Teacher-forced sequences from samples; returns them and a hash of exactly what was used."""
    from edgekit.data.samples import format_answer_for_teacher_forcing, load_samples, mix, split
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.model.prompt import PromptAssets, load_tokenizer, prepare_inputs

    ck = open_checkpoint(ckpt_path)
    assets = PromptAssets.from_checkpoint(ck)
    tok = load_tokenizer(assets.tokenizer_json)
    chosen = mix(split(load_samples(spec.split(",") if "," in spec else spec), split_name), n, seed)
    if not chosen:
        raise EdgekitError(f"--samples {spec}: no '{split_name}' samples to calibrate on")
    h = hashlib.sha256()
    seqs = []
    for s in chosen:
        inputs = prepare_inputs(assets, s.question, [s.load_image()], think=False, resize_to=resize_to)
        answer = format_answer_for_teacher_forcing(s) + "<|im_end|>"
        extra = np.asarray(tok.encode(answer, add_special_tokens=False).ids, dtype=np.int64)
        start = int(inputs.position_ids.max()) + 1
        tail = np.broadcast_to(np.arange(start, start + len(extra), dtype=np.int64), (3, len(extra)))
        seqs.append(CalibSeq(np.concatenate([inputs.input_ids, extra]), np.concatenate([inputs.position_ids, tail], 1),
                             inputs.pixel_values, inputs.image_grid_thw))
        h.update(s.id.encode() + b"\0" + seqs[-1].input_ids.tobytes() + seqs[-1].pixel_values.tobytes())
    ck.close()
    return seqs, h.hexdigest()


# ---- model pieces, loaded one at a time -------------------------------------------------------------

def _hf_config(ckpt_path: Path):
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(str(ckpt_path))
    cfg.text_config._attn_implementation = "sdpa"
    cfg.vision_config._attn_implementation = "sdpa"
    return cfg


def layer0_inputs(ck, seqs: list[CalibSeq], cfg) -> list[torch.Tensor]:
    """Token embeddings with the vision tower's embeddings at image tokens: [1, L, hidden] each."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    embed = ck.get("model.embed_tokens.weight")
    vision = Qwen2_5_VisionTransformerPretrainedModel._from_config(cfg.vision_config)
    state = {n[len("visual."):]: ck.get(n).float() for n in ck.tensor_names() if n.startswith("visual.")}
    vision.load_state_dict(state, strict=True)
    vision.eval().float()
    out = []
    with torch.no_grad():
        for s in seqs:
            x = embed[torch.from_numpy(s.input_ids)].float()  # [L, hidden]
            if len(s.grid_thw):
                feats = vision(torch.from_numpy(s.pixel_values), grid_thw=torch.from_numpy(s.grid_thw)).pooler_output
                mask = torch.from_numpy(s.input_ids == ck.token_ids.image)
                x[mask] = feats.float()
            out.append(x.unsqueeze(0))
    del vision, state
    return out


def decoder_layer(ck, cfg, i: int, overrides: dict | None = None):
    """transformers' decoder layer i in float32, weights streamed from the checkpoint."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLDecoderLayer

    layer = Qwen2_5_VLDecoderLayer(cfg.text_config, layer_idx=i)
    prefix = f"model.layers.{i}."
    state = {n[len(prefix):]: ck.get(n).float() for n in ck.tensor_names() if n.startswith(prefix)}
    state.update(overrides or {})
    layer.load_state_dict(state, strict=True)
    return layer.eval().float()


def rotary(cfg):
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLRotaryEmbedding

    return Qwen2_5_VLRotaryEmbedding(config=cfg.text_config)


def run_layer(layer, rope, hidden: list[torch.Tensor], seqs: list[CalibSeq]) -> list[torch.Tensor]:
    out = []
    with torch.no_grad():
        for x, s in zip(hidden, seqs):
            pos = torch.from_numpy(s.positions).unsqueeze(1)  # [3, 1, L]
            out.append(layer(x, attention_mask=None, position_embeddings=rope(x, pos)))
    return out


# ---- statistics and quantization of one layer ---------------------------------------------------

@dataclass
class GroupStats:
    hessian: torch.Tensor  # float64 [in, in], Σ XᵀX
    absmean: torch.Tensor  # float64 [in]
    absmax: torch.Tensor  # float32 [in]
    rows: int = 0
    sample: list = field(default_factory=list)  # token rows kept for AWQ / error reports


def collect_stats(layer, rope, hidden, seqs, keep_rows: int, seed: int) -> dict[str, GroupStats]:
    stats: dict[str, GroupStats] = {}
    gen = torch.Generator().manual_seed(seed)

    def hook(group):
        def fn(module, args):
            x = args[0].reshape(-1, args[0].shape[-1]).to(torch.float64)  # [tokens, in]
            st = stats.get(group)
            if st is None:
                st = stats[group] = GroupStats(torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64),
                                               torch.zeros(x.shape[1], dtype=torch.float64),
                                               torch.zeros(x.shape[1], dtype=torch.float32))
            st.hessian += x.T @ x
            st.absmean += x.abs().sum(0)
            st.absmax = torch.maximum(st.absmax, x.abs().amax(0).float())
            st.rows += x.shape[0]
            take = min(x.shape[0], max(1, keep_rows // max(1, len(seqs))))
            st.sample.append(x[torch.randperm(x.shape[0], generator=gen)[:take]].float())
        return fn

    handles = [layer.get_submodule(names[0]).register_forward_pre_hook(hook(g)) for g, names in GROUPS.items()]
    run_layer(layer, rope, hidden, seqs)
    for h in handles:
        h.remove()
    for st in stats.values():
        st.absmean /= max(1, st.rows)
    return stats


def quantize_layer(layer, stats: dict[str, GroupStats], cfg: QuantConfig, prefix: str, index: int = 0):
    """Quantize every linear of one layer; returns (quantized, folded norms, input scales, errors, new state)."""
    from edgekit.quant.awq import awq_quantize
    from edgekit.quant.fidelity import relative_error
    from edgekit.quant.grids import dequantize_weight, fit_and_quantize
    from edgekit.quant.gptq import gptq_quantize
    from edgekit.quant.smoothquant import w8a8_quantize

    quantized, folded, input_scales, errors, new_state = {}, {}, {}, {}, {}
    for group, names in GROUPS.items():
        st = stats[group]
        Ws = [layer.get_submodule(n).weight.detach().float() for n in names]
        X = torch.cat(st.sample)  # [rows, in]
        grid = cfg.grid_for(index, group)
        scale = None
        if cfg.method == "gptq":
            qws = [gptq_quantize(W, st.hessian, grid, damp=cfg.damp, act_order=cfg.act_order) for W in Ws]
        elif cfg.method == "awq":
            res = awq_quantize(Ws, X, grid, n_grid=10 if group in FOLD_INTO else 1)  # no fold target: s = 1
            qws, scale = res.quantized, (res.scales if group in FOLD_INTO else None)
        elif cfg.method == "smoothquant":
            res = w8a8_quantize(Ws, st.absmax, alpha=cfg.alpha if group in FOLD_INTO and cfg.alpha > 0 else None)
            qws, scale = res.weights, (res.scales if group in FOLD_INTO else None)
            for n in names:
                input_scales[prefix + n] = res.input_scale
        else:
            qws = [fit_and_quantize(grid, W) for W in Ws]
        if scale is not None:
            norm = FOLD_INTO[group]
            w_norm = layer.get_submodule(norm.rsplit(".", 1)[0]).weight.detach().float()
            folded[prefix + norm] = w_norm / scale
            new_state[norm] = folded[prefix + norm]
        for n, W, qw in zip(names, Ws, qws):
            deq = dequantize_weight(qw)
            quantized[prefix + n + ".weight"] = qw
            eff = deq / scale if scale is not None else deq  # the fake-quantized weight in the original basis
            errors[prefix + n + ".weight"] = relative_error(X @ W.T, X @ eff.T)
            new_state[n + ".weight"] = deq  # with the scale folded into the norm before it
    return quantized, folded, input_scales, errors, new_state


# ---- the resumable driver ------------------------------------------------------------------------

def _save_layer(path: Path, quantized: dict, folded: dict, input_scales: dict, errors: dict, hidden: list[torch.Tensor]) -> None:
    from safetensors.torch import save_file

    from edgekit.atomic import atomic_path

    tensors, meta = {}, {"grids": {}, "errors": errors}
    for name, qw in quantized.items():
        tensors[f"q::{name}::codes"] = qw.codes.contiguous()
        for k, v in qw.params.items():
            tensors[f"q::{name}::p::{k}"] = v.contiguous()
        meta["grids"][name] = [qw.grid, list(qw.shape)]
    for name, v in folded.items():
        tensors[f"fold::{name}"] = v.contiguous()
    for name, v in input_scales.items():
        tensors[f"ascale::{name}"] = v.reshape(1).clone()
    for k, h in enumerate(hidden):
        tensors[f"hidden::{k:06d}"] = h.contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"edgekit": json.dumps(meta, sort_keys=True)})


def _load_layer(path: Path, with_hidden: bool = True, with_codes: bool = True):
    from safetensors import safe_open

    from edgekit.quant.grids import QuantizedWeight

    with safe_open(str(path), framework="pt") as f:
        meta = json.loads(f.metadata()["edgekit"])
        keys = sorted(f.keys())
        quantized = {}
        for name, (grid, shape) in (meta["grids"].items() if with_codes else ()):
            params = {k.rsplit("::", 1)[1]: f.get_tensor(k) for k in keys if k.startswith(f"q::{name}::p::")}
            quantized[name] = QuantizedWeight(grid, tuple(shape), f.get_tensor(f"q::{name}::codes"), params)
        folded = {k[len("fold::"):]: f.get_tensor(k) for k in keys if k.startswith("fold::")}
        scales = {k[len("ascale::"):]: f.get_tensor(k)[0] for k in keys if k.startswith("ascale::")}
        hidden = [f.get_tensor(k) for k in keys if k.startswith("hidden::")] if with_hidden else []
    return quantized, folded, scales, meta["errors"], hidden


class LayerFiles(Mapping):
    """Quantized weights of every layer, read from the cache one layer file at a time (memory stays one layer)."""

    def __init__(self, files: list[Path]):
        from safetensors import safe_open

        self._where: dict[str, Path] = {}
        for f in files:
            with safe_open(str(f), framework="pt") as h:
                for name in json.loads(h.metadata()["edgekit"])["grids"]:
                    self._where[name] = f
        self._loaded: tuple[Path | None, dict] = (None, {})

    def __getitem__(self, name: str):
        f = self._where[name]
        if self._loaded[0] != f:
            self._loaded = (f, _load_layer(f)[0])
        return self._loaded[1][name]

    def __iter__(self):
        return iter(self._where)

    def __len__(self) -> int:
        return len(self._where)


def cache_key(content_hash: str, samples_hash: str, cfg: QuantConfig) -> str:
    blob = json.dumps({"checkpoint": content_hash, "samples": samples_hash, "config": cfg.key()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:24]


def calibrate(ckpt_path: str | Path, cfg: QuantConfig, cache_dir: str | Path,
              on_layer: Callable[[int, int, str], None] | None = None) -> CalibrationResult:
    """Quantize every decoder linear (lm_head excluded) by `cfg`, layer by layer; resumable."""
    from edgekit.model.checkpoint import open_checkpoint
    from edgekit.quant.grids import get_grid

    if cfg.method not in METHODS:
        raise EdgekitError(f"--method {cfg.method!r}: choose one of {', '.join(METHODS)}")
    if cfg.method == "smoothquant" and cfg.grid != "int8:channel":
        raise EdgekitError("smoothquant produces W8A8: use --precision int8 (grid int8:channel)")
    ckpt_path = Path(ckpt_path)
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
    seqs, samples_hash = calibration_sequences(ckpt_path, cfg.samples, cfg.n_samples, cfg.seed, cfg.resize_to)
    key = cache_key(ck.content_hash, samples_hash, cfg)
    work = Path(cache_dir) / key
    work.mkdir(parents=True, exist_ok=True)
    from edgekit.atomic import write_json

    record = {"checkpoint": ck.content_hash, "samples_hash": samples_hash, "config": cfg.key(),
              "sequences": len(seqs), "tokens": int(sum(len(s.input_ids) for s in seqs))}
    write_json(work / "calibration.json", record)
    hf_cfg = _hf_config(ckpt_path)
    rope = rotary(hf_cfg)
    n_layers = ck.text.num_layers
    done = [i for i in range(n_layers) if (work / f"layer_{i:04d}.safetensors").is_file()]
    first = 0
    while first in done:
        first += 1
    hidden = None
    result = CalibrationResult({}, record=record)
    for i in range(first):  # finished layers: the last one's hidden states feed the next
        if i == first - 1:
            hidden = _load_layer(work / f"layer_{i:04d}.safetensors")[4]
        if on_layer:
            on_layer(i, n_layers, "cached")
    if hidden is None:
        hidden = layer0_inputs(ck, seqs, hf_cfg)
    for i in range(first, n_layers):
        layer = decoder_layer(ck, hf_cfg, i)
        stats = collect_stats(layer, rope, hidden, seqs, AWQ_TOKENS, cfg.seed + i)
        prefix = f"model.layers.{i}."
        q, f, s, e, new_state = quantize_layer(layer, stats, cfg, prefix, i)
        del stats
        state = layer.state_dict()
        state.update(new_state)
        layer.load_state_dict(state)
        hidden = run_layer(layer, rope, hidden, seqs)  # the quantized layer feeds the next one
        _save_layer(work / f"layer_{i:04d}.safetensors", q, f, s, e, hidden)
        del layer, q
        ck.close()  # drop the memory maps: pages read through them would stay resident
        if on_layer:
            on_layer(i, n_layers, "done")
    ck.close()
    files = [work / f"layer_{i:04d}.safetensors" for i in range(n_layers)]
    for f in files:  # small per-layer extras, loaded whole; the codes stay on disk until asked for
        _, folded, scales, errors, _ = _load_layer(f, with_hidden=False, with_codes=False)
        result.folded.update(folded), result.input_scales.update(scales), result.layer_errors.update(errors)
    result.quantized = LayerFiles(files)
    return result
