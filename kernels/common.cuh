// Shared pieces of edgekit's kernels: the one tensor-core instruction, f16 packing, warp reductions, and a
// launch macro that is a real <<<>>> launch under nvcc and an emulated launch under -DEDGEKIT_EMU.
#pragma once

#ifdef EDGEKIT_EMU
#include "emu/cuda_emu.h"
#else
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cstdint>
#define EMU_LAUNCH(kernel, grid, block, ...) kernel<<<(grid), (block), 0, stream>>>(__VA_ARGS__)
#endif

namespace edgekit {

constexpr unsigned FULL_MASK = 0xffffffffu;

// Two halves in one 32-bit register, low half first (the f16x2 operand order of mma).
__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
    half h[2] = {__float2half_rn(lo), __float2half_rn(hi)};
    uint32_t r;
#ifdef EDGEKIT_EMU
    std::memcpy(&r, h, sizeof(r));
#else
    r = *reinterpret_cast<uint32_t*>(h);
#endif
    return r;
}

__device__ __forceinline__ uint32_t pack_half2(half lo, half hi) {
    half h[2] = {lo, hi};
    uint32_t r;
#ifdef EDGEKIT_EMU
    std::memcpy(&r, h, sizeof(r));
#else
    r = *reinterpret_cast<uint32_t*>(h);
#endif
    return r;
}

// D = A(16x16, row) * B(16x8, col) + C, f16 inputs, f32 accumulate: one warp-wide tensor-core instruction.
__device__ __forceinline__ void mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
#ifdef EDGEKIT_EMU
    emu_mma_m16n8k16(d, a, b, c);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, {%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]),
          "f"(c[0]), "f"(c[1]), "f"(c[2]), "f"(c[3]));
#endif
}

// Butterfly reductions over groups of WIDTH lanes (compile-time width: fully unrolled shuffles).
template <int WIDTH>
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int m = WIDTH / 2; m > 0; m /= 2) v = fmaxf(v, __shfl_xor_sync(FULL_MASK, v, m));
    return v;
}

template <int WIDTH>
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int m = WIDTH / 2; m > 0; m /= 2) v += __shfl_xor_sync(FULL_MASK, v, m);
    return v;
}

}  // namespace edgekit
