// Decode-step attention for the MiMo decoder: GQA, head_dim 128, f16 or INT8 KV cache, split-K (flash-decoding).
//
// Three launches (see edgekit_kernels.h for layouts):
//   1. append:  M-RoPE on the new k, k/v written at position seq_lens[b] (INT8: symmetric, one f32 scale per
//               token and KV head, amax / 127). One block per (batch, KV head), one thread per dim.
//   2. partial: grid (splits, kv_heads, batch). A block owns one KV head's group of G query heads (GQA: the
//               KV row is read once for all G heads) over one chunk of the context; its 4 warps take tiles of
//               32 keys in turn. Per tile: (a) scores with a quad of lanes per key (each lane 16-byte loads of a
//               quarter row, two shuffles to finish the dot products), written to shared memory; (b) one online
//               softmax update in fp32 (log2 domain) with a lane per key: one max reduction and one rescale per
//               head per 32 keys instead of per key; (c) PV with a lane per 4 dims, the weights broadcast from
//               shared memory. INT8 scales are folded into the score (K) and the weight (V), one multiply per
//               key. The 4 warps are merged in shared memory and the block writes an unnormalised partial
//               (max, sum, acc[128]) per query head.
//   3. combine: one block per (batch, query head) merges the splits' partials (the log-sum-exp merge).
// Decode is bandwidth-bound (each KV byte is used G times), so the dot products run on CUDA cores; splitting
// the context is what fills the GPU at batch 1: 8 KV heads x splits blocks instead of 8.
#include "common.cuh"
#include "edgekit_kernels.h"

namespace edgekit {

constexpr int DEC_D = 128;
constexpr int DEC_THREADS = 128;
constexpr int DEC_WARPS = DEC_THREADS / 32;

__device__ __forceinline__ float rope128(const half* x, const float* cos, const float* sin, int d) {
    const float partner = d < DEC_D / 2 ? -__half2float(x[d + DEC_D / 2]) : __half2float(x[d - DEC_D / 2]);
    return __half2float(x[d]) * cos[d] + partner * sin[d];
}

template <bool INT8>
__global__ void __launch_bounds__(DEC_THREADS)
decode_append_kernel(const half* __restrict__ k_new, const half* __restrict__ v_new, const float* __restrict__ cos,
                     const float* __restrict__ sin, void* cache_k, void* cache_v, float* scale_k, float* scale_v,
                     const int* __restrict__ seq_lens, int kv_heads, int max_ctx) {
    const int b = blockIdx.y, h = blockIdx.x, d = threadIdx.x;
    const int pos = seq_lens[b];
    const size_t src = ((size_t)b * kv_heads + h) * DEC_D;
    const size_t slot = ((size_t)b * kv_heads + h) * max_ctx + pos;
    const float k = rope128(k_new + src, cos + (size_t)b * DEC_D, sin + (size_t)b * DEC_D, d);
    const float v = __half2float(v_new[src + d]);
    if (!INT8) {
        static_cast<half*>(cache_k)[slot * DEC_D + d] = __float2half_rn(k);
        static_cast<half*>(cache_v)[slot * DEC_D + d] = __float2half_rn(v);
        return;
    }
    __shared__ float red[2][DEC_WARPS];
    const float wk = warp_max<32>(fabsf(k)), wv = warp_max<32>(fabsf(v));
    if (d % 32 == 0) red[0][d / 32] = wk, red[1][d / 32] = wv;
    __syncthreads();
    float ak = 0.f, av = 0.f;
    for (int w = 0; w < DEC_WARPS; ++w) ak = fmaxf(ak, red[0][w]), av = fmaxf(av, red[1][w]);
    const float sk = ak > 0.f ? ak / 127.f : 1.f, sv = av > 0.f ? av / 127.f : 1.f;  // all-zero row: any scale
    static_cast<int8_t*>(cache_k)[slot * DEC_D + d] = (int8_t)fmaxf(-127.f, fminf(127.f, rintf(k / sk)));
    static_cast<int8_t*>(cache_v)[slot * DEC_D + d] = (int8_t)fmaxf(-127.f, fminf(127.f, rintf(v / sv)));
    if (d == 0) scale_k[slot] = sk, scale_v[slot] = sv;
}

// Tile of keys a warp scores before one softmax update: 4 steps of 8 keys (a quad of lanes per key).
constexpr int DEC_TILE = 32;

// Min-blocks hint: 4 blocks (16 warps) per SM for G <= 4, registers capped at 128; G = 8 holds twice the
// accumulators and needs more (2 blocks). Without any hint ptxas 13.0 squeezed G = 4 into 64 registers and spilled.
template <int G, bool INT8>
__global__ void __launch_bounds__(DEC_THREADS, G > 4 ? 2 : 4)
decode_partial_kernel(const half* __restrict__ q_new, const float* __restrict__ cos, const float* __restrict__ sin,
                      const void* cache_k, const void* cache_v, const float* scale_k, const float* scale_v,
                      const int* __restrict__ seq_lens, int kv_heads, int max_ctx, float scale_log2e,
                      float* __restrict__ part_acc, float* __restrict__ part_ml) {
    constexpr int ROW_BYTES = DEC_D * (INT8 ? 1 : 2);
    constexpr int VEC = INT8 ? 16 : 8;      // elements per 16-byte vector
    constexpr int VEC_PER_LANE = DEC_D / VEC / 4;  // a quad covers one row: 4 (f16) or 2 (INT8) vectors per lane
    const int split = blockIdx.x, splits = gridDim.x, h = blockIdx.y, b = blockIdx.z;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, quad = lane >> 2, part = lane & 3;
    const int q_heads = kv_heads * G;
    const int ctx = seq_lens[b] + 1;  // the appended token included
    // chunks are whole tiles, so only a split's last tile is ragged
    const int chunk = ((ctx + splits - 1) / splits + DEC_TILE - 1) / DEC_TILE * DEC_TILE;
    const int k_begin = split * chunk, k_end = min(ctx, k_begin + chunk);

    __shared__ __align__(16) float sq[G][DEC_D];         // rotated q, pre-scaled by log2(e)/sqrt(D)
    __shared__ __align__(16) float sS[DEC_WARPS][DEC_TILE][G];  // per warp: a tile's scores, then its weights
    __shared__ float s_m[DEC_WARPS][G], s_l[DEC_WARPS][G];
    __shared__ __align__(16) float s_acc[DEC_WARPS][G][DEC_D];
    for (int i = tid; i < G * DEC_D; i += DEC_THREADS) {
        const int g = i / DEC_D, d = i % DEC_D;
        const half* q = q_new + ((size_t)b * q_heads + h * G + g) * DEC_D;
        sq[g][d] = rope128(q, cos + (size_t)b * DEC_D, sin + (size_t)b * DEC_D, d) * scale_log2e;
    }
    __syncthreads();
    float m[G], l[G], acc[G][4];  // running max (log2 domain), this lane's share of the sum, dims 4*lane..+3
#pragma unroll
    for (int g = 0; g < G; ++g) {
        m[g] = -INFINITY, l[g] = 0.f;
        acc[g][0] = acc[g][1] = acc[g][2] = acc[g][3] = 0.f;
    }
    const size_t base = ((size_t)b * kv_heads + h) * max_ctx;  // row of this (sequence, KV head)'s position 0
    const char* kbytes = static_cast<const char*>(cache_k) + base * ROW_BYTES;
    const char* vbytes = static_cast<const char*>(cache_v) + base * ROW_BYTES;
    float(*tile)[G] = sS[warp];

    for (int kt = k_begin + warp * DEC_TILE; kt < k_end; kt += DEC_WARPS * DEC_TILE) {  // warp-uniform
        // 1. scores: a quad of lanes per key, 8 keys per step; a warp step reads 8 whole rows, 16 bytes per lane
        //    per load, each load instruction covering 64 contiguous bytes per row (full 32-byte sectors)
#pragma unroll
        for (int j = 0; j < DEC_TILE / 8; ++j) {
            const int key = kt + j * 8 + quad;
            float s[G];
#pragma unroll
            for (int g = 0; g < G; ++g) s[g] = 0.f;
            if (key < k_end) {
#pragma unroll
                for (int i = 0; i < VEC_PER_LANE; ++i) {
                    const int c = 4 * i + part;  // interleaved: the quad's 4 lanes read adjacent vectors
                    const uint4 u = ld16(kbytes + (size_t)key * ROW_BYTES + 16 * c);
                    float x[VEC];
                    if constexpr (INT8) {  // raw codes: the row scale is applied once per key below
                        unpack_i8x4(u.x, x), unpack_i8x4(u.y, x + 4), unpack_i8x4(u.z, x + 8), unpack_i8x4(u.w, x + 12);
                    } else {
                        unpack_f16x8(u, x);
                    }
#pragma unroll
                    for (int g = 0; g < G; ++g)
#pragma unroll
                        for (int e4 = 0; e4 < VEC / 4; ++e4) {  // a plain fma chain per head (no mul + add trees)
                            const float4 qv = ld_float4(&sq[g][c * VEC + 4 * e4]);
                            s[g] = fmaf(qv.x, x[4 * e4], s[g]);
                            s[g] = fmaf(qv.y, x[4 * e4 + 1], s[g]);
                            s[g] = fmaf(qv.z, x[4 * e4 + 2], s[g]);
                            s[g] = fmaf(qv.w, x[4 * e4 + 3], s[g]);
                        }
                }
            }
#pragma unroll
            for (int g = 0; g < G; ++g) s[g] = warp_sum<4>(s[g]);  // the quad's partial dot products
            if (part == 0) {
                const float sk = INT8 && key < k_end ? scale_k[base + key] : 1.f;
#pragma unroll
                for (int g = 0; g < G; ++g) tile[j * 8 + quad][g] = key < k_end ? s[g] * sk : -INFINITY;
            }
        }
        __syncwarp();
        // 2. one online-softmax update per tile: lane = key; the max is one warp reduction per head per 32 keys
        {
            const int key = kt + lane;
            const float sv = INT8 ? (key < k_end ? scale_v[base + key] : 0.f) : 1.f;
#pragma unroll
            for (int g = 0; g < G; ++g) {
                const float s = tile[lane][g];
                const float m_new = fmaxf(m[g], warp_max<32>(s));  // finite: a tile holds >= 1 key
                const float corr = exp2f(m[g] - m_new), p = exp2f(s - m_new);  // masked keys: exp2(-inf) = 0
                l[g] = l[g] * corr + p;  // per-lane partial sums, reduced once after the loop
                m[g] = m_new;
                acc[g][0] *= corr, acc[g][1] *= corr, acc[g][2] *= corr, acc[g][3] *= corr;
                tile[lane][g] = p * sv;  // INT8: V's row scale folded into the weight
            }
        }
        __syncwarp();
        // 3. PV: a lane owns 4 dims, so a warp reads one whole V row per key (256 / 128 bytes, coalesced)
        const int n = min(DEC_TILE, k_end - kt);
#pragma unroll 4
        for (int j = 0; j < n; ++j) {
            float v[4];
            const char* row = vbytes + (size_t)(kt + j) * ROW_BYTES;
            if constexpr (INT8) {
                unpack_i8x4(ld32(row + 4 * lane), v);
            } else {
                const uint2 w = ld8(row + 8 * lane);
                v[0] = half_lo(w.x), v[1] = half_hi(w.x), v[2] = half_lo(w.y), v[3] = half_hi(w.y);
            }
#pragma unroll
            for (int g = 0; g < G; ++g) {
                const float p = tile[j][g];  // same address for all lanes: a broadcast
#pragma unroll
                for (int i = 0; i < 4; ++i) acc[g][i] += p * v[i];
            }
        }
        __syncwarp();  // the tile's weights are read before the next tile's scores overwrite them
    }
#pragma unroll
    for (int g = 0; g < G; ++g) {
        l[g] = warp_sum<32>(l[g]);
        if (lane == 0) s_m[warp][g] = m[g], s_l[warp][g] = l[g];
#pragma unroll
        for (int i = 0; i < 4; ++i) s_acc[warp][g][4 * lane + i] = acc[g][i];
    }
    __syncthreads();
    for (int i = tid; i < G * DEC_D; i += DEC_THREADS) {  // merge the warps: log-sum-exp weights
        const int g = i / DEC_D, d = i % DEC_D;
        float mx = -INFINITY;
        for (int w = 0; w < DEC_WARPS; ++w) mx = fmaxf(mx, s_m[w][g]);
        float sum = 0.f, a = 0.f;
        if (mx != -INFINITY) {  // an empty split (more splits than tiles) leaves -inf and zeros
            for (int w = 0; w < DEC_WARPS; ++w) {
                const float wgt = exp2f(s_m[w][g] - mx);  // a warp without keys: exp2(-inf) = 0
                sum += s_l[w][g] * wgt;
                a += s_acc[w][g][d] * wgt;
            }
        }
        const size_t p = ((size_t)b * q_heads + h * G + g) * splits + split;
        part_acc[p * DEC_D + d] = a;
        if (d == 0) part_ml[2 * p] = mx, part_ml[2 * p + 1] = sum;
    }
}

__global__ void __launch_bounds__(DEC_THREADS)
decode_combine_kernel(const float* __restrict__ part_acc, const float* __restrict__ part_ml, int splits,
                      half* __restrict__ out) {
    const int qh = blockIdx.x, d = threadIdx.x;  // qh = b * q_heads + head
    float mx = -INFINITY;
    for (int s = 0; s < splits; ++s) mx = fmaxf(mx, part_ml[2 * ((size_t)qh * splits + s)]);
    float sum = 0.f, a = 0.f;
    for (int s = 0; s < splits; ++s) {
        const size_t p = (size_t)qh * splits + s;
        const float m = part_ml[2 * p];
        if (m == -INFINITY) continue;
        const float w = exp2f(m - mx);
        sum += part_ml[2 * p + 1] * w;
        a += part_acc[p * DEC_D + d] * w;
    }
    out[(size_t)qh * DEC_D + d] = __float2half_rn(a / sum);
}

template <int G>
int launch_decode(const half* q, const float* cos, const float* sin, const void* ck, const void* cv, const float* sk,
                  const float* sv, bool int8, const int* seq_lens, int batch, int kv_heads, int max_ctx, int splits,
                  float* acc, float* ml, cudaStream_t stream) {
    const dim3 grid(splits, kv_heads, batch), block(DEC_THREADS);
    const float scale_log2e = 1.4426950408889634f / sqrtf((float)DEC_D);
    auto kernel = int8 ? decode_partial_kernel<G, true> : decode_partial_kernel<G, false>;
    EMU_LAUNCH(kernel, grid, block, q, cos, sin, ck, cv, sk, sv, seq_lens, kv_heads, max_ctx, scale_log2e, acc, ml);
    (void)stream;
    return EDGEKIT_OK;
}

}  // namespace edgekit

extern "C" size_t edgekit_decode_workspace_bytes(int batch, int q_heads, int num_splits) {
    return (size_t)batch * q_heads * num_splits * (edgekit::DEC_D + 2) * sizeof(float);
}

extern "C" int edgekit_decode_attention(const void* q_new, const void* k_new, const void* v_new, const float* cos,
                                        const float* sin, void* cache_k, void* cache_v, float* scale_k, float* scale_v,
                                        int kv_dtype, const int* seq_lens, int batch, int q_heads, int kv_heads,
                                        int max_ctx, int num_splits, void* workspace, void* out, cudaStream_t stream) {
    using namespace edgekit;
    if (batch <= 0 || kv_heads <= 0 || q_heads % kv_heads || num_splits <= 0 || max_ctx <= 0) return EDGEKIT_ERR_INVALID;
    const bool int8 = kv_dtype == EDGEKIT_KV_INT8;
    if (!int8 && kv_dtype != EDGEKIT_KV_F16) return EDGEKIT_ERR_INVALID;
    if (int8 && (!scale_k || !scale_v)) return EDGEKIT_ERR_INVALID;
    if (((uintptr_t)cache_k | (uintptr_t)cache_v) & 15) return EDGEKIT_ERR_INVALID;  // 16-byte row vector loads
    const half* q = static_cast<const half*>(q_new);
    const half* kn = static_cast<const half*>(k_new);
    const half* vn = static_cast<const half*>(v_new);
    const dim3 agrid(kv_heads, batch), block(DEC_THREADS);
    auto append = int8 ? decode_append_kernel<true> : decode_append_kernel<false>;
    EMU_LAUNCH(append, agrid, block, kn, vn, cos, sin, cache_k, cache_v, scale_k, scale_v, seq_lens, kv_heads, max_ctx);
    float* acc = static_cast<float*>(workspace);
    float* ml = acc + (size_t)batch * q_heads * num_splits * DEC_D;
    int rc;
    switch (q_heads / kv_heads) {
        case 1: rc = launch_decode<1>(q, cos, sin, cache_k, cache_v, scale_k, scale_v, int8, seq_lens, batch, kv_heads, max_ctx, num_splits, acc, ml, stream); break;
        case 2: rc = launch_decode<2>(q, cos, sin, cache_k, cache_v, scale_k, scale_v, int8, seq_lens, batch, kv_heads, max_ctx, num_splits, acc, ml, stream); break;
        case 4: rc = launch_decode<4>(q, cos, sin, cache_k, cache_v, scale_k, scale_v, int8, seq_lens, batch, kv_heads, max_ctx, num_splits, acc, ml, stream); break;
        case 8: rc = launch_decode<8>(q, cos, sin, cache_k, cache_v, scale_k, scale_v, int8, seq_lens, batch, kv_heads, max_ctx, num_splits, acc, ml, stream); break;
        default: return EDGEKIT_ERR_UNSUPPORTED;
    }
    if (rc != EDGEKIT_OK) return rc;
    EMU_LAUNCH(decode_combine_kernel, dim3(batch * q_heads), block, acc, ml, num_splits, static_cast<half*>(out));
    return launch_status(stream);
}
