// Decode-step attention for the MiMo decoder: GQA, head_dim 128, f16 or INT8 KV cache, split-K (flash-decoding).
//
// Three launches (see edgekit_kernels.h for layouts):
//   1. append:  M-RoPE on the new k, k/v written at position seq_lens[b] (INT8: symmetric, one f32 scale per
//               token and KV head, amax / 127). One block per (batch, KV head), one thread per dim.
//   2. partial: grid (splits, kv_heads, batch). A block owns one KV head's group of G query heads (GQA: the
//               KV row is read once for all G heads) over one chunk of the context. Each warp takes every 4th
//               key; a lane holds 4 consecutive dims, so a warp reads one 256-byte f16 key row in one coalesced
//               transaction (128 bytes for INT8). Scores are warp sums; the softmax is online per warp in fp32
//               (log2 domain); the 4 warps are merged in shared memory and the block writes an unnormalised
//               partial (max, sum, acc[128]) per query head.
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

// 4 consecutive dims of one cached row, as f32.
template <bool INT8>
__device__ __forceinline__ void load4(const void* cache, const float* scales, size_t row, int d0, float x[4]) {
    if (INT8) {
        const int8_t* p = static_cast<const int8_t*>(cache) + row * DEC_D + d0;
        const float s = scales[row];
#pragma unroll
        for (int i = 0; i < 4; ++i) x[i] = (float)p[i] * s;
    } else {
        const half* p = static_cast<const half*>(cache) + row * DEC_D + d0;
#pragma unroll
        for (int i = 0; i < 4; ++i) x[i] = __half2float(p[i]);
    }
}

template <int G, bool INT8>
__global__ void __launch_bounds__(DEC_THREADS)
decode_partial_kernel(const half* __restrict__ q_new, const float* __restrict__ cos, const float* __restrict__ sin,
                      const void* cache_k, const void* cache_v, const float* scale_k, const float* scale_v,
                      const int* __restrict__ seq_lens, int kv_heads, int max_ctx, float scale_log2e,
                      float* __restrict__ part_acc, float* __restrict__ part_ml) {
    const int split = blockIdx.x, splits = gridDim.x, h = blockIdx.y, b = blockIdx.z;
    const int tid = threadIdx.x, warp = tid / 32, lane = tid % 32, d0 = lane * 4;
    const int q_heads = kv_heads * G;
    const int ctx = seq_lens[b] + 1;  // the appended token included
    const int chunk = (ctx + splits - 1) / splits;
    const int k_begin = split * chunk, k_end = min(ctx, k_begin + chunk);

    __shared__ float sq[G][DEC_D];
    __shared__ float s_m[DEC_WARPS][G], s_l[DEC_WARPS][G];
    __shared__ float s_acc[DEC_WARPS][G][DEC_D];
    for (int i = tid; i < G * DEC_D; i += DEC_THREADS) {
        const int g = i / DEC_D, d = i % DEC_D;
        const half* q = q_new + ((size_t)b * q_heads + h * G + g) * DEC_D;
        sq[g][d] = rope128(q, cos + (size_t)b * DEC_D, sin + (size_t)b * DEC_D, d) * scale_log2e;
    }
    __syncthreads();
    float m[G], l[G], acc[G][4];
#pragma unroll
    for (int g = 0; g < G; ++g) {
        m[g] = -INFINITY, l[g] = 0.f;
        acc[g][0] = acc[g][1] = acc[g][2] = acc[g][3] = 0.f;
    }
    const size_t base = ((size_t)b * kv_heads + h) * max_ctx;
    for (int key = k_begin + warp; key < k_end; key += DEC_WARPS) {  // warp-uniform loop: shuffles stay converged
        float kx[4], vx[4];
        load4<INT8>(cache_k, scale_k, base + key, d0, kx);
        load4<INT8>(cache_v, scale_v, base + key, d0, vx);
        float s[G];
#pragma unroll
        for (int g = 0; g < G; ++g)
            s[g] = sq[g][d0] * kx[0] + sq[g][d0 + 1] * kx[1] + sq[g][d0 + 2] * kx[2] + sq[g][d0 + 3] * kx[3];
#pragma unroll
        for (int step = 16; step > 0; step /= 2)  // G independent butterflies, interleaved
#pragma unroll
            for (int g = 0; g < G; ++g) s[g] += __shfl_xor_sync(FULL_MASK, s[g], step);
#pragma unroll
        for (int g = 0; g < G; ++g) {
            const float m_new = fmaxf(m[g], s[g]);
            const float corr = exp2f(m[g] - m_new), p = exp2f(s[g] - m_new);
            l[g] = l[g] * corr + p;
#pragma unroll
            for (int i = 0; i < 4; ++i) acc[g][i] = acc[g][i] * corr + p * vx[i];
            m[g] = m_new;
        }
    }
#pragma unroll
    for (int g = 0; g < G; ++g) {
        if (lane == 0) s_m[warp][g] = m[g], s_l[warp][g] = l[g];
#pragma unroll
        for (int i = 0; i < 4; ++i) s_acc[warp][g][d0 + i] = acc[g][i];
    }
    __syncthreads();
    for (int i = tid; i < G * DEC_D; i += DEC_THREADS) {  // merge the warps: log-sum-exp weights
        const int g = i / DEC_D, d = i % DEC_D;
        float mx = -INFINITY;
        for (int w = 0; w < DEC_WARPS; ++w) mx = fmaxf(mx, s_m[w][g]);
        float sum = 0.f, a = 0.f;
        if (mx != -INFINITY) {  // an empty split (more splits than keys) leaves -inf and zeros
            for (int w = 0; w < DEC_WARPS; ++w) {
                const float wgt = exp2f(s_m[w][g] - mx);
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
#ifdef EDGEKIT_EMU
    (void)stream;
    return EDGEKIT_OK;
#else
    return cudaGetLastError() == cudaSuccess ? EDGEKIT_OK : EDGEKIT_ERR_LAUNCH;
#endif
}
