"""Performance model of edgekit's attention kernels for MiMo-Embodied's shapes on AGX Orin and AGX Thor.

    python edgekit/kernels/perf_model.py            # prints the README's tables

Device numbers come from edgekit/targets/recipes/*.toml (each with its source there). Bounds, per kernel:
  memory  DRAM bytes / bandwidth: every input read once, the output written once. What makes "once" true is the
          block order: window blocks run a window's 16 heads side by side (they share its cos/sin and token rows in
          L2); full attention runs one head's query tiles side by side (one head's K and V at 4096 tokens is 1.3 MB,
          L2 is 4 MB on Orin). Query-tile re-reads of K/V are L2 traffic, reported separately.
  tensor  mma FLOPs / dense FP16 tensor peak.
  exp     one exp2 per score on the SFUs (Orin: 16 SMs x 16 per clock x 1.3 GHz, the per-SM rate of the CUDA C++
          Programming Guide's throughput table for compute capability 8.x).
  issue   decode only: warp instructions per key per KV head, counted in the kernel's PTX (sm_87, G = 4), over
          16 SMs x 4 schedulers x 1.3 GHz. PTX is not SASS; it is an estimate of how far decode is from being
          instruction-bound rather than memory-bound.
"expected" divides each bound by an assumed efficiency (DRAM 80% of peak for a streaming kernel; mma.sync with
scalar shared-memory fragment loads 50% of the tensor peak) and takes the largest. Replace them with what
edgekit/kernels/bench_kernels.py measures on the device.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

RECIPES = Path(__file__).resolve().parents[1] / "targets" / "recipes"
# MiMo-Embodied-7B (config.json): vision 32 blocks, 16 heads x 80, 14 px patches, 112 px windows (8x8 patches),
# full attention in blocks 7, 15, 23, 31; decoder 36 layers, 32 query heads, 8 KV heads, head_dim 128.
VIS_BLOCKS, VIS_FULL, VIS_HEADS, VIS_D, PATCH, WINDOW = 32, 4, 16, 80, 14, 8 * 8
DEC_LAYERS, DEC_QH, DEC_KVH, DEC_D = 36, 32, 8, 128
TILE = 64  # the ViT kernel's query and key tile
EFF_DRAM, EFF_TENSOR = 0.8, 0.5
ORIN_EXP_PER_S = 16 * 16 * 1.3e9
ORIN_ISSUE_PER_S = 16 * 4 * 1.3e9
# PTX warp instructions per key and KV head in decode_partial_kernel<4, *> (scores + softmax + PV, per-tile
# overheads amortised over 32 keys): see README "Performance model".
DEC_INSTR_PER_KEY = {False: 70, True: 76}


def device(name: str) -> dict:
    return tomllib.loads((RECIPES / f"{name}.toml").read_text())


def vision(side_px: int) -> dict:
    """One image, all 32 blocks' attention."""
    t = (side_px // PATCH) ** 2
    kv_span_full = -(-t // TILE) * TILE  # keys a query row scores in full attention (whole tiles)
    flops_window = 4 * t * WINDOW * VIS_D * VIS_HEADS  # QK^T + PV, 2 FLOPs per MAC
    flops_full = 4 * t * t * VIS_D * VIS_HEADS
    # qkv in, out, and the first half of the f32 cos/sin table (the kernel reads D/2 columns of each)
    per_block_bytes = t * 3 * VIS_HEADS * VIS_D * 2 + t * VIS_HEADS * VIS_D * 2 + 2 * t * (VIS_D // 2) * 4
    exps = (VIS_BLOCKS - VIS_FULL) * t * WINDOW * VIS_HEADS + VIS_FULL * t * kv_span_full * VIS_HEADS
    # full attention: every query tile re-reads its head's K, V (f16) and the K rows' table half (f32) from L2
    l2_full = VIS_FULL * VIS_HEADS * (-(-t // TILE)) * t * (2 * VIS_D * 2 + 2 * (VIS_D // 2) * 4)
    return {
        "tokens": t,
        "flops": (VIS_BLOCKS - VIS_FULL) * flops_window + VIS_FULL * flops_full,
        "bytes": VIS_BLOCKS * per_block_bytes,
        "exps": exps,
        "l2_bytes": l2_full,
    }


def decode(ctx: int, int8: bool) -> dict:
    """One new token, batch 1, all 36 layers: the KV cache read once (codes + one f32 scale per row for INT8)."""
    per_elem = 1 + 4 / DEC_D if int8 else 2
    kv = ctx * DEC_KVH * DEC_D * 2 * per_elem
    return {
        "flops": DEC_LAYERS * 4 * ctx * DEC_QH * DEC_D,
        "bytes": DEC_LAYERS * kv,
        "instr": DEC_LAYERS * ctx * DEC_KVH * DEC_INSTR_PER_KEY[int8],
    }


def bounds_ms(x: dict, dev: dict, orin: bool) -> dict:
    b = {
        "memory": x["bytes"] / (dev["memory_bandwidth_gbs"] * 1e9) * 1e3,
        "tensor": x["flops"] / (dev["fp16_tensor_tflops"] * 1e12) * 1e3,
    }
    if orin and "exps" in x:
        b["exp"] = x["exps"] / ORIN_EXP_PER_S * 1e3
    if orin and "instr" in x:
        b["issue"] = x["instr"] / ORIN_ISSUE_PER_S * 1e3
    return b


def expected_ms(b: dict) -> float:
    eff = {"memory": EFF_DRAM, "tensor": EFF_TENSOR}
    return max(v / eff.get(k, 1.0) for k, v in b.items())


def main() -> None:
    orin, thor = device("orin-agx-64"), device("thor-agx")
    print(
        "| vision attention, one image, 32 blocks | tokens | GFLOP | DRAM MB | L2 re-reads MB (full attn) | "
        "Orin bounds ms: memory / tensor / exp | Orin expected ms | Thor bounds ms: memory / tensor |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for side in (448, 896):
        v = vision(side)
        bo, bt = bounds_ms(v, orin, True), bounds_ms(v, thor, False)
        print(
            f"| {side}x{side} | {v['tokens']} | {v['flops'] / 1e9:.1f} | {v['bytes'] / 1e6:.0f} | {v['l2_bytes'] / 1e6:.0f} | "
            f"{bo['memory']:.2f} / {bo['tensor']:.2f} / {bo['exp']:.2f} | {expected_ms(bo):.2f} | "
            f"{bt['memory']:.2f} / {bt['tensor']:.2f} |"
        )
    print()
    print(
        "| decode attention, one token, 36 layers | KV | GFLOP | DRAM MB | Orin bounds ms: memory / issue | "
        "Orin expected ms | Thor memory bound ms | Thor expected ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for ctx in (1024, 4096, 16384):
        for int8 in (False, True):
            x = decode(ctx, int8)
            bo, bt = bounds_ms(x, orin, True), bounds_ms(x, thor, False)
            print(
                f"| context {ctx} | {'INT8' if int8 else 'FP16'} | {x['flops'] / 1e9:.2f} | {x['bytes'] / 1e6:.0f} | "
                f"{bo['memory']:.2f} / {bo['issue']:.2f} | {expected_ms(bo):.2f} | {bt['memory']:.2f} | "
                f"{expected_ms(bt):.2f} |"
            )


if __name__ == "__main__":
    main()
