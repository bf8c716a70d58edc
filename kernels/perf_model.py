"""Performance model of edgekit's attention kernels for MiMo-Embodied's shapes on AGX Orin and Thor.

    python kernels/perf_model.py            # prints the README's tables

Device numbers come from recipes/targets/*.toml (each with its source). The model is a roofline: time >=
max(bytes / DRAM bandwidth, FLOPs / tensor peak). Bytes are DRAM traffic of a fused kernel (each input read
once, output written once; K/V re-reads across query tiles hit L2: one head's K and V at 4096 tokens is 1.3 MB).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[1] / "recipes" / "targets"
# MiMo-Embodied-7B (config.json): vision 32 blocks, 16 heads x 80, 14 px patches, 112 px windows (8x8 patches),
# full attention in blocks 7, 15, 23, 31; decoder 36 layers, 32 query heads, 8 KV heads, head_dim 128.
VIS_BLOCKS, VIS_FULL, VIS_HEADS, VIS_D, PATCH, WINDOW = 32, 4, 16, 80, 14, 8 * 8
DEC_LAYERS, DEC_QH, DEC_KVH, DEC_D = 36, 32, 8, 128


def device(name: str) -> dict:
    return tomllib.loads((RECIPES / f"{name}.toml").read_text())


def vision(side_px: int) -> dict:
    t = (side_px // PATCH) ** 2
    flops_window = 4 * t * WINDOW * VIS_D * VIS_HEADS  # QK^T + PV, 2 FLOPs per MAC
    flops_full = 4 * t * t * VIS_D * VIS_HEADS
    per_block_bytes = t * 3 * VIS_HEADS * VIS_D * 2 + t * VIS_D * 4 * 2 + t * VIS_HEADS * VIS_D * 2  # qkv, cos/sin, out
    return {"tokens": t, "flops": (VIS_BLOCKS - VIS_FULL) * flops_window + VIS_FULL * flops_full,
            "bytes": VIS_BLOCKS * per_block_bytes}


def decode(ctx: int, int8: bool) -> dict:
    per_elem = 1 + 4 / DEC_D if int8 else 2  # INT8 codes + one f32 scale per token and head
    kv = ctx * DEC_KVH * DEC_D * 2 * per_elem
    return {"flops": DEC_LAYERS * 4 * ctx * DEC_QH * DEC_D, "bytes": DEC_LAYERS * kv}


def roofline_ms(flops: float, nbytes: float, dev: dict) -> tuple[float, str]:
    t_mem = nbytes / (dev["memory_bandwidth_gbs"] * 1e9)
    t_math = flops / (dev["fp16_tensor_tflops"] * 1e12)
    return 1e3 * max(t_mem, t_math), "memory" if t_mem >= t_math else "tensor"


def main() -> None:
    devs = {"AGX Orin": device("orin-agx-64"), "AGX Thor": device("thor-agx")}
    print("| vision attention, one image | tokens | GFLOP | DRAM MB | " + " | ".join(f"{d} ms (bound)" for d in devs) + " |")
    print("|---|---|---|---|" + "---|" * len(devs))
    for side in (448, 896):
        v = vision(side)
        cells = [f"{ms:.2f} ({b})" for ms, b in (roofline_ms(v["flops"], v["bytes"], d) for d in devs.values())]
        print(f"| {side}x{side}, 32 blocks | {v['tokens']} | {v['flops'] / 1e9:.1f} | {v['bytes'] / 1e6:.0f} | " + " | ".join(cells) + " |")
    print()
    print("| decode attention, one token, 36 layers | KV | GFLOP | DRAM MB | " + " | ".join(f"{d} ms (bound)" for d in devs) + " |")
    print("|---|---|---|---|" + "---|" * len(devs))
    for ctx in (1024, 4096, 16384):
        for int8 in (False, True):
            x = decode(ctx, int8)
            cells = [f"{ms:.2f} ({b})" for ms, b in (roofline_ms(x["flops"], x["bytes"], d) for d in devs.values())]
            print(f"| context {ctx} | {'INT8' if int8 else 'FP16'} | {x['flops'] / 1e9:.2f} | {x['bytes'] / 1e6:.0f} | "
                  + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
