/* edgekit fused attention kernels: C API for C++ hosts (TensorRT plugins, custom runtimes).
 *
 * All pointers are device pointers (host pointers in the CPU emulation build). f16 tensors are IEEE binary16.
 * qkv, cos, sin and the KV caches must be 16-byte aligned (vector loads; cudaMalloc gives 256), else
 * EDGEKIT_ERR_INVALID. The caller guarantees seq_lens[b] < max_ctx (the new token's slot exists).
 * Every function returns EDGEKIT_OK or an error code; launches are asynchronous on `stream`.
 *
 * Layouts
 *   ViT window attention (Qwen2.5-ViT, head_dim 80):
 *     qkv  [tokens, 3, heads, head_dim] f16    the qkv projection output, tokens in window order
 *     cos, sin [tokens, head_dim] f32          2-D rotary table, rotate_half convention (cat(freqs, freqs));
 *                                              only columns [0, head_dim/2) are read (the rest repeat them)
 *     cu_windows [num_windows + 1] i32         window start offsets; a full-attention block: one window per image
 *     out  [tokens, heads * head_dim] f16
 *   Decode attention (MiMo decoder, head_dim 128, GQA):
 *     q_new [batch, q_heads, 128] f16, k_new / v_new [batch, kv_heads, 128] f16   this step's projections
 *     cos, sin [batch, 128] f32                M-RoPE for the new token (sections already applied by the caller)
 *     cache_k / cache_v [batch, kv_heads, max_ctx, 128]  f16, or i8 with scale_k / scale_v [batch, kv_heads, max_ctx]
 *                                              f32 (symmetric, per token and head: x = q * scale)
 *     seq_lens [batch] i32                     tokens already in the cache; the new token goes at seq_lens[b]
 *     out [batch, q_heads, 128] f16
 */
#ifndef EDGEKIT_KERNELS_H
#define EDGEKIT_KERNELS_H

#include <stddef.h>

#ifdef EDGEKIT_EMU
typedef void* cudaStream_t;
#else
#include <cuda_runtime.h>
#endif

#ifdef __cplusplus
extern "C" {
#endif

enum { EDGEKIT_OK = 0, EDGEKIT_ERR_INVALID = 1, EDGEKIT_ERR_UNSUPPORTED = 2, EDGEKIT_ERR_LAUNCH = 3 };
enum { EDGEKIT_KV_F16 = 0, EDGEKIT_KV_INT8 = 1 };

/* Fused rotary + window attention (online softmax in f32, tensor cores m16n8k16). head_dim: 80 or 64. */
int edgekit_vit_window_attention(const void* qkv, const float* cos, const float* sin, const int* cu_windows,
                                 int num_windows, int max_window_tokens, int heads, int head_dim,
                                 void* out, cudaStream_t stream);

/* Bytes of scratch edgekit_decode_attention needs for its split-K partial results. */
size_t edgekit_decode_workspace_bytes(int batch, int q_heads, int num_splits);

/* One decode step: M-RoPE on q and k, append k/v at seq_lens[b] (quantized when kv_dtype is INT8), then
 * attention over seq_lens[b] + 1 tokens, split over num_splits chunks of the context (flash-decoding) and
 * combined by a second launch. q_heads / kv_heads must be 1, 2, 4 or 8. Does not advance seq_lens. */
int edgekit_decode_attention(const void* q_new, const void* k_new, const void* v_new, const float* cos, const float* sin,
                             void* cache_k, void* cache_v, float* scale_k, float* scale_v, int kv_dtype,
                             const int* seq_lens, int batch, int q_heads, int kv_heads, int max_ctx, int num_splits,
                             void* workspace, void* out, cudaStream_t stream);

/* Diagnostic: one warp executes one mma.m16n8k16.row.col.f32.f16.f16.f32 on the given registers, lane-major:
 * a [32][4] and b [32][2] hold f16x2 words, c and d [32][4] f32. Pins the fragment layout the kernels assume
 * (the emulator is tested against the PTX ISA table through it; on a GPU it reports the hardware's result). */
int edgekit_mma_probe(const unsigned* a, const unsigned* b, const float* c, float* d, cudaStream_t stream);

#ifdef __cplusplus
}
#endif

#endif /* EDGEKIT_KERNELS_H */
