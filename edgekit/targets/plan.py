"""The pre-build plan: will this model fit the target, and how fast can it possibly run?

Pure arithmetic over config.json dims and a target's data sheet numbers (no weights needed):
- memory: weights per part at the build's precision, KV cache at the context length, vision
  activations for K cameras, the target's reserved runtime/OS memory;
- roofline bounds: decode tokens/s <= bandwidth / bytes read per decoded token (every decoder
  linear weight, lm_head and the KV cache of the tokens so far are read once per token at batch 1;
  the headline bound is right after the prompt, a second one at the full context); vision encoder
  time >= FLOPs / peak tensor throughput; prefill time >= max(FLOPs / peak, weight bytes / bandwidth), the decoder's
  peak in the arithmetic its format's GEMMs run in (INT8 for W8A8, FP8, FP4 for NVFP4 W4A4; FP16 otherwise).

Formats are the build's (edgekit.quant.precisions.decoder_format: the precision on the backend, at the
build's group size or GGUF type), and bytes are what the bundle's files hold (edgekit.targets.sizes);
the vision tower is INT8 for int8/w8a8 builds and FP16 (FP32 on CPUs) otherwise, unless the build says.
Visual tokens per image come from the processor's own resize (min/max pixels included).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from math import prod
from pathlib import Path

from edgekit.errors import EdgekitError
from edgekit.model.config import TextDims, VisionDims
from edgekit.targets.sizes import part_of, weight_bytes_by_part
from edgekit.quant.formats import Format
from edgekit.quant.precisions import BUILD_PRECISIONS, decoder_format, vision_format
from edgekit.targets import Target

GB = 1e9


def vision_precision_for(precision: str, family: str = "") -> str:
    """int8 builds get an INT8 QDQ tower; otherwise FP16 on GPUs and FP32 on CPUs (ORT's CPU kernels are FP32)."""
    if precision in ("int8", "w8a8"):
        return "int8"
    return "fp32" if precision == "fp32" or family == "cpu" else "fp16"


def weight_bytes(
    shapes: dict[str, tuple[int, ...]], precision: str, decoder_fmt: Format | None, vision_precision: str
) -> dict[str, float]:
    """Bytes per part on the device: the decoder in its format, the vision tower at its precision."""
    dense = 4 if precision == "fp32" else 2
    out = weight_bytes_by_part(shapes, decoder_fmt, vision_format(vision_precision), dense)
    if vision_precision == "fp32" and dense == 2:  # an FP32 tower next to a 16-bit decoder (CPU targets)
        out["vision"] = weight_bytes_by_part({n: s for n, s in shapes.items() if part_of(n) == "vision"}, dense=4)[
            "vision"
        ]
    out.pop("total")
    return {k: float(v) for k, v in out.items()}


def default_processor(v: VisionDims):
    """The processor a checkpoint without preprocessor_config.json gets (Qwen2.5-VL's defaults, the tower's patch)."""
    from edgekit.model.processor import ImageProcessorConfig

    return ImageProcessorConfig(patch_size=v.patch, merge_size=v.merge, temporal_patch_size=v.temporal_patch)


def vision_tokens(v: VisionDims, resolution: tuple[int, int], processor=None) -> tuple[int, int]:
    """(patches, merged tokens) for one image at resolution (width, height), resized as the processor resizes it."""
    from edgekit.model.processor import smart_resize

    cfg = processor or default_processor(v)
    w, h = resolution
    gh, gw = smart_resize(h, w, cfg.factor, cfg.min_pixels, cfg.max_pixels)
    patches = (gh // v.patch) * (gw // v.patch)
    return patches, patches // (v.merge * v.merge)


def vision_flops(v: VisionDims, patches: int) -> float:
    """Multiply-adds x2 of one image through the tower (window blocks attend within windows)."""
    h, inter = v.hidden, v.intermediate
    window_tokens = min(patches, (v.window_size // v.patch) ** 2)
    flops = 2.0 * patches * (v.in_chans * v.temporal_patch * v.patch * v.patch) * h  # patch embed
    for i in range(v.depth):
        span = patches if i in v.fullatt_blocks else window_tokens
        flops += 2.0 * patches * (4 * h * h + 3 * h * inter)  # qkv, proj, gated MLP
        flops += 4.0 * patches * span * h  # QK^T and PV
    m = h * v.merge * v.merge
    flops += 2.0 * (patches // (v.merge * v.merge)) * (m * m + m * v.out_hidden)
    return flops


@dataclass
class Plan:
    target: str
    precision: str
    vision_precision: str
    context: int
    images: int
    resolution: tuple[int, int]
    visual_tokens_per_image: int
    weights_gb: dict[str, float]
    kv_cache_gb: float
    vision_activations_gb: float
    reserved_gb: float
    total_gb: float
    memory_gb: float
    fits: bool
    prompt_tokens: int
    decode_bytes_per_token_gb: float  # weights + KV of the prompt
    decode_tokens_per_s_bound: float
    decode_tokens_per_s_bound_full_context: float
    vision_ms_bound: float
    prefill_ms_bound: float
    notes: list[str]

    def as_dict(self) -> dict:
        return asdict(self)


def make_plan(
    text: TextDims,
    vision: VisionDims,
    shapes: dict[str, tuple[int, ...]],
    target: Target,
    precision: str,
    context: int = 4096,
    images: int = 1,
    resolution: tuple[int, int] | None = None,
    *,
    backend: str | None = None,
    group_size: int = 128,
    gguf_type: str | None = None,
    vision_precision: str | None = None,
    processor=None,
) -> Plan:
    """The plan of a build: `backend`, `group_size`, `gguf_type` and `vision_precision` as the build has them
    (None: the target's first backend, the precision's vision default); `processor` the checkpoint's
    preprocessor config (None: Qwen2.5-VL's defaults)."""
    if precision not in BUILD_PRECISIONS:
        raise EdgekitError(f"unknown precision '{precision}'; choose one of {', '.join(BUILD_PRECISIONS)}")
    if precision not in target.precisions and not (precision == "fp32" and target.family == "cpu"):
        raise EdgekitError(
            f"target {target.name} does not support precision {precision}; it supports {', '.join(target.precisions)}"
        )
    resolution = tuple(resolution or target.camera_resolution)
    backend = backend or target.default_backend(precision)
    decoder_fmt = decoder_format(precision, backend, group_size=group_size, gguf_type=gguf_type)
    vis_precision = vision_precision or vision_precision_for(precision, target.family)
    w = weight_bytes(shapes, precision, decoder_fmt, vis_precision)
    kv_bytes = 2.0 * text.num_layers * text.kv_heads * text.head_dim * context * 2  # K and V, fp16
    patches, tokens = vision_tokens(vision, resolution, processor)
    # Live activations of the widest vision op (gated MLP) for all cameras, fp16.
    vis_act = 2.0 * images * patches * (3 * vision.hidden + 2 * vision.intermediate)
    reserved = target.reserved_gb * GB
    total = sum(w.values()) + kv_bytes + vis_act + reserved
    prompt_tokens = images * tokens + 64  # visual tokens plus a short question and chat template
    kv_per_token = kv_bytes / context
    weights_read = w["decoder"] + w["lm_head"]  # embeddings: one row per token, negligible
    decode_bytes = weights_read + kv_per_token * prompt_tokens
    bandwidth = target.memory_bandwidth_gbs * GB
    peak = target.fp16_tensor_tflops * 1e12
    vision_ms = 1e3 * images * vision_flops(vision, patches) / peak
    decoder_params = sum(prod(s) for n, s in shapes.items() if part_of(n) in ("decoder", "lm_head") and len(s) == 2)
    gemm_peak = target.tensor_peak_tflops(decoder_fmt.compute if decoder_fmt else "fp16") * 1e12  # W8A8, FP8, FP4
    prefill_ms = 1e3 * max(
        2.0 * decoder_params * prompt_tokens / gemm_peak,
        (w["decoder"] + w["lm_head"]) / (target.memory_bandwidth_gbs * GB),
    )
    notes = []
    if images * tokens > target.max_visual_tokens:
        notes.append(
            f"{images * tokens} visual tokens exceed the target's cap of {target.max_visual_tokens}; lower the resolution or cameras"
        )
    if context > text.max_position:
        notes.append(f"context {context} exceeds the model's max_position_embeddings {text.max_position}")
    return Plan(
        target=target.name,
        precision=precision,
        vision_precision=vis_precision,
        context=context,
        images=images,
        resolution=resolution,
        visual_tokens_per_image=tokens,
        weights_gb={k: v / GB for k, v in w.items()},
        kv_cache_gb=kv_bytes / GB,
        vision_activations_gb=vis_act / GB,
        reserved_gb=target.reserved_gb,
        total_gb=total / GB,
        memory_gb=target.memory_gb,
        fits=total <= target.memory_gb * GB,
        prompt_tokens=prompt_tokens,
        decode_bytes_per_token_gb=decode_bytes / GB,
        decode_tokens_per_s_bound=bandwidth / decode_bytes,
        decode_tokens_per_s_bound_full_context=bandwidth / (weights_read + kv_bytes),
        vision_ms_bound=vision_ms,
        prefill_ms_bound=prefill_ms,
        notes=notes,
    )


def config_dims(model: Path):
    """(text dims, vision dims, tensor shapes, processor config) from config.json alone (a plan needs no weights);
    preprocessor_config.json is read when it lies beside config.json, else the processor defaults apply."""
    from edgekit.json_files import read_json
    from edgekit.model.checkpoint import expected_shapes
    from edgekit.model.config import check_architecture, read_text_dims, read_vision_dims
    from edgekit.model.processor import load_processor_config

    model = Path(model)
    cfg_path = model / "config.json" if model.is_dir() else model
    if not cfg_path.is_file():
        raise EdgekitError(f"{cfg_path}: config.json not found")
    cfg = read_json(cfg_path)
    check_architecture(cfg, str(cfg_path))
    text, vision = read_text_dims(cfg, str(cfg_path)), read_vision_dims(cfg, str(cfg_path))
    has_processor = (cfg_path.parent / "preprocessor_config.json").is_file()
    processor = load_processor_config(cfg_path.parent) if has_processor else None
    return text, vision, expected_shapes(text, vision), processor


def refuse_if_unfit(plan: Plan) -> None:
    if not plan.fits:
        w = plan.weights_gb
        raise EdgekitError(
            f"{plan.precision} does not fit {plan.target}: needs {plan.total_gb:.1f} GB "
            f"(weights {sum(w.values()):.1f} GB = decoder {w['decoder']:.1f} + lm_head {w['lm_head']:.1f} + embeddings "
            f"{w['embeddings']:.1f} + vision {w['vision']:.1f}; KV cache {plan.kv_cache_gb:.2f} GB at {plan.context} tokens; "
            f"reserved {plan.reserved_gb:.1f} GB) but the target has {plan.memory_gb:.0f} GB; try --precision int4 or a shorter --context"
        )
