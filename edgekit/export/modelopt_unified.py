"""Write a calibrated decoder as an NVIDIA ModelOpt unified Hugging Face checkpoint.

This is the input of TensorRT Edge-LLM (`tensorrt-edgellm-export`, the TensorRT path to Orin and
Thor) and of TensorRT-LLM's PyTorch backend. The codes are edgekit's own (RTN, GPTQ or AWQ on the
`nvidia:w4a16` or `nvidia:nvfp4` format, SmoothQuant on `int8:channel`; edgekit.quant.formats names the
quant_algo): they are packed as they are, never re-rounded.
Layout facts are in edgekit/quant/modelopt_layout.py.

Tensors stream shard by shard: memory holds one shard (<= `shard_bytes`) plus one layer's codes.
Names keep the source checkpoint's Hub layout (`model.layers.*`, `visual.*`, `lm_head`), which
transformers and Edge-LLM both map. Beside the weights, `edgekit_quantizer.json` records a sha256 of
every linear's codes and scales as the quantizer produced them, so a reader can prove the packing
round-trips (edgekit verify).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from edgekit.errors import EdgekitError
from edgekit.quant import modelopt_layout as L
from edgekit.quant.formats import parse as parse_format

DIGEST_FILE = "edgekit_quantizer.json"
SHARD_BYTES = 2 << 30
EXTRA_FILES = (
    "generation_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "chat_template.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
)
_DTYPE_BYTES = {"F32": 4, "F16": 2, "BF16": 2, "I8": 1, "U8": 1, "F64": 8, "I64": 8, "I32": 4, "I16": 2, "F8_E4M3": 1}


@dataclass(frozen=True)
class PlannedTensor:
    name: str  # name in the output
    source: str  # source tensor it derives from
    role: str  # copy | folded | input_scale | the quantized linear's tensor suffix (weight, weight_scale, ...)
    nbytes: int


def plan_tensors(ck, calibrated, layout: L.Layout, group: int) -> list[PlannedTensor]:
    """Every output tensor with its size, in a fixed order (names sorted), without reading data."""
    out = []
    for name in ck.tensor_names():
        shape, nbytes = ck.shape(name), _nbytes(ck, name)
        if name in calibrated.quantized:
            rows, cols = shape
            base = name[: -len("weight")]
            out += [
                PlannedTensor(base + suffix, name, suffix, size)
                for suffix, size in layout.nbytes(rows, cols, group).items()
            ]
            if layout.activation_scale:
                out.append(PlannedTensor(base + "input_scale", name, "input_scale", 4))
        elif name in calibrated.folded:
            out.append(PlannedTensor(name, name, "folded", nbytes // _DTYPE_BYTES[ck.dtype(name)] * 4))
        else:
            out.append(PlannedTensor(name, name, "copy", nbytes))
    return sorted(out, key=lambda p: p.name)


def _nbytes(ck, name: str) -> int:
    n = 1
    for d in ck.shape(name):
        n *= d
    return n * _DTYPE_BYTES.get(ck.dtype(name), 4)


def shard(plan: list[PlannedTensor], shard_bytes: int) -> list[list[PlannedTensor]]:
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for p in plan:
        if shards[-1] and size + p.nbytes > shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(p)
        size += p.nbytes
    return shards


def shard_names(n: int) -> list[str]:
    return ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]


def _checked(qw, layout: L.Layout, grid: str):
    """The quantizer's output for one linear, refused if it is not on the checkpoint's grid and code range."""
    if qw.grid != grid:  # one uniform algorithm per checkpoint (MIXED_PRECISION is not written yet)
        raise EdgekitError(f"linears calibrated on two grids ({grid}, {qw.grid}): a unified checkpoint holds one")
    lo, hi = layout.codes
    if int(qw.codes.min()) < lo or int(qw.codes.max()) > hi:
        raise EdgekitError(
            f"codes outside [{lo}, {hi}] for {layout.algo}: the quantizer's grid {qw.grid} does not match"
        )
    return qw


def digest(codes: torch.Tensor, params: dict[str, torch.Tensor]) -> dict:
    """sha256 of a linear's codes (int8) and of each stored param as float32 ("scale_sha256", ...)."""
    out = {"codes_sha256": hashlib.sha256(codes.to(torch.int8).contiguous().numpy().tobytes()).hexdigest()}
    for key in sorted(params):
        value = params[key].to(torch.float32).reshape(codes.shape[0], -1) if params[key].dim() else params[key]
        out[f"{key}_sha256"] = hashlib.sha256(value.to(torch.float32).contiguous().numpy().tobytes()).hexdigest()
    return out


def _tensors_of(
    ck, calibrated, layout: L.Layout, grid: str, shard_plan: list[PlannedTensor], digests: dict
) -> Iterator[tuple[str, torch.Tensor]]:
    cache: dict[str, dict[str, torch.Tensor]] = {}
    for p in shard_plan:
        if p.role == "copy":
            yield p.name, ck.get(p.source).contiguous()
        elif p.role == "folded":
            # float32: the exact fold the calibration's next layer saw (a few KB per layer)
            yield p.name, calibrated.folded[p.source].to(torch.float32).contiguous()
        elif p.role == "input_scale":  # a 0-d tensor, as ModelOpt stores per-tensor scales
            yield p.name, torch.tensor(float(calibrated.input_scales[_module(p.source)]), dtype=torch.float32)
        else:
            if p.source not in cache:
                cache.clear()
                qw = _checked(calibrated.quantized[p.source], layout, grid)
                cache[p.source] = layout.pack(qw.codes, qw.params)
                digests[p.source] = digest(qw.codes, qw.params)  # as the quantizer produced them
            yield p.name, cache[p.source][p.role]


def write_unified_checkpoint(
    ckpt_path: str | Path,
    out_dir: str | Path,
    calibrated,
    *,
    shard_bytes: int = SHARD_BYTES,
    on_shard: Callable[[int, int], None] | None = None,
) -> dict:
    """Write `out_dir` (config.json with quantization_config, hf_quant_config.json, safetensors shards,
    index, tokenizer files, edgekit_quantizer.json). Returns a summary for the manifest."""
    from safetensors.torch import save_file

    from edgekit import __version__
    from edgekit.atomic import atomic_path, plain_mode, write_bytes, write_json
    from edgekit.model.checkpoint import open_checkpoint

    ck = open_checkpoint(ckpt_path)
    if not len(calibrated.quantized):
        raise EdgekitError("calibration produced no quantized linears: nothing to write as a unified checkpoint")
    grid = calibrated.quantized[sorted(calibrated.quantized)[0]].grid
    fmt = parse_format(grid)
    layout, group = fmt.unified_layout(bool(calibrated.input_scales)), fmt.group_size
    algo = layout.algo
    names = set(calibrated.quantized)
    missing = [n for n in names if n not in ck.tensors]
    if missing:
        raise EdgekitError(f"calibration names {missing[:3]} are not in {ck.path}: calibrated on another checkpoint?")
    if layout.activation_scale and not all(_module(n) in calibrated.input_scales for n in names):
        raise EdgekitError(
            f"{algo} needs a per-tensor input scale for every linear: calibrate them (W8A8: --method smoothquant)"
        )
    out_dir = Path(out_dir)
    exclude = sorted(
        {
            _module_group(n)
            for n in ck.tensor_names()
            if n.endswith(".weight") and len(ck.shape(n)) == 2 and "embed_tokens" not in n and n not in names
        }
    )
    quant_cfg = L.hf_quant_config(layout, group, exclude, __version__)

    plan = plan_tensors(ck, calibrated, layout, group)
    shards = shard(plan, shard_bytes)
    files = shard_names(len(shards))
    digests: dict[str, dict] = {}
    weight_map = {}
    for i, (fname, part) in enumerate(zip(files, shards)):
        tensors = dict(_tensors_of(ck, calibrated, layout, grid, part, digests))
        with atomic_path(out_dir / fname) as tmp:
            save_file(tensors, str(tmp), metadata={"format": "pt"})
            plain_mode(tmp)  # safetensors writes the file anew, 0600
        weight_map.update({t: fname for t in tensors})
        del tensors
        ck.close()  # pages read through the memory maps would otherwise stay resident
        if on_shard:
            on_shard(i + 1, len(shards))
    if len(files) > 1:
        write_json(
            out_dir / "model.safetensors.index.json",
            {"metadata": {"total_size": sum(p.nbytes for p in plan)}, "weight_map": dict(sorted(weight_map.items()))},
        )

    config = dict(ck.config)
    config["quantization_config"] = L.config_quantization_block(quant_cfg)
    write_json(out_dir / "config.json", config)
    write_json(out_dir / "hf_quant_config.json", quant_cfg)
    for name in EXTRA_FILES:
        if (ck.path / name).is_file():
            write_bytes(out_dir / name, (ck.path / name).read_bytes())
    write_json(
        out_dir / DIGEST_FILE,
        {"quant_algo": algo, "group_size": group, "grid": grid, "linears": dict(sorted(digests.items()))},
    )
    ck.close()
    return {
        "quant_algo": algo,
        "group_size": group,
        "quantized_linears": len(names),
        "shards": len(files),
        "bytes": sum(p.nbytes for p in plan),
    }


def _module(weight_name: str) -> str:
    return weight_name[: -len(".weight")]


def _module_group(weight_name: str) -> str:
    """Excluded module pattern, ModelOpt-style: the vision tower as one wildcard, others by module name."""
    if weight_name.startswith("visual."):
        return "visual*"
    return _module(weight_name)
