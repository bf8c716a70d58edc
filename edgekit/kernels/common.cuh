// Shared pieces of edgekit's kernels: the one tensor-core instruction, f16/int8 packing, 16-byte vector memory
// access, warp reductions, and a launch macro that is a real <<<>>> launch under nvcc and an emulated launch
// under -DEDGEKIT_EMU (emu/cuda_emu.h). Every helper that differs between the two builds is here, so the kernel
// bodies in the .cu files are one source for both.
#pragma once

#ifdef EDGEKIT_EMU
#include "emu/cuda_emu.h"
#else
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cstdint>
#define EMU_LAUNCH(kernel, grid, block, ...) kernel<<<(grid), (block), 0, stream>>>(__VA_ARGS__)
#endif
#include "edgekit_kernels.h"

namespace edgekit {

constexpr unsigned FULL_MASK = 0xffffffffu;

// ---- f16 pairs in one 32-bit register, low half first (the f16x2 operand order of mma) ----
__device__ __forceinline__ uint32_t pack_half2(float lo, float hi) {
    return (uint32_t)__half_as_ushort(__float2half_rn(lo)) | ((uint32_t)__half_as_ushort(__float2half_rn(hi)) << 16);
}
__device__ __forceinline__ float half_lo(uint32_t w) { return __half2float(__ushort_as_half((unsigned short)(w & 0xffffu))); }
__device__ __forceinline__ float half_hi(uint32_t w) { return __half2float(__ushort_as_half((unsigned short)(w >> 16))); }

// ---- raw loads and stores. On the GPU these are single LDG/LDS/STS instructions (the pointers are aligned by
// construction: rows of 16-byte multiples); under the emulator they are memcpy, so no strict-aliasing games. ----
template <class T>
__device__ __forceinline__ T ld_raw(const void* p) {
#ifdef EDGEKIT_EMU
    T v;
    std::memcpy(&v, p, sizeof(T));
    return v;
#else
    return *static_cast<const T*>(p);
#endif
}
template <class T>
__device__ __forceinline__ void st_raw(void* p, T v) {
#ifdef EDGEKIT_EMU
    std::memcpy(p, &v, sizeof(T));
#else
    *static_cast<T*>(p) = v;
#endif
}
__device__ __forceinline__ uint4 ld16(const void* p) { return ld_raw<uint4>(p); }
__device__ __forceinline__ void st16(void* p, uint4 v) { st_raw(p, v); }
__device__ __forceinline__ uint32_t ld32(const void* p) { return ld_raw<uint32_t>(p); }
__device__ __forceinline__ void st32(void* p, uint32_t v) { st_raw(p, v); }
__device__ __forceinline__ uint2 ld8(const void* p) { return ld_raw<uint2>(p); }
__device__ __forceinline__ float4 ld_float4(const float* p) { return ld_raw<float4>(p); }

// What a host entry point returns after queueing its launches.
inline int launch_status(cudaStream_t stream) {
#ifdef EDGEKIT_EMU
    (void)stream;
    return EDGEKIT_OK;  // emulated launches run synchronously and cannot fail to launch
#else
    (void)stream;
    return cudaGetLastError() == cudaSuccess ? EDGEKIT_OK : EDGEKIT_ERR_LAUNCH;
#endif
}

// 8 f16 (one 16-byte vector) <-> 8 floats.
__device__ __forceinline__ void unpack_f16x8(uint4 u, float x[8]) {
    const uint32_t w[4] = {u.x, u.y, u.z, u.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) x[2 * i] = half_lo(w[i]), x[2 * i + 1] = half_hi(w[i]);
}
__device__ __forceinline__ uint4 pack_f16x8(const float x[8]) {
    uint4 u;
    u.x = pack_half2(x[0], x[1]), u.y = pack_half2(x[2], x[3]);
    u.z = pack_half2(x[4], x[5]), u.w = pack_half2(x[6], x[7]);
    return u;
}
// 4 signed bytes -> 4 floats (exact) on full-rate ALUs: with u = b + 128, the bits 0x4B0000uu are the float
// 2^23 + u, so one byte permute and one subtraction per element replace a quarter-rate I2F conversion.
__device__ __forceinline__ void unpack_i8x4(uint32_t w, float x[4]) {
    const uint32_t u = w ^ 0x80808080u;  // each byte b -> b + 128, as unsigned
#pragma unroll
    for (int k = 0; k < 4; ++k) x[k] = __int_as_float((int)__byte_perm(u, 0x4B000000u, 0x7540u | k)) - 8388736.f;
}

// D = A(16x16, row) * B(16x8, col) + C, f16 inputs, f32 accumulate: one warp-wide tensor-core instruction.
// Fragments (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point type"), group = lane/4, tig = lane%4:
//   a[0] = A[group][2tig..+1]   a[1] = A[group+8][2tig..+1]   a[2] = A[group][2tig+8..+9]   a[3] = A[group+8][2tig+8..+9]
//   b[0] = B[2tig..+1][group]   b[1] = B[2tig+8..+9][group]
//   c[0..1] = C[group][2tig..+1]                               c[2..3] = C[group+8][2tig..+1]
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

// Butterfly reductions over aligned groups of WIDTH lanes (compile-time width: fully unrolled shuffles).
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
