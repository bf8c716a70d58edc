// Fused window attention for the Qwen2.5-ViT vision tower (MiMo-Embodied): rotary + QK^T + online softmax + PV.
//
// Input  qkv [tokens, 3, heads, D] f16: the block's qkv projection output as transformers reshapes it.
//        cos, sin [tokens, D] f32: the 2-D rotary table (rotate_half convention: emb = cat(freqs, freqs)).
//        cu_windows [num_windows + 1] i32: token offsets of the windows (tokens already in window order);
//          ragged windows are fine; a full-attention block passes one window per image.
// Output out [tokens, heads * D] f16, softmax(q k^T / sqrt(D)) v per window and head.
//
// One block = 64 query rows of one window and one head, 4 warps x 16 rows. Q is rotated in fp32 (as
// transformers does) and kept in registers as mma A fragments; K (rotated) and V tiles of 64 keys go through
// shared memory; S = QK^T and O += PV are mma.m16n8k16 (f16 in, f32 accumulate); the softmax is online in
// fp32 with the row statistics reduced across the 4 lanes that share a row. P is re-packed from the S
// accumulator layout straight into the A layout of the PV mma (no shared-memory round trip). D = 80 is
// native: 5 k-steps for QK^T and 10 n-tiles for PV, no padding to 128.
//
// v1: this file. Scalar shared-memory fragment loads (no ldmatrix), no double buffering: see README.md for
// the performance model and what v2 would change.
#include "common.cuh"
#include "edgekit_kernels.h"

namespace edgekit {

constexpr int VIT_BM = 64;  // query rows per block
constexpr int VIT_BN = 64;  // keys per tile
constexpr int VIT_THREADS = 128;

template <int D>
__device__ __forceinline__ float rotary_at(const half* qkv, const float* cos, const float* sin, int t, int which,
                                           int head, int heads, int d) {
    const half* row = qkv + ((size_t)(t * 3 + which) * heads + head) * D;
    const float x = __half2float(row[d]);
    const float partner = d < D / 2 ? -__half2float(row[d + D / 2]) : __half2float(row[d - D / 2]);
    return x * cos[(size_t)t * D + d] + partner * sin[(size_t)t * D + d];
}

template <int D>
__global__ void __launch_bounds__(VIT_THREADS)
vit_window_attention_kernel(const half* __restrict__ qkv, const float* __restrict__ cos, const float* __restrict__ sin,
                            const int* __restrict__ cu_windows, int tiles_per_window, int heads, float scale_log2e,
                            half* __restrict__ out) {
    static_assert(D % 16 == 0, "head_dim must be a multiple of 16 (mma k-step)");
    constexpr int KSTEPS = D / 16;      // k-steps of QK^T
    constexpr int DTILES = D / 8;       // n-tiles of PV
    constexpr int NTILES = VIT_BN / 8;  // n-tiles of QK^T
    const int window = blockIdx.x / tiles_per_window;
    const int q0 = cu_windows[window] + (blockIdx.x % tiles_per_window) * VIT_BM;
    const int start = cu_windows[window], end = cu_windows[window + 1];
    const int head = blockIdx.y;
    if (q0 >= end) return;  // uniform per block: this window has fewer tiles than the longest one

    __shared__ half sQ[VIT_BM][D];
    __shared__ half sK[VIT_BN][D];
    __shared__ half sV[VIT_BN][D];
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, group = lane >> 2, tig = lane & 3;

    for (int i = tid; i < VIT_BM * D; i += VIT_THREADS) {
        const int r = i / D, d = i % D, t = q0 + r;
        sQ[r][d] = __float2half_rn(t < end ? rotary_at<D>(qkv, cos, sin, t, 0, head, heads, d) : 0.f);
    }
    __syncthreads();
    uint32_t qa[KSTEPS][4];  // this warp's 16 query rows as A fragments
    const int r0 = warp * 16 + group, r1 = r0 + 8;
#pragma unroll
    for (int ks = 0; ks < KSTEPS; ++ks) {
        const int c = ks * 16 + 2 * tig;
        qa[ks][0] = pack_half2(sQ[r0][c], sQ[r0][c + 1]);
        qa[ks][1] = pack_half2(sQ[r1][c], sQ[r1][c + 1]);
        qa[ks][2] = pack_half2(sQ[r0][c + 8], sQ[r0][c + 9]);
        qa[ks][3] = pack_half2(sQ[r1][c + 8], sQ[r1][c + 9]);
    }

    float o[DTILES][4];
#pragma unroll
    for (int dt = 0; dt < DTILES; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.f;
    float row_max[2] = {-INFINITY, -INFINITY};  // rows r0, r1 (log2 domain)
    float row_sum[2] = {0.f, 0.f};              // this lane's share of the row sums

    for (int k0 = start; k0 < end; k0 += VIT_BN) {
        __syncthreads();  // the previous tile is no longer read
        for (int i = tid; i < VIT_BN * D; i += VIT_THREADS) {
            const int r = i / D, d = i % D, t = k0 + r;
            const bool valid = t < end;
            sK[r][d] = __float2half_rn(valid ? rotary_at<D>(qkv, cos, sin, t, 1, head, heads, d) : 0.f);
            sV[r][d] = valid ? qkv[((size_t)(t * 3 + 2) * heads + head) * D + d] : __float2half_rn(0.f);
        }
        __syncthreads();

        float s[NTILES][4];
#pragma unroll
        for (int nt = 0; nt < NTILES; ++nt) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
            const int key = nt * 8 + group;
#pragma unroll
            for (int ks = 0; ks < KSTEPS; ++ks) {
                const int c = ks * 16 + 2 * tig;
                const uint32_t b[2] = {pack_half2(sK[key][c], sK[key][c + 1]), pack_half2(sK[key][c + 8], sK[key][c + 9])};
                mma_m16n8k16(s[nt], qa[ks], b, s[nt]);
            }
        }
        float tile_max[2] = {row_max[0], row_max[1]};
#pragma unroll
        for (int nt = 0; nt < NTILES; ++nt)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                const int key = k0 + nt * 8 + 2 * tig + (i & 1);
                s[nt][i] = key < end ? s[nt][i] * scale_log2e : -INFINITY;  // ragged window: mask the tail
                tile_max[i >> 1] = fmaxf(tile_max[i >> 1], s[nt][i]);
            }
        float corr[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            tile_max[h] = warp_max<4>(tile_max[h]);  // the 4 lanes of a quad hold one row's 8 columns per tile
            corr[h] = exp2f(row_max[h] - tile_max[h]);
            row_max[h] = tile_max[h];
            row_sum[h] *= corr[h];
        }
#pragma unroll
        for (int dt = 0; dt < DTILES; ++dt) {
            o[dt][0] *= corr[0], o[dt][1] *= corr[0];
            o[dt][2] *= corr[1], o[dt][3] *= corr[1];
        }
#pragma unroll
        for (int nt = 0; nt < NTILES; ++nt)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                s[nt][i] = exp2f(s[nt][i] - row_max[i >> 1]);
                row_sum[i >> 1] += s[nt][i];
            }
#pragma unroll
        for (int kk = 0; kk < VIT_BN / 16; ++kk) {
            // S accumulators of n-tiles 2kk, 2kk+1 are exactly the A fragment of a 16x16 P block
            const uint32_t pa[4] = {pack_half2(s[2 * kk][0], s[2 * kk][1]), pack_half2(s[2 * kk][2], s[2 * kk][3]),
                                    pack_half2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                    pack_half2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
            const int kr = kk * 16 + 2 * tig;
#pragma unroll
            for (int dt = 0; dt < DTILES; ++dt) {
                const int col = dt * 8 + group;
                const uint32_t b[2] = {pack_half2(sV[kr][col], sV[kr + 1][col]), pack_half2(sV[kr + 8][col], sV[kr + 9][col])};
                mma_m16n8k16(o[dt], pa, b, o[dt]);
            }
        }
    }
    float inv[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) inv[h] = 1.f / warp_sum<4>(row_sum[h]);
    const int rows[2] = {q0 + r0, q0 + r1};
#pragma unroll
    for (int dt = 0; dt < DTILES; ++dt)
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const int t = rows[i >> 1];
            if (t < end) out[((size_t)t * heads + head) * D + dt * 8 + 2 * tig + (i & 1)] = __float2half_rn(o[dt][i] * inv[i >> 1]);
        }
}

}  // namespace edgekit

extern "C" int edgekit_vit_window_attention(const void* qkv, const float* cos, const float* sin, const int* cu_windows,
                                            int num_windows, int max_window_tokens, int heads, int head_dim,
                                            void* out, cudaStream_t stream) {
    using namespace edgekit;
    if (num_windows <= 0 || max_window_tokens <= 0 || heads <= 0) return EDGEKIT_ERR_INVALID;
    const int tiles = (max_window_tokens + VIT_BM - 1) / VIT_BM;
    const dim3 grid(num_windows * tiles, heads), block(VIT_THREADS);
    const half* q = static_cast<const half*>(qkv);
    half* o = static_cast<half*>(out);
    switch (head_dim) {
        case 80: {  // Qwen2.5-ViT / MiMo-Embodied
            auto kernel = vit_window_attention_kernel<80>;
            EMU_LAUNCH(kernel, grid, block, q, cos, sin, cu_windows, tiles, heads, 1.4426950408889634f / sqrtf(80.f), o);
            break;
        }
        case 64: {
            auto kernel = vit_window_attention_kernel<64>;
            EMU_LAUNCH(kernel, grid, block, q, cos, sin, cu_windows, tiles, heads, 1.4426950408889634f / sqrtf(64.f), o);
            break;
        }
        default:
            return EDGEKIT_ERR_UNSUPPORTED;
    }
#ifdef EDGEKIT_EMU
    (void)stream;
    return EDGEKIT_OK;
#else
    return cudaGetLastError() == cudaSuccess ? EDGEKIT_OK : EDGEKIT_ERR_LAUNCH;
#endif
}
