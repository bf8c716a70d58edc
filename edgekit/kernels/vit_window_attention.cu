// Fused window attention for the Qwen2.5-ViT vision tower (MiMo-Embodied): rotary + QK^T + online softmax + PV.
//
// Input  qkv [tokens, 3, heads, D] f16: the block's qkv projection output as transformers reshapes it.
//        cos, sin [tokens, D] f32: the 2-D rotary table in the rotate_half convention (emb = cat(freqs, freqs),
//          freqs = [h * inv_freq, w * inv_freq] for the patch's row h and column w), i.e. exactly the
//          (cos, sin) = position_embeddings transformers passes to each vision block. Columns [D/2, D) repeat
//          [0, D/2) in that convention; the kernel reads only the first half.
//        cu_windows [num_windows + 1] i32: token offsets of the windows (tokens already in window order, as after
//          transformers' window_index permutation); ragged windows are fine; a full-attention block passes one
//          window per image (the cu_seqlens of that block).
// Output out [tokens, heads * D] f16, softmax(q k^T / sqrt(D)) v per window and head.
//
// One block = 64 query rows of one window and one head, 4 warps x 16 rows. Tiles are filled with 16-byte loads:
// a thread takes 8 consecutive dims of a row plus the 8 dims rotate_half pairs them with (D/2 = 40 is a multiple
// of 8) and writes both rotated chunks, in fp32 as transformers does; only the first D/2 table columns are read. Q is then held in registers as mma A fragments; rotated K
// (row-major) and V (transposed) tiles of 64 keys go through shared memory with padded rows, so every B fragment
// is one conflict-free 32-bit shared load. S = QK^T and O += PV are mma.m16n8k16 (f16 in, f32 accumulate); the
// softmax is online in fp32 (log2 domain), row statistics reduced across the 4 lanes that share a row. P is
// re-packed from the S accumulator layout straight into the A layout of the PV mma (no shared-memory round trip).
// D = 80 is native: 5 k-steps for QK^T and 10 n-tiles for PV, no padding to 128.
#include "common.cuh"
#include "edgekit_kernels.h"

namespace edgekit {

constexpr int VIT_BM = 64;  // query rows per block (4 warps x 16)
constexpr int VIT_BN = 64;  // keys per tile
constexpr int VIT_THREADS = 128;

__device__ __forceinline__ const half* token_row(const half* qkv, int t, int which, int head, int heads, int d) {
    return qkv + ((size_t)(t * 3 + which) * heads + head) * d;
}

// Dims [8c, 8c+8) and [8c+D/2, 8c+D/2+8) of one rotated row (c < D/16), from the same four loads: with
// x1 = x[8c..], x2 = x[8c+D/2..] and rotate_half(x) = cat(-x[D/2:], x[:D/2]), out1 = x1*cos - x2*sin and
// out2 = x2*cos + x1*sin, since the table is cat(freqs, freqs) (its second half repeats the first, never read).
template <int D>
__device__ __forceinline__ void rotary_pair(const half* row, const float* cs, const float* sn, int c, float lo[8],
                                            float hi[8]) {
    float x1[8], x2[8];
    unpack_f16x8(ld16(row + 8 * c), x1);
    unpack_f16x8(ld16(row + 8 * c + D / 2), x2);
    const float4 c0 = ld_float4(cs + 8 * c), c1 = ld_float4(cs + 8 * c + 4);
    const float4 s0 = ld_float4(sn + 8 * c), s1 = ld_float4(sn + 8 * c + 4);
    const float cv[8] = {c0.x, c0.y, c0.z, c0.w, c1.x, c1.y, c1.z, c1.w};
    const float sv[8] = {s0.x, s0.y, s0.z, s0.w, s1.x, s1.y, s1.z, s1.w};
#pragma unroll
    for (int e = 0; e < 8; ++e) {
        lo[e] = x1[e] * cv[e] - x2[e] * sv[e];
        hi[e] = x2[e] * cv[e] + x1[e] * sv[e];
    }
}

// Rotated rows [t0, t0 + 64) of q (which = 0) or k (which = 1) into a padded shared tile; rows past `end` are zeros.
template <int D, int LD>
__device__ __forceinline__ void fill_rotated(half* tile, const half* qkv, const float* cos, const float* sin, int t0,
                                             int end, int which, int head, int heads) {
    constexpr int PAIRS = D / 16;  // chunk pairs per row
    for (int i = threadIdx.x; i < 64 * PAIRS; i += VIT_THREADS) {
        const int r = i / PAIRS, c = i % PAIRS, t = t0 + r;  // pair-fastest: a warp reads whole 160-byte rows
        float lo[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f}, hi[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
        if (t < end) rotary_pair<D>(token_row(qkv, t, which, head, heads, D), cos + (size_t)t * D, sin + (size_t)t * D, c, lo, hi);
        st16(&tile[r * LD + 8 * c], pack_f16x8(lo));
        st16(&tile[r * LD + 8 * c + D / 2], pack_f16x8(hi));
    }
}

template <int D>
__global__ void __launch_bounds__(VIT_THREADS)
vit_window_attention_kernel(const half* __restrict__ qkv, const float* __restrict__ cos, const float* __restrict__ sin,
                            const int* __restrict__ cu_windows, int tiles_per_window, int heads, bool heads_fastest,
                            float scale_log2e, half* __restrict__ out) {
    static_assert(D % 16 == 0, "head_dim must be a multiple of 16 (mma k-step; rotate_half halves of whole chunks)");
    constexpr int KSTEPS = D / 16;      // k-steps of QK^T
    constexpr int DTILES = D / 8;       // n-tiles of PV
    constexpr int NTILES = VIT_BN / 8;  // n-tiles of QK^T
    constexpr int CH = D / 8;           // 16-byte chunks per row
    static_assert(VIT_BM == 64 && VIT_BN == 64, "fill_rotated writes 64-row tiles");
    // Padded row strides (in halves). 16-byte aligned rows for the vector stores; a stride of 4 (mod 32) or 12
    // (mod 32) words puts the 8 rows x 4 columns a fragment load touches into 32 distinct banks.
    constexpr int LDK = D + 8;
    constexpr int LDV = VIT_BN + 8;
    static_assert((LDK * 2) % 16 == 0 && (LDV * 2) % 16 == 0, "rows must stay 16-byte aligned");

    // Block order (see the launcher): window blocks run a window's heads side by side (they share its cos/sin and
    // token rows in L2); full attention runs a head's query tiles side by side (they share its K and V in L2).
    const int tile_id = heads_fastest ? blockIdx.y : blockIdx.x, head = heads_fastest ? blockIdx.x : blockIdx.y;
    const int window = tile_id / tiles_per_window;
    const int start = cu_windows[window], end = cu_windows[window + 1];
    const int q0 = start + (tile_id % tiles_per_window) * VIT_BM;
    if (q0 >= end) return;  // uniform per block: this window has fewer tiles than the longest one

    // sQK holds the rotated Q tile first, then (after its fragments are in registers) each rotated K tile.
    __shared__ __align__(16) half sQK[VIT_BM * LDK];
    __shared__ __align__(16) half sVt[D * LDV];  // V transposed: sVt[dim][key]
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, group = lane >> 2, tig = lane & 3;

    fill_rotated<D, LDK>(sQK, qkv, cos, sin, q0, end, 0, head, heads);
    __syncthreads();
    uint32_t qa[KSTEPS][4];  // this warp's 16 query rows as A fragments
    const int r0 = warp * 16 + group, r1 = r0 + 8;
#pragma unroll
    for (int ks = 0; ks < KSTEPS; ++ks) {
        const int c = ks * 16 + 2 * tig;
        qa[ks][0] = ld32(&sQK[r0 * LDK + c]);
        qa[ks][1] = ld32(&sQK[r1 * LDK + c]);
        qa[ks][2] = ld32(&sQK[r0 * LDK + c + 8]);
        qa[ks][3] = ld32(&sQK[r1 * LDK + c + 8]);
    }

    float o[DTILES][4];
#pragma unroll
    for (int dt = 0; dt < DTILES; ++dt) o[dt][0] = o[dt][1] = o[dt][2] = o[dt][3] = 0.f;
    float row_max[2] = {-INFINITY, -INFINITY};  // rows r0, r1 (log2 domain)
    float row_sum[2] = {0.f, 0.f};              // this lane's share of the row sums

    for (int k0 = start; k0 < end; k0 += VIT_BN) {
        __syncthreads();  // the Q tile / previous K and V tiles are no longer read
        fill_rotated<D, LDK>(sQK, qkv, cos, sin, k0, end, 1, head, heads);  // keys past the window: zeros, masked below
        for (int i = tid; i < VIT_BN * CH; i += VIT_THREADS) {
            // key-fastest: the 32 lanes' transposed 16-bit stores land in 16 consecutive words (no bank conflict)
            const int r = i % VIT_BN, c = i / VIT_BN, t = k0 + r;
            uint4 v = {0u, 0u, 0u, 0u};  // zeros, not garbage, past the window: 0 * NaN would poison O
            if (t < end) v = ld16(token_row(qkv, t, 2, head, heads, D) + 8 * c);
            const uint32_t w[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
            for (int j = 0; j < 4; ++j) {
                sVt[(8 * c + 2 * j) * LDV + r] = __ushort_as_half((unsigned short)(w[j] & 0xffffu));
                sVt[(8 * c + 2 * j + 1) * LDV + r] = __ushort_as_half((unsigned short)(w[j] >> 16));
            }
        }
        __syncthreads();

        float s[NTILES][4];
#pragma unroll
        for (int nt = 0; nt < NTILES; ++nt) {
            s[nt][0] = s[nt][1] = s[nt][2] = s[nt][3] = 0.f;
            const half* krow = &sQK[(nt * 8 + group) * LDK + 2 * tig];  // B[k][n] = K[key n][dim k]
#pragma unroll
            for (int ks = 0; ks < KSTEPS; ++ks) {
                const uint32_t b[2] = {ld32(krow + ks * 16), ld32(krow + ks * 16 + 8)};
                mma_m16n8k16(s[nt], qa[ks], b, s[nt]);
            }
        }
        const bool ragged = k0 + VIT_BN > end;  // only the window's last tile has keys to mask
        float tile_max[2] = {row_max[0], row_max[1]};
#pragma unroll
        for (int nt = 0; nt < NTILES; ++nt)
#pragma unroll
            for (int i = 0; i < 4; ++i) {
                s[nt][i] *= scale_log2e;
                if (ragged && k0 + nt * 8 + 2 * tig + (i & 1) >= end) s[nt][i] = -INFINITY;
                tile_max[i >> 1] = fmaxf(tile_max[i >> 1], s[nt][i]);
            }
        float corr[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            tile_max[h] = warp_max<4>(tile_max[h]);  // the 4 lanes of a quad hold one row's 8 columns per tile
            corr[h] = exp2f(row_max[h] - tile_max[h]);  // first tile: exp2(-inf) = 0; tile_max is finite (>= 1 key)
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
            // S accumulators of n-tiles 2kk, 2kk+1 are exactly the A fragment of the 16x16 P block of keys 16kk..
            const uint32_t pa[4] = {pack_half2(s[2 * kk][0], s[2 * kk][1]), pack_half2(s[2 * kk][2], s[2 * kk][3]),
                                    pack_half2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                                    pack_half2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
            const half* vcol = &sVt[group * LDV + kk * 16 + 2 * tig];  // B[k][n] = V[key k][dim n] = sVt[n][k]
#pragma unroll
            for (int dt = 0; dt < DTILES; ++dt) {
                const uint32_t b[2] = {ld32(vcol + dt * 8 * LDV), ld32(vcol + dt * 8 * LDV + 8)};
                mma_m16n8k16(o[dt], pa, b, o[dt]);
            }
        }
    }
    float inv[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) inv[h] = 1.f / warp_sum<4>(row_sum[h]);
    const int rows[2] = {q0 + r0, q0 + r1};
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        if (rows[h] >= end) continue;
        half* dst = out + ((size_t)rows[h] * heads + head) * D + 2 * tig;
#pragma unroll
        for (int dt = 0; dt < DTILES; ++dt) st32(dst + dt * 8, pack_half2(o[dt][2 * h] * inv[h], o[dt][2 * h + 1] * inv[h]));
    }
}

}  // namespace edgekit

extern "C" int edgekit_vit_window_attention(const void* qkv, const float* cos, const float* sin, const int* cu_windows,
                                            int num_windows, int max_window_tokens, int heads, int head_dim,
                                            void* out, cudaStream_t stream) {
    using namespace edgekit;
    if (num_windows <= 0 || max_window_tokens <= 0 || heads <= 0) return EDGEKIT_ERR_INVALID;
    // 16-byte vector loads of qkv and the table, 32-bit stores of out
    if ((((uintptr_t)qkv | (uintptr_t)cos | (uintptr_t)sin) & 15) || ((uintptr_t)out & 3)) return EDGEKIT_ERR_INVALID;
    const int tiles = (max_window_tokens + VIT_BM - 1) / VIT_BM;
    // One query tile per window (the 64-token window blocks): heads vary fastest. Several (full attention): tiles do.
    const bool heads_fastest = tiles == 1;
    const long rows = (long)num_windows * tiles;
    if (rows > 65535 && heads_fastest) return EDGEKIT_ERR_UNSUPPORTED;  // gridDim.y limit; split the call
    const dim3 grid = heads_fastest ? dim3(heads, (unsigned)rows) : dim3((unsigned)rows, heads), block(VIT_THREADS);
    const half* q = static_cast<const half*>(qkv);
    half* o = static_cast<half*>(out);
    switch (head_dim) {
        case 80: {  // Qwen2.5-ViT / MiMo-Embodied
            auto kernel = vit_window_attention_kernel<80>;
            EMU_LAUNCH(kernel, grid, block, q, cos, sin, cu_windows, tiles, heads, heads_fastest, 1.4426950408889634f / sqrtf(80.f), o);
            break;
        }
        case 64: {
            auto kernel = vit_window_attention_kernel<64>;
            EMU_LAUNCH(kernel, grid, block, q, cos, sin, cu_windows, tiles, heads, heads_fastest, 1.4426950408889634f / sqrtf(64.f), o);
            break;
        }
        default:
            return EDGEKIT_ERR_UNSUPPORTED;
    }
    return launch_status(stream);
}
