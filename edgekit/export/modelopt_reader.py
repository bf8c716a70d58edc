"""Read a ModelOpt unified checkpoint back: unpack, dequantize, and verify it.

`verify_unified_checkpoint` is what `edgekit verify` runs on a bundle's decoder/unified/ part:
the quantization config is one edgekit and Edge-LLM understand; every decoder linear is quantized
with the dtype and shape the layout requires (shapes from config.json); scales are finite and
positive; every code is inside the symmetric range; the vision tower and lm_head stay float; and the
unpacked codes and scales hash to what the quantizer produced (edgekit_quantizer.json).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import torch

from edgekit.errors import EdgekitError
from edgekit.json_files import read_json_object
from edgekit.quant import modelopt_layout as L
from edgekit.quant.formats import parse, unified_layouts
from edgekit.export.modelopt_unified import DIGEST_FILE, digest

LINEARS = (
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
)


@dataclass
class UnifiedCheckpoint:
    path: Path
    config: dict
    algo: str
    group: int
    where: dict[str, Path]  # tensor name -> shard file

    def get(self, name: str) -> torch.Tensor:
        from safetensors import safe_open

        with safe_open(str(self.where[name]), framework="pt") as f:
            return f.get_tensor(name)

    def linear_names(self) -> list[str]:
        """Weight names of every quantized linear (those with a weight_scale)."""
        return sorted(n[: -len("_scale")] for n in self.where if n.endswith(".weight_scale"))

    @property
    def layout(self) -> L.Layout:
        return unified_layouts()[self.algo]

    def unpack(self, weight_name: str) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(codes [out, in] (int8; FP8's bytes int16), the grid's params as stored: {"scale": ...} and NVFP4's "global")
        of one linear."""
        base = weight_name[: -len("weight")]
        try:
            return self.layout.unpack(lambda suffix: self.get(base + suffix))
        except (ValueError, KeyError, RuntimeError) as e:  # a tensor of the wrong dtype or shape
            raise EdgekitError(f"{weight_name}: {self.algo}: {e}") from None

    def dequantized(self, weight_name: str) -> torch.Tensor:
        """The float32 weight this linear computes with (pre_quant_scale, if stored, folded back in)."""
        codes, params = self.unpack(weight_name)
        w = self.layout.dequantize(codes, params, self.group)
        pqs = weight_name[: -len("weight")] + "pre_quant_scale"
        if pqs in self.where:  # y = (x * pqs) @ W^T  ==  x @ (W * pqs)^T
            w = w * self.get(pqs).to(torch.float32).reshape(1, -1)
        return w

    def float_state(self) -> Iterator[tuple[str, torch.Tensor]]:
        """Every tensor as a float32 Hugging Face state dict entry (quantized linears dequantized); streams."""
        skip_suffix = (".weight_scale", ".weight_scale_2", ".input_scale", ".pre_quant_scale")
        quantized = set(self.linear_names())
        for name in sorted(self.where):
            if name.endswith(skip_suffix):
                continue
            yield name, (self.dequantized(name) if name in quantized else self.get(name).to(torch.float32))


def _index_files(path: Path, index: Path) -> list[Path]:
    """The shards an index names: safetensors files inside the checkpoint folder only."""
    weight_map = read_json_object(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise EdgekitError(f"{index}: no 'weight_map'")
    files = set()
    for rel in weight_map.values():
        if (
            not isinstance(rel, str)
            or not rel.endswith(".safetensors")
            or "/" in rel
            or "\\" in rel
            or rel.startswith(".")
        ):
            raise EdgekitError(f"{index}: weight_map names {rel!r}; shards must be .safetensors files in the folder")
        files.add(path / rel)
    return sorted(files)


def open_unified(path: str | Path) -> UnifiedCheckpoint:
    from safetensors import safe_open

    path = Path(path)
    for need in ("config.json", "hf_quant_config.json"):
        if not (path / need).is_file():
            raise EdgekitError(f"{path}: no {need}; not a ModelOpt unified checkpoint")
    config = read_json_object(path / "config.json")
    hq = read_json_object(path / "hf_quant_config.json").get("quantization", {})
    if not isinstance(hq, dict):
        raise EdgekitError(f"{path / 'hf_quant_config.json'}: 'quantization' must be an object")
    algo, layouts = hq.get("quant_algo"), unified_layouts()
    if algo not in layouts:
        raise EdgekitError(f"{path}: quant_algo {algo!r} is not one edgekit reads ({', '.join(layouts)})")
    qc = config.get("quantization_config") or {}
    if qc.get("quant_method") != "modelopt" or qc.get("quant_algo") != algo:
        raise EdgekitError(f"{path}: config.json quantization_config disagrees with hf_quant_config.json")
    if algo == L.W4A16 and (
        hq.get("has_zero_point") or hq.get("group_size") not in parse("nvidia:w4a16").group_variants
    ):
        raise EdgekitError(f"{path}: W4A16_AWQ must be symmetric with group 32/64/128 (Edge-LLM's INT4 kernel)")
    fixed = layouts[algo].fixed_group
    if fixed and hq.get("group_size", fixed) != fixed:
        raise EdgekitError(f"{path}: {algo} has {fixed}-column groups, not {hq.get('group_size')}")
    index = path / "model.safetensors.index.json"
    files = _index_files(path, index) if index.is_file() else [path / "model.safetensors"]
    where = {}
    for f in files:
        if not f.is_file():
            raise EdgekitError(f"{f}: shard missing")
        with safe_open(str(f), framework="pt") as h:
            where.update({k: f for k in h.keys()})
    return UnifiedCheckpoint(path, config, algo, fixed or int(hq.get("group_size") or 0), where)


def verify_unified_checkpoint(path: str | Path, expected_digest: dict | None = None) -> str:
    """Raise EdgekitError on the first problem; return a one-line summary of what was checked."""
    from edgekit.model.config import read_text_dims

    uc = open_unified(path)
    text = read_text_dims(uc.config, str(Path(path) / "config.json"))
    q, kv = text.heads * text.head_dim, text.kv_heads * text.head_dim
    shapes = {
        "self_attn.q_proj": (q, text.hidden),
        "self_attn.k_proj": (kv, text.hidden),
        "self_attn.v_proj": (kv, text.hidden),
        "self_attn.o_proj": (text.hidden, q),
        "mlp.gate_proj": (text.intermediate, text.hidden),
        "mlp.up_proj": (text.intermediate, text.hidden),
        "mlp.down_proj": (text.hidden, text.intermediate),
    }
    if expected_digest is None and (uc.path / DIGEST_FILE).is_file():
        expected_digest = read_json_object(uc.path / DIGEST_FILE)
    recorded = (expected_digest or {}).get("linears", {})
    layout = uc.layout
    lo, hi = layout.codes
    expected_names = {f"model.layers.{i}.{n}.weight" for i in range(text.num_layers) for n in LINEARS}
    found = set(uc.linear_names())
    if found != expected_names:
        extra, missing = sorted(found - expected_names), sorted(expected_names - found)
        raise EdgekitError(
            f"{path}: quantized linears differ from the decoder's: missing {missing[:3]}, "
            f"unexpected {extra[:3]} (an exporter would silently keep them in FP16)"
        )
    for name in sorted(found):
        out, inp = shapes[name.split(".", 3)[3].rsplit(".", 1)[0]]
        base = name[: -len("weight")]
        for suffix, (shape, dtype) in layout.spec(out, inp, uc.group).items():
            t = uc.get(base + suffix) if base + suffix in uc.where else None
            if t is None or (tuple(t.shape), t.dtype) != (shape, dtype):
                got = "missing" if t is None else f"{tuple(t.shape)} {t.dtype}"
                raise EdgekitError(f"{base + suffix}: {got}; {uc.algo} needs {shape} {dtype}")
        codes, params = uc.unpack(name)
        for key, value in params.items():
            v = value.to(torch.float32)
            zero_ok = key == "scale" and layout.zero_block_scales
            if not torch.isfinite(v).all() or (v < 0).any() or (not zero_ok and (v == 0).any()):
                raise EdgekitError(f"{name}: stored {key} has zero, negative or non-finite values")
        if int(codes.min()) < lo or int(codes.max()) > hi:
            raise EdgekitError(f"{name}: codes outside [{lo}, {hi}]")
        if layout.invalid_codes and torch.isin(codes, torch.tensor(layout.invalid_codes, dtype=codes.dtype)).any():
            raise EdgekitError(f"{name}: codes that stand for no number ({uc.algo}: NaN)")
        if layout.activation_scale:
            iscale = uc.where.get(base + "input_scale")
            if iscale is None or not float(uc.get(base + "input_scale")) > 0:
                raise EdgekitError(f"{name}: {uc.algo} linear without a positive input_scale")
        if recorded:
            if name not in recorded:
                raise EdgekitError(f"{name}: not in {DIGEST_FILE}")
            if digest(codes, params) != recorded[name]:
                raise EdgekitError(f"{name}: unpacked codes/scales differ from the quantizer's output")
    for name in uc.where:
        if (name.startswith("visual.") or name.startswith("lm_head.")) and name.endswith("_scale"):
            raise EdgekitError(f"{name}: the vision tower and lm_head must stay float")
    return (
        f"{uc.algo}, {len(found)} linears, shapes/dtypes ok, codes in [{lo}, {hi}], "
        f"{'codes+scales match the quantizer' if recorded else 'no quantizer digest'}"
    )
