"""Weight sizes per part and precision, computed from tensor shapes alone (pure).

Convention: at int8 and int4 only linear weights (2-D matrices inside decoder layers, vision
blocks, the merger and lm_head) are quantized; embeddings, norms and biases stay bf16.
int8 is per-output-channel with one fp16 scale per row; int4 uses groups of `group` input
columns with one fp16 scale each (ModelOpt W4A16 / Edge-LLM's layout).
"""

from __future__ import annotations

from math import prod

PRECISIONS = ("bf16", "int8", "int4")


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


def tensor_bytes(name: str, shape: tuple[int, ...], precision: str, group: int = 128) -> float:
    n = prod(shape)
    if precision == "bf16" or not is_quantizable_linear(name, shape):
        return 2.0 * n
    rows, cols = shape
    if precision == "int8":
        return n + 2.0 * rows
    if precision == "int4":
        return n / 2 + 2.0 * rows * -(-cols // group)
    raise ValueError(f"unknown precision {precision}")


def weight_bytes_by_part(shapes: dict[str, tuple[int, ...]], precision: str, group: int = 128) -> dict[str, int]:
    out = {"vision": 0.0, "decoder": 0.0, "embeddings": 0.0, "lm_head": 0.0}
    for name, shape in shapes.items():
        out[part_of(name)] += tensor_bytes(name, shape, precision, group)
    totals = {k: int(round(v)) for k, v in out.items()}
    totals["total"] = sum(totals.values())
    return totals
