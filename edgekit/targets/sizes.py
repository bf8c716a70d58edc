"""Weight bytes per part of the model in a bundle's formats, from tensor shapes alone (pure).

Every byte count comes from `Format.nbytes` (edgekit.quant.formats), so `edgekit inspect`, the pre-build plan
and the writers agree. How a bundle stores each tensor:
  decoder, GGUF       every tensor as the GGUF writer stores it (Format.gguf_storage: vectors F32, a matrix in
                      the file's format when its rows split into whole blocks, else F16), embeddings and
                      lm_head included;
  decoder, unified    the decoder layers' linear weights in the format; embeddings, lm_head, norms and biases
                      dense (TensorRT Edge-LLM keeps them FP16);
  vision              its linear weights in the vision format (INT8 per channel in an INT8 QDQ graph), the rest
                      dense.
"""

from __future__ import annotations

from math import prod

PARTS = ("vision", "decoder", "embeddings", "lm_head")
# `edgekit inspect`: a TensorRT-style build at each precision (decoder format, vision format; None: dense bf16).
INSPECT_PRECISIONS = {
    "bf16": (None, None),
    "int8": ("int8:channel", "int8:channel"),
    "int4": ("nvidia:w4a16:g128", None),
}


def part_of(name: str) -> str:
    if name.startswith("visual."):
        return "vision"
    if name == "model.embed_tokens.weight":
        return "embeddings"
    if name == "lm_head.weight":
        return "lm_head"
    return "decoder"


def is_quantizable_linear(name: str, shape: tuple[int, ...]) -> bool:
    return len(shape) == 2 and name.endswith(".weight") and name != "model.embed_tokens.weight"


def tensor_bytes(name: str, shape: tuple[int, ...], decoder_fmt=None, vision_fmt=None, dense: int = 2) -> int:
    """Bytes of one tensor in a bundle whose decoder is `decoder_fmt` and vision tower `vision_fmt` (None: dense)."""
    part = part_of(name)
    if part == "vision":
        quantized = vision_fmt is not None and is_quantizable_linear(name, shape) and vision_fmt.fits_rows(shape[-1])
        return vision_fmt.nbytes(shape) if quantized else dense * prod(shape)
    if decoder_fmt is None:
        return dense * prod(shape)
    if decoder_fmt.container == "gguf":
        return decoder_fmt.gguf_storage(shape).nbytes(shape)
    if part == "decoder" and is_quantizable_linear(name, shape) and decoder_fmt.fits_rows(shape[-1]):
        return decoder_fmt.nbytes(shape)
    return dense * prod(shape)


def weight_bytes_by_part(
    shapes: dict[str, tuple[int, ...]], decoder_fmt=None, vision_fmt=None, dense: int = 2
) -> dict[str, int]:
    """{vision, decoder, embeddings, lm_head, total} bytes."""
    out = dict.fromkeys(PARTS, 0)
    for name, shape in shapes.items():
        out[part_of(name)] += tensor_bytes(name, tuple(shape), decoder_fmt, vision_fmt, dense)
    out["total"] = sum(out[p] for p in PARTS)
    return out


def inspect_weight_bytes(shapes: dict[str, tuple[int, ...]]) -> dict[str, dict[str, int]]:
    """`edgekit inspect`'s table: bytes per part at bf16, int8 and int4."""
    from edgekit.quant.formats import parse

    return {
        p: weight_bytes_by_part(shapes, *(parse(f) if f else None for f in fmts))
        for p, fmts in INSPECT_PRECISIONS.items()
    }
