// One mma.m16n8k16 on raw per-lane registers: a diagnostic that pins down the fragment layout the kernels rely on.
// The emulation build's answer is checked in tests/test_kernels.py against a transcription of the PTX ISA table
// written independently in Python; run on a GPU, the same entry point gives the hardware's answer to compare.
#include "common.cuh"
#include "edgekit_kernels.h"

namespace edgekit {

__global__ void mma_probe_kernel(const uint32_t* a, const uint32_t* b, const float* c, float* d) {
    const int lane = threadIdx.x;
    const uint32_t ra[4] = {a[4 * lane], a[4 * lane + 1], a[4 * lane + 2], a[4 * lane + 3]};
    const uint32_t rb[2] = {b[2 * lane], b[2 * lane + 1]};
    const float rc[4] = {c[4 * lane], c[4 * lane + 1], c[4 * lane + 2], c[4 * lane + 3]};
    float rd[4];
    mma_m16n8k16(rd, ra, rb, rc);
    for (int i = 0; i < 4; ++i) d[4 * lane + i] = rd[i];
}

}  // namespace edgekit

extern "C" int edgekit_mma_probe(const unsigned* a, const unsigned* b, const float* c, float* d, cudaStream_t stream) {
    using namespace edgekit;
    const uint32_t* pa = a;
    const uint32_t* pb = b;
    EMU_LAUNCH(mma_probe_kernel, dim3(1), dim3(32), pa, pb, c, d);
    return launch_status(stream);
}
