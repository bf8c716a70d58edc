"""Model dimensions read from a Qwen2.5-VL-architecture config.json.

Two layouts exist in the wild and both are read:
- the Hub layout of Qwen2.5-VL / MiMo-Embodied checkpoints: text fields at the top level,
  `rope_scaling: {"type": "mrope", "mrope_section": [...]}`, `vision_config` nested;
- the transformers 5 layout: text fields under `text_config`, rope under `rope_parameters`.
Nothing here knows a particular model size: every number comes from the file.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from edgekit.errors import EdgekitError

SUPPORTED_ARCHITECTURES = ("Qwen2_5_VLForConditionalGeneration",)
SUPPORTED_MODEL_TYPES = ("qwen2_5_vl",)


@dataclass(frozen=True)
class TextDims:
    num_layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    rope_theta: float
    mrope_section: tuple[int, int, int]
    rms_eps: float
    tie_embeddings: bool
    max_position: int
    attention_bias: bool = True  # Qwen2 q/k/v carry biases, o_proj does not

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class VisionDims:
    depth: int
    hidden: int
    heads: int
    head_dim: int
    intermediate: int
    patch: int
    temporal_patch: int
    merge: int
    window_size: int
    fullatt_blocks: tuple[int, ...]
    out_hidden: int
    in_chans: int

    @property
    def patch_dim(self) -> int:
        """Length of one flattened patch row as the processor makes it (3*2*14*14 = 1176 for Qwen2.5-VL)."""
        return self.in_chans * self.temporal_patch * self.patch * self.patch

    def as_dict(self) -> dict:
        d = asdict(self)
        d["patch_dim"] = self.patch_dim
        return d


@dataclass(frozen=True)
class TokenIds:
    image: int
    video: int
    vision_start: int
    vision_end: int
    bos: int | None
    eos: int | None


def _need(cfg: dict, key: str, where: str):
    if key not in cfg:
        raise EdgekitError(f"{where}: missing field '{key}'")
    return cfg[key]


# Upper bounds, checked before anything is sized from them (a config claiming 10^9 layers is refused, not allocated):
# far above any model of this architecture (MiMo-Embodied-7B: 36 layers, hidden 4096, vocab 151,680, 128k positions).
MAX_LAYERS = 1024
MAX_COUNT = 1 << 20  # widths, heads, patch sizes
MAX_VOCAB = MAX_POSITIONS = 1 << 24
LIMITS = {
    "num_hidden_layers": MAX_LAYERS,
    "depth": MAX_LAYERS,
    "vocab_size": MAX_VOCAB,
    "max_position_embeddings": MAX_POSITIONS,
    "image_token_id": MAX_VOCAB,
    "video_token_id": MAX_VOCAB,
    "vision_start_token_id": MAX_VOCAB,
    "vision_end_token_id": MAX_VOCAB,
}


def _count(value, key: str, where: str, *, minimum: int = 1) -> int:
    """A size field: a whole number from minimum to its limit (JSON booleans and fractions are refused, not
    truncated; a number beyond any real model is refused before anything is sized from it)."""
    maximum = LIMITS.get(key, MAX_COUNT)
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)
        or int(value) != value
        or value < minimum
    ):
        raise EdgekitError(f"{where}: field '{key}' is {value!r}; it must be a whole number >= {minimum}")
    if value > maximum:
        raise EdgekitError(
            f"{where}: field '{key}' is {value!r}; edgekit reads at most {maximum:,} (a corrupt or hostile config?)"
        )
    return int(value)


def _need_count(cfg: dict, key: str, where: str, *, minimum: int = 1) -> int:
    return _count(_need(cfg, key, where), key, where, minimum=minimum)


def _count_or(cfg: dict, key: str, default, where: str, *, minimum: int = 1) -> int:
    value = cfg.get(key)
    return _count(default if value is None else value, key, where, minimum=minimum)


def _number(value, key: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not value > 0:
        raise EdgekitError(f"{where}: field '{key}' is {value!r}; it must be a positive number")
    return float(value)


def check_config_object(cfg, where: str) -> dict:
    if not isinstance(cfg, dict):
        raise EdgekitError(f"{where}: must hold a JSON object, not {type(cfg).__name__}")
    return cfg


def check_architecture(cfg: dict, where: str) -> None:
    check_config_object(cfg, where)
    archs = cfg.get("architectures") or []
    if not isinstance(archs, list):
        archs = [str(archs)]
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES and not set(archs) & set(SUPPORTED_ARCHITECTURES):
        found = ", ".join(archs) or f"model_type={model_type!r}"
        raise EdgekitError(
            f"{where}: unsupported architecture {found}; edgekit reads Qwen2.5-VL-architecture checkpoints "
            f"({', '.join(SUPPORTED_ARCHITECTURES)}, model_type {SUPPORTED_MODEL_TYPES[0]}) such as MiMo-Embodied"
        )


def text_fields(cfg: dict) -> dict:
    """The text decoder's fields, whichever layout the file uses."""
    nested = cfg.get("text_config")
    if isinstance(nested, dict) and "hidden_size" in nested:
        merged = dict(nested)
        for key in ("tie_word_embeddings", "vocab_size"):
            merged.setdefault(key, cfg.get(key))
        return merged
    return cfg


def read_text_dims(cfg: dict, where: str = "config.json") -> TextDims:
    t = text_fields(cfg)
    hidden = _need_count(t, "hidden_size", where)
    heads = _need_count(t, "num_attention_heads", where)
    kv_heads = _count_or(t, "num_key_value_heads", heads, where)
    head_dim = _count_or(t, "head_dim", hidden // heads, where)
    rope = t.get("rope_scaling") or t.get("rope_parameters") or {}
    section = rope.get("mrope_section") if isinstance(rope, dict) else None
    if section is None:
        raise EdgekitError(f"{where}: no M-RoPE 'mrope_section' under rope_scaling/rope_parameters")
    if (
        not isinstance(section, list)
        or len(section) != 3
        or not all(isinstance(s, int) and s >= 0 for s in section)
        or sum(section) * 2 != head_dim
    ):
        raise EdgekitError(
            f"{where}: mrope_section {section} must have 3 parts summing to head_dim/2 = {head_dim // 2}"
        )
    theta = t.get("rope_theta", rope.get("rope_theta"))
    if theta is None:
        raise EdgekitError(f"{where}: missing field 'rope_theta'")
    if heads % kv_heads:
        raise EdgekitError(f"{where}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
    return TextDims(
        num_layers=_need_count(t, "num_hidden_layers", where),
        hidden=hidden,
        heads=heads,
        kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate=_need_count(t, "intermediate_size", where),
        vocab=_need_count(t, "vocab_size", where),
        rope_theta=_number(theta, "rope_theta", where),
        mrope_section=tuple(int(s) for s in section),
        rms_eps=_number(t.get("rms_norm_eps", 1e-6), "rms_norm_eps", where),
        tie_embeddings=bool(t.get("tie_word_embeddings", cfg.get("tie_word_embeddings", False))),
        max_position=_count_or(t, "max_position_embeddings", 32768, where),
    )


def read_vision_dims(cfg: dict, where: str = "config.json") -> VisionDims:
    v = cfg.get("vision_config")
    if not isinstance(v, dict):
        raise EdgekitError(f"{where}: missing 'vision_config'; this is not a vision-language checkpoint")
    where = f"{where} vision_config"
    hidden = _need_count(v, "hidden_size", where)
    heads = _need_count(v, "num_heads", where)
    depth = _need_count(v, "depth", where)
    if hidden % heads:
        raise EdgekitError(f"{where}: hidden_size {hidden} is not a multiple of num_heads {heads}")
    raw_full = v.get("fullatt_block_indexes", ())
    if not isinstance(raw_full, (list, tuple)) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in raw_full
    ):
        raise EdgekitError(f"{where}: fullatt_block_indexes must be a list of block numbers, not {raw_full!r}")
    full = tuple(raw_full)
    if any(i < 0 or i >= depth for i in full):
        raise EdgekitError(f"{where}: fullatt_block_indexes {list(full)} outside 0..{depth - 1}")
    return VisionDims(
        depth=depth,
        hidden=hidden,
        heads=heads,
        head_dim=hidden // heads,
        intermediate=_need_count(v, "intermediate_size", where),
        patch=_count_or(v, "patch_size", v.get("spatial_patch_size", 14), where),
        temporal_patch=_count_or(v, "temporal_patch_size", 2, where),
        merge=_count_or(v, "spatial_merge_size", 2, where),
        window_size=_count_or(v, "window_size", 112, where),
        fullatt_blocks=full,
        out_hidden=_need_count(v, "out_hidden_size", where),
        in_chans=_count_or(v, "in_chans", v.get("in_channels", 3), where),
    )


def read_token_ids(cfg: dict, where: str = "config.json") -> TokenIds:
    t = text_fields(cfg)

    def first(x):
        return x[0] if isinstance(x, list) and x else x

    return TokenIds(
        image=_need_count(cfg, "image_token_id", where, minimum=0),
        video=_count_or(cfg, "video_token_id", -1, where, minimum=-1),
        vision_start=_need_count(cfg, "vision_start_token_id", where, minimum=0),
        vision_end=_count_or(cfg, "vision_end_token_id", -1, where, minimum=-1),
        bos=first(cfg.get("bos_token_id", t.get("bos_token_id"))),
        eos=first(cfg.get("eos_token_id", t.get("eos_token_id"))),
    )
