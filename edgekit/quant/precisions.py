"""Build precisions (`edgekit build --precision`) -> the weight formats a bundle's decoder and vision tower get.

Each format names the precisions it is the decoder's format for (edgekit.quant.formats); this module resolves a
(precision, backend) pair to that format once, says in one line why a pair does not build, and holds the defaults of
`edgekit quantize`.
"""

from __future__ import annotations

from edgekit.errors import EdgekitError
from edgekit.quant.formats import ALIASES, BACKENDS, FORMATS, GGUF_FORMATS, Format, parse

BUILD_PRECISIONS = tuple(dict.fromkeys(p for f in FORMATS.values() for p in f.precisions))
# TensorRT builds these from the FP16 checkpoint itself: no decoder format to quantize to
_CHECKPOINT_AS_IS = {"tensorrt": ("fp16", "fp32")}
_WHY_NOT = {
    ("gguf", "fp8"): "--precision fp8 is ModelOpt's FP8 for TensorRT (--backend tensorrt): llama.cpp has no FP8 weight "
    "type (for a GGUF at 8 bits use --precision int8: Q8_0)",
    ("tensorrt", "int8"): "--backend tensorrt has no INT8 weight-only path (TensorRT Edge-LLM runs INT8 as W8A8 "
    "SmoothQuant): use --precision w8a8, or int4",
    ("tensorrt", "mxfp4"): "--precision mxfp4 builds llama.cpp's MXFP4 (--backend gguf); TensorRT Edge-LLM runs NVFP4 "
    "(--precision nvfp4), not MXFP4 weights",
}


def decoder_format(
    precision: str, backend: str, *, group_size: int = 128, gguf_type: str | None = None
) -> Format | None:
    """The decoder's weight format for a build precision on a backend (None: the FP16 checkpoint as it is).

    The format whose `precisions` name it on that backend: gguf int4 -> Q4_K, int8/w8a8 -> Q8_0, nvfp4/mxfp4 ->
    llama.cpp's NVFP4/MXFP4, fp16/fp32 -> F16/F32 (`gguf_type` overrides); tensorrt int4 -> W4A16 at `group_size`,
    w8a8 -> INT8 per channel with SmoothQuant, nvfp4 -> ModelOpt NVFP4 (W4A4), fp8 -> ModelOpt FP8 (W8A8), fp16 -> none.
    """
    if precision not in BUILD_PRECISIONS:
        raise EdgekitError(f"--precision {precision!r}: choose one of {', '.join(BUILD_PRECISIONS)}")
    if backend not in BACKENDS:
        raise EdgekitError(f"--backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend == "gguf" and gguf_type:
        fmt = FORMATS.get(ALIASES.get(str(gguf_type).strip().lower(), ""))
        if fmt is None or fmt.container != "gguf":
            raise EdgekitError(
                f"--gguf-type {gguf_type!r}: choose one of {', '.join(FORMATS[n].type_name for n in GGUF_FORMATS)}"
            )
        return fmt
    if precision in _CHECKPOINT_AS_IS.get(backend, ()):
        return None
    serving = [f for f in FORMATS.values() if backend in f.backends and precision in f.precisions]
    if not serving:
        raise EdgekitError(
            _WHY_NOT.get((backend, precision), f"--precision {precision} does not build for --backend {backend}")
        )
    fmt = serving[0]
    return fmt.with_group_size(group_size) if len(fmt.group_variants) > 1 else fmt


def builds_on(precision: str, backend: str) -> bool:
    """Whether a decoder at this build precision can be written for `backend`."""
    try:
        decoder_format(precision, backend)
    except EdgekitError:
        return False
    return True


# `edgekit quantize --precision`: the formats a standalone quantization defaults to (llama.cpp's 4-bit K-quant;
# ModelOpt's INT8 per channel, which SmoothQuant turns into W8A8).
QUANTIZE_PRECISIONS = {"int4": "gguf:q4_k", "int8": "int8:channel"}


def quantize_format(precision: str, fmt: str = "", group_size: int | None = None) -> Format:
    """The format of `edgekit quantize`: --format when given, else --precision's; --group-size applied."""
    if not fmt and precision not in QUANTIZE_PRECISIONS:
        raise EdgekitError(f"--precision {precision!r}: choose {' or '.join(QUANTIZE_PRECISIONS)}, or give --format")
    out = parse(fmt or QUANTIZE_PRECISIONS[precision])
    if not out.quantized:
        raise EdgekitError(f"--format {out.name} is a float format: nothing to calibrate (use edgekit export-decoder)")
    return out if group_size is None or len(out.group_variants) == 1 else out.with_group_size(group_size)


def vision_format(precision: str) -> Format | None:
    """Weight format of the vision tower's linears in its ONNX graph (None: float, 2 or 4 bytes)."""
    return FORMATS["int8:channel"] if precision == "int8" else None
