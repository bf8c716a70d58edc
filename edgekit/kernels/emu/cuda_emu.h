// CPU emulation of the CUDA subset edgekit's kernels use, so the same .cu files compile with g++ and run here.
//
// Semantics kept (what a kernel's correctness can depend on):
//   - a launch runs every block; within a block, each CUDA thread is a host thread (std::thread), so code
//     between barriers interleaves as it may on a GPU;
//   - __syncthreads() is a barrier over the block's threads, __syncwarp() over the warp's 32 lanes;
//   - __shfl_xor_sync / __shfl_sync exchange values among the 32 lanes of a warp (a warp-wide barrier on
//     each side of the exchange; every lane must take part, as the kernels' full masks promise: a kernel that
//     shuffles in divergent code deadlocks here instead of passing);
//   - integer intrinsics the kernels use (__byte_perm, __int_as_float, __half_as_ushort) bit-exactly;
//   - __shared__ variables are one instance per block (blocks run one after another, so a function-level
//     static is exactly that);
//   - half is _Float16 (IEEE binary16, round-to-nearest-even conversions, as __float2half_rn);
//   - mma.sync.m16n8k16.row.col.f32.f16.f16.f32 is computed per lane from the fragments of all 32 lanes,
//     placed by the PTX ISA's fragment layout (emu_mma_m16n8k16 below), with fp32 accumulation.
// Not emulated: memory coalescing, bank conflicts, timing; uninitialised shared memory (it starts zeroed, then
// holds the previous block's values, so a read-before-write bug may not show). Blocks run sequentially, so a kernel that relies
// on inter-block ordering would pass here and fail on a GPU; edgekit's kernels have no inter-block traffic
// within one launch (split-K partials are combined by a second launch).
#pragma once
#ifndef EDGEKIT_EMU
#error "cuda_emu.h is for CPU emulation builds (-DEDGEKIT_EMU)"
#endif

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <algorithm>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __restrict__
#define __shared__ static
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))

typedef void* cudaStream_t;
typedef int cudaError_t;
static const cudaError_t cudaSuccess = 0;
static const cudaError_t cudaErrorInvalidValue = 1;

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
    dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};

typedef _Float16 half;
struct half2 { half x, y; };
struct uint2 { uint32_t x, y; };
struct uint4 { uint32_t x, y, z, w; };
struct float4 { float x, y, z, w; };
inline unsigned short __half_as_ushort(half h) { unsigned short u; std::memcpy(&u, &h, 2); return u; }
inline half __ushort_as_half(unsigned short u) { half h; std::memcpy(&h, &u, 2); return h; }

inline half __float2half(float f) { return static_cast<half>(f); }
inline half __float2half_rn(float f) { return static_cast<half>(f); }
inline float __half2float(half h) { return static_cast<float>(h); }
inline float __expf(float x) { return std::exp(x); }
inline float __int_as_float(int i) { float f; std::memcpy(&f, &i, 4); return f; }
// PTX prmt default mode: result byte i = byte (s >> 4i) & 7 of the 8-byte value {y, x}.
inline unsigned __byte_perm(unsigned x, unsigned y, unsigned s) {
    const uint64_t v = ((uint64_t)y << 32) | x;
    unsigned r = 0;
    for (int i = 0; i < 4; ++i) r |= (unsigned)((v >> (8 * ((s >> (4 * i)) & 7))) & 0xffu) << (8 * i);
    return r;
}
inline float __fdividef(float a, float b) { return a / b; }
inline float rsqrtf(float x) { return 1.0f / std::sqrt(x); }
using std::max;
using std::min;

namespace emu {

struct Block {
    dim3 block_dim, grid_dim;
    std::unique_ptr<std::barrier<>> block_barrier;
    std::vector<std::unique_ptr<std::barrier<>>> warp_barriers;
    // per warp: 32 lanes x up to 8 words of exchange space (shuffles use word 0, mma uses all 8)
    std::vector<uint32_t> warp_words;
    std::vector<float> warp_accum;  // per warp: 32 lanes x 4 accumulators (mma C in, D out)
};

inline thread_local dim3 tl_thread_idx, tl_block_idx;
inline thread_local Block* tl_block = nullptr;

inline unsigned linear_tid() {
    const dim3& b = tl_block->block_dim;
    return tl_thread_idx.x + b.x * (tl_thread_idx.y + b.y * tl_thread_idx.z);
}
inline unsigned lane() { return linear_tid() % 32; }
inline unsigned warp() { return linear_tid() / 32; }
inline void warp_sync() { tl_block->warp_barriers[warp()]->arrive_and_wait(); }

template <typename Kernel>
void launch(dim3 grid, dim3 block, Kernel&& kernel) {
    const unsigned nthreads = block.x * block.y * block.z;
    const unsigned nwarps = (nthreads + 31) / 32;
    for (unsigned bz = 0; bz < grid.z; ++bz)
        for (unsigned by = 0; by < grid.y; ++by)
            for (unsigned bx = 0; bx < grid.x; ++bx) {
                Block b;
                b.block_dim = block;
                b.grid_dim = grid;
                b.block_barrier = std::make_unique<std::barrier<>>(nthreads);
                for (unsigned w = 0; w < nwarps; ++w)
                    b.warp_barriers.push_back(std::make_unique<std::barrier<>>(
                        std::min<unsigned>(32, nthreads - 32 * w)));
                b.warp_words.assign(nwarps * 32 * 8, 0);
                b.warp_accum.assign(nwarps * 32 * 4, 0.f);
                std::vector<std::thread> threads;
                threads.reserve(nthreads);
                for (unsigned t = 0; t < nthreads; ++t) {
                    threads.emplace_back([&, t] {
                        tl_block = &b;
                        tl_block_idx = dim3(bx, by, bz);
                        tl_thread_idx = dim3(t % block.x, (t / block.x) % block.y, t / (block.x * block.y));
                        kernel();
                    });
                }
                for (auto& th : threads) th.join();
            }
}

}  // namespace emu

// threadIdx & co. read the calling host thread's CUDA coordinates.
#define threadIdx (emu::tl_thread_idx)
#define blockIdx (emu::tl_block_idx)
#define blockDim (emu::tl_block->block_dim)
#define gridDim (emu::tl_block->grid_dim)

inline void __syncthreads() { emu::tl_block->block_barrier->arrive_and_wait(); }
// Full-mask warp barrier: the kernels only call it with all 32 lanes converged.
inline void __syncwarp(unsigned /*mask*/ = 0xffffffffu) { emu::warp_sync(); }

template <typename T>
inline T emu_shfl(T v, unsigned src_lane) {
    static_assert(sizeof(T) <= 4, "shuffle of a 32-bit value");
    uint32_t* words = &emu::tl_block->warp_words[emu::warp() * 32 * 8];
    uint32_t w = 0;
    std::memcpy(&w, &v, sizeof(T));
    words[emu::lane() * 8] = w;
    emu::warp_sync();  // every lane has published
    uint32_t got = words[(src_lane % 32) * 8];
    emu::warp_sync();  // every lane has read before anyone publishes again
    T out;
    std::memcpy(&out, &got, sizeof(T));
    return out;
}
template <typename T>
inline T __shfl_xor_sync(unsigned /*mask*/, T v, int lane_mask) { return emu_shfl(v, emu::lane() ^ lane_mask); }
template <typename T>
inline T __shfl_sync(unsigned /*mask*/, T v, int src_lane) { return emu_shfl(v, src_lane); }

// mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 for one lane: a[4], b[2] hold f16x2 (low half first),
// c[4] fp32 accumulators. Fragment placement (PTX ISA, "Matrix Fragments for mma.m16n8k16", .f16):
//   group = lane >> 2, tig = lane % 4
//   A (16x16): a_i -> row group (+8 for i in {2,3,6,7}), col 2*tig + (i & 1) (+8 for i >= 4)
//   B (16x8):  b_i -> row 2*tig + (i & 1) (+8 for i >= 2), col group
//   C/D (16x8): c_i -> row group (+8 for i >= 2), col 2*tig + (i & 1)
inline void emu_mma_m16n8k16(float d[4], const uint32_t a[4], const uint32_t b[2], const float c[4]) {
    uint32_t* words = &emu::tl_block->warp_words[emu::warp() * 32 * 8];
    const unsigned me = emu::lane();
    for (int r = 0; r < 4; ++r) words[me * 8 + r] = a[r];
    for (int r = 0; r < 2; ++r) words[me * 8 + 4 + r] = b[r];
    emu::warp_sync();
    float A[16][16], B[16][8];
    for (unsigned l = 0; l < 32; ++l) {
        const unsigned group = l >> 2, tig = l % 4;
        half h[8];
        std::memcpy(h, &words[l * 8], 8 * sizeof(half));  // a0..a7
        for (int i = 0; i < 8; ++i) {
            const unsigned row = group + ((i == 2 || i == 3 || i == 6 || i == 7) ? 8 : 0);
            const unsigned col = 2 * tig + (i & 1) + (i >= 4 ? 8 : 0);
            A[row][col] = static_cast<float>(h[i]);
        }
        half hb[4];
        std::memcpy(hb, &words[l * 8 + 4], 4 * sizeof(half));  // b0..b3
        for (int i = 0; i < 4; ++i) B[2 * tig + (i & 1) + (i >= 2 ? 8 : 0)][group] = static_cast<float>(hb[i]);
    }
    emu::warp_sync();  // all lanes have gathered before anyone's next mma overwrites the staging words
    const unsigned group = me >> 2, tig = me % 4;
    for (int i = 0; i < 4; ++i) {
        const unsigned row = group + (i >= 2 ? 8 : 0), col = 2 * tig + (i & 1);
        float acc = c[i];
        for (int k = 0; k < 16; ++k) acc += A[row][k] * B[k][col];  // products of halves are exact in fp32
        d[i] = acc;
    }
}

#define EMU_LAUNCH(kernel, grid, block, ...) emu::launch((grid), (block), [&] { kernel(__VA_ARGS__); })
