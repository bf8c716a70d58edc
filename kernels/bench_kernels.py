"""Time edgekit's fused kernels against torch's scaled_dot_product_attention on a CUDA GPU (side by side, one run).

    cmake -S kernels -B kernels/build && cmake --build kernels/build -j
    python kernels/bench_kernels.py [--resolution 448] [--context 4096]

Reports each kernel's time, achieved DRAM GB/s and tensor TFLOP/s, and the ratio to SDPA (which, for window
attention, runs the windows as a padded batch, and for decode, repeats the KV heads for GQA). Needs a GPU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _time(fn, reps: int = 50) -> float:
    import torch

    for _ in range(5):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps  # ms


def main() -> int:
    import torch
    import torch.nn.functional as F

    from edgekit.attention_kernels import cuda_library
    from perf_model import decode, vision  # noqa: E402  (kernels/ is the script's directory)

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", type=int, default=448)
    ap.add_argument("--context", type=int, default=4096)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        print("bench_kernels.py: no CUDA GPU here; the kernels' numerics are tested on the CPU (tests/test_kernels.py)")
        return 2
    lib = cuda_library()
    if lib is None:
        print("bench_kernels.py: build the CUDA library first (cmake -S kernels -B kernels/build && cmake --build kernels/build)")
        return 2
    dev = torch.device("cuda")
    stream = torch.cuda.current_stream().cuda_stream

    # vision: one window-attention block (64-token windows) at the resolution
    t = (args.resolution // 14) ** 2
    H, D = 16, 80
    qkv = torch.randn(t, 3, H, D, device=dev, dtype=torch.float16)
    cos, sin = torch.randn(t, D, device=dev), torch.randn(t, D, device=dev)
    cu = torch.arange(0, t + 1, 64, device=dev, dtype=torch.int32)
    out = torch.empty(t, H * D, device=dev, dtype=torch.float16)
    fused = lambda: lib.lib.edgekit_vit_window_attention(qkv.data_ptr(), cos.data_ptr(), sin.data_ptr(), cu.data_ptr(),  # noqa: E731
                                                         cu.numel() - 1, 64, H, D, out.data_ptr(), stream)
    q = qkv[:, 0].reshape(-1, 64, H, D).transpose(1, 2)
    sdpa = lambda: F.scaled_dot_product_attention(q, q, q)  # noqa: E731
    ms_f, ms_s = _time(fused), _time(sdpa)
    v = vision(args.resolution)
    per_block = v["flops"] / 32
    print(f"vit window attention, {t} tokens: fused {ms_f:.3f} ms ({per_block / ms_f / 1e9:.1f} TFLOP/s), "
          f"SDPA {ms_s:.3f} ms, ratio {ms_s / ms_f:.2f}x")

    # decode: one layer, batch 1, GQA 32/8, f16 KV
    C = args.context
    qn = torch.randn(1, 32, 128, device=dev, dtype=torch.float16)
    kn, vn = torch.randn(1, 8, 128, device=dev, dtype=torch.float16), torch.randn(1, 8, 128, device=dev, dtype=torch.float16)
    c2, s2 = torch.randn(1, 128, device=dev), torch.randn(1, 128, device=dev)
    ck = torch.randn(1, 8, C + 1, 128, device=dev, dtype=torch.float16)
    cv = torch.randn_like(ck)
    lens = torch.tensor([C], device=dev, dtype=torch.int32)
    splits = max(1, C // 512)
    ws = torch.empty(lib.lib.edgekit_decode_workspace_bytes(1, 32, splits) // 4, device=dev)
    o = torch.empty(1, 32, 128, device=dev, dtype=torch.float16)
    fused_d = lambda: lib.lib.edgekit_decode_attention(qn.data_ptr(), kn.data_ptr(), vn.data_ptr(), c2.data_ptr(), s2.data_ptr(),  # noqa: E731
                                                       ck.data_ptr(), cv.data_ptr(), None, None, 0, lens.data_ptr(), 1, 32, 8,
                                                       C + 1, splits, ws.data_ptr(), o.data_ptr(), stream)
    kk = ck.repeat_interleave(4, dim=1)
    sdpa_d = lambda: F.scaled_dot_product_attention(qn[:, :, None], kk, kk)  # noqa: E731
    ms_f, ms_s = _time(fused_d), _time(sdpa_d)
    gb = decode(C, False)["bytes"] / 36 / 1e9
    print(f"decode attention, context {C}: fused {ms_f:.3f} ms ({gb / ms_f * 1e3:.0f} GB/s), SDPA {ms_s:.3f} ms, "
          f"ratio {ms_s / ms_f:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
