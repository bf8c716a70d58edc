"""Time edgekit's fused kernels against torch's scaled_dot_product_attention on a CUDA GPU, side by side in one run.

    cmake -S edgekit/kernels -B edgekit/kernels/build && cmake --build edgekit/kernels/build -j2
    python edgekit/kernels/bench_kernels.py [--resolution 448] [--context 4096] [--splits 0] [--json OUT]

Per case: the fused kernel's time, its achieved DRAM GB/s and tensor TFLOP/s and their share of the device's
peak (edgekit/targets/recipes: orin-agx-64 on sm_87, thor-agx on sm_110; on any other GPU the peaks measured here
first: a device-to-device copy and an 8192³ fp16 matrix product), and SDPA's time on the same shapes. SDPA
does less work than the fused kernels (no rotary; window attention as a padded batch of 64-token windows; decode
with f16 KV only, no cache append), so the ratio flatters SDPA. Needs a GPU; elsewhere it says so and exits 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def _time_ms(fn, reps: int = 50) -> float:
    import torch

    for _ in range(5):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def measured_peaks() -> dict:
    """This GPU's copy bandwidth (bytes read + written per second) and fp16 tensor rate, measured now."""
    import torch

    a = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    copy_ms = _time_ms(lambda: b.copy_(a), reps=20)
    n = 8192
    x, y = (torch.randn(n, n, device="cuda", dtype=torch.float16) for _ in range(2))
    mm_ms = _time_ms(lambda: x @ y, reps=10)
    return {
        "memory_bandwidth_gbs": 2 * (1 << 30) / copy_ms / 1e6,
        "fp16_tensor_tflops": 2 * n**3 / mm_ms / 1e9,
        "source": "measured here (device-to-device copy, 8192^3 fp16 matmul)",
    }


def _check(rc: int, name: str) -> None:
    if rc != 0:
        raise RuntimeError(f"{name} returned {rc}")


def main() -> int:
    import torch
    import torch.nn.functional as F

    from edgekit.kernels.attention import cuda_library
    from perf_model import DEC_D, DEC_KVH, DEC_QH, VIS_D, VIS_HEADS, WINDOW, device  # edgekit/kernels/ is sys.path[0]

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=448, help="square image side in pixels (multiple of 112)")
    ap.add_argument("--context", type=int, default=4096, help="decode context length (tokens already cached)")
    ap.add_argument("--splits", type=int, default=0, help="decode split-K count (0: enough blocks to fill the GPU)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows as JSON here")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print(
            "bench_kernels.py: no CUDA GPU here; the kernels' numerics are tested on the CPU (tests/kernels/test_kernels.py)"
        )
        return 2
    lib = cuda_library()
    if lib is None:
        print(
            "bench_kernels.py: build the CUDA library first (cmake -S edgekit/kernels -B edgekit/kernels/build && cmake --build edgekit/kernels/build)"
        )
        return 2
    cap = torch.cuda.get_device_capability()
    target = {(8, 7): "orin-agx-64", (11, 0): "thor-agx"}.get(cap)
    peak = dict(device(target), source=f"targets/recipes/{target}.toml") if target else measured_peaks()
    print(
        f"device {torch.cuda.get_device_name()} sm_{cap[0]}{cap[1]}; peaks {peak['memory_bandwidth_gbs']:.0f} GB/s, "
        f"{peak['fp16_tensor_tflops']:.0f} fp16 TFLOP/s from {peak['source']}"
    )
    rows = []

    def report(name: str, ms: float, nbytes: float, flops: float, ms_sdpa: float) -> None:
        gbs, tfs = nbytes / ms / 1e6, flops / ms / 1e9
        share = f" ({gbs / peak['memory_bandwidth_gbs']:.0%} of DRAM, {tfs / peak['fp16_tensor_tflops']:.0%} of tensor)"
        print(
            f"{name:44s} fused {ms:7.3f} ms  {gbs:6.1f} GB/s  {tfs:6.2f} TFLOP/s{share}   SDPA {ms_sdpa:7.3f} ms  "
            f"SDPA/fused {ms_sdpa / ms:.2f}x"
        )
        rows.append(
            {
                "case": name,
                "fused_ms": ms,
                "gbs": gbs,
                "tflops": tfs,
                "dram_share": gbs / peak["memory_bandwidth_gbs"],
                "tensor_share": tfs / peak["fp16_tensor_tflops"],
                "sdpa_ms": ms_sdpa,
            }
        )

    dev, stream = torch.device("cuda"), torch.cuda.current_stream().cuda_stream
    H, D = VIS_HEADS, VIS_D
    t = (args.resolution // 14) ** 2
    qkv = torch.randn(t, 3, H, D, device=dev, dtype=torch.float16)
    cos, sin = torch.randn(t, D, device=dev), torch.randn(t, D, device=dev)
    out = torch.empty(t, H * D, device=dev, dtype=torch.float16)
    q, k, v = (qkv[:, i].transpose(0, 1).contiguous() for i in range(3))  # [H, T, D]
    for name, window in (("vision window block (64-token windows)", WINDOW), ("vision full-attention block", t)):
        cu = torch.arange(0, t + 1, window, device=dev, dtype=torch.int32)
        if int(cu[-1]) != t:
            cu = torch.cat([cu, torch.tensor([t], device=dev, dtype=torch.int32)])

        def fused():
            _check(
                lib.lib.edgekit_vit_window_attention(
                    qkv.data_ptr(),
                    cos.data_ptr(),
                    sin.data_ptr(),
                    cu.data_ptr(),
                    cu.numel() - 1,
                    window,
                    H,
                    D,
                    out.data_ptr(),
                    stream,
                ),
                "edgekit_vit_window_attention",
            )

        nw = -(-t // window)
        pad = lambda x: F.pad(x, (0, 0, 0, nw * window - t)).reshape(H, nw, window, D).transpose(0, 1)  # noqa: E731
        qw, kw, vw = pad(q), pad(k), pad(v)
        sdpa = lambda: F.scaled_dot_product_attention(qw, kw, vw)  # noqa: E731
        nbytes = t * 3 * H * D * 2 + t * H * D * 2 + 2 * t * (D // 2) * 4
        report(f"{name}, {t} tokens", _time_ms(fused), nbytes, 4 * t * min(window, t) * D * H, _time_ms(sdpa))

    C = args.context
    splits = args.splits or max(1, min(64, C // 256))
    qn = torch.randn(1, DEC_QH, DEC_D, device=dev, dtype=torch.float16)
    kn, vn = (torch.randn(1, DEC_KVH, DEC_D, device=dev, dtype=torch.float16) for _ in range(2))
    c2, s2 = torch.randn(1, DEC_D, device=dev), torch.randn(1, DEC_D, device=dev)
    lens = torch.tensor([C], device=dev, dtype=torch.int32)
    ws = torch.empty(lib.lib.edgekit_decode_workspace_bytes(1, DEC_QH, splits) // 4, device=dev)
    o = torch.empty(1, DEC_QH, DEC_D, device=dev, dtype=torch.float16)
    ck16 = torch.randn(1, DEC_KVH, C + 1, DEC_D, device=dev, dtype=torch.float16)
    cv16 = torch.randn_like(ck16)
    sdpa_d = lambda: F.scaled_dot_product_attention(qn[:, :, None], ck16, cv16, enable_gqa=True)  # noqa: E731
    ms_sdpa = _time_ms(sdpa_d)
    for int8 in (False, True):
        if int8:
            ck = torch.randint(-127, 128, ck16.shape, device=dev, dtype=torch.int8)
            cv = torch.randint_like(ck, -127, 128)
            sk, sv = torch.rand(1, DEC_KVH, C + 1, device=dev), torch.rand(1, DEC_KVH, C + 1, device=dev)
        else:
            ck, cv, sk, sv = ck16, cv16, None, None

        def fused_d():
            _check(
                lib.lib.edgekit_decode_attention(
                    qn.data_ptr(),
                    kn.data_ptr(),
                    vn.data_ptr(),
                    c2.data_ptr(),
                    s2.data_ptr(),
                    ck.data_ptr(),
                    cv.data_ptr(),
                    sk.data_ptr() if int8 else None,
                    sv.data_ptr() if int8 else None,
                    int(int8),
                    lens.data_ptr(),
                    1,
                    DEC_QH,
                    DEC_KVH,
                    C + 1,
                    splits,
                    ws.data_ptr(),
                    o.data_ptr(),
                    stream,
                ),
                "edgekit_decode_attention",
            )

        nbytes = (C + 1) * DEC_KVH * DEC_D * 2 * (1 + 4 / DEC_D if int8 else 2)
        report(
            f"decode, one layer, context {C}, {'INT8' if int8 else 'FP16'} KV, {splits} splits",
            _time_ms(fused_d),
            nbytes,
            4 * (C + 1) * DEC_QH * DEC_D,
            ms_sdpa,
        )
    if args.json:
        import json

        args.json.write_text(
            json.dumps({"device": torch.cuda.get_device_name(), "peaks": peak, "rows": rows}, indent=1)
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
