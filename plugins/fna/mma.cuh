// Warp-level tensor-core tiles: mma.sync m16n8k16 (fp16 or bf16 inputs, fp32 accumulators).
//
// Per-lane fragment layout (PTX ISA, "Matrix Fragments for mma.m16n8k16 with floating point
// type"); g = lane / 4 (group), t = lane % 4 (thread in group); a 32-bit register holds two
// 16-bit elements, the lower column (A) or row (B) in the low half:
//   A (16x16, row-major)  a0: A[g][2t..2t+1]     a1: A[g+8][2t..2t+1]
//                         a2: A[g][2t+8..2t+9]   a3: A[g+8][2t+8..2t+9]
//   B (16x8, "col")       b0: B[2t..2t+1][g]     b1: B[2t+8..2t+9][g]
//   C, D (16x8, fp32)     c0, c1: D[g][2t], D[g][2t+1]      c2, c3: D[g+8][2t], D[g+8][2t+1]
//
// On sm_80 and newer this is one `mma.sync` instruction. Everywhere else (older GPUs, and the
// host compile of the CPU emulator in plugins/cpp_tests/emu) a portable version computes the SAME
// per-lane result: each lane gathers the A rows and B columns it needs from the lanes that hold
// them, with warp shuffles, so a kernel that fills its fragments wrongly gives wrong numbers in
// the emulator too. All 32 lanes of the warp must call it (warp-uniform control flow), with a
// one-dimensional block (lane = threadIdx.x % 32).
#pragma once

#include "cuda_common.cuh"

namespace fna {
namespace cuda {

template <typename T> struct Raw16;
template <> struct Raw16<__half> { using type = __half_raw; };
template <> struct Raw16<__nv_bfloat16> { using type = __nv_bfloat16_raw; };

template <typename T>
__device__ __forceinline__ uint16_t bits_of(T x) {
    typename Raw16<T>::type r = x;
    return r.x;
}
template <typename T>
__device__ __forceinline__ T from_bits(uint16_t b) {
    typename Raw16<T>::type r;
    r.x = b;
    return T(r);
}
// Two 16-bit elements in one register, `lo` in the low half (the lower row/column index).
template <typename T>
__device__ __forceinline__ uint32_t pack2(T lo, T hi) {
    return static_cast<uint32_t>(bits_of(lo)) | (static_cast<uint32_t>(bits_of(hi)) << 16);
}
template <typename T>
__device__ __forceinline__ uint32_t pack2f(float lo, float hi) {
    return pack2<T>(from_float<T>(lo), from_float<T>(hi));
}
template <typename T>
__device__ __forceinline__ float lo_f(uint32_t r) { return to_float(from_bits<T>(static_cast<uint16_t>(r & 0xffffu))); }
template <typename T>
__device__ __forceinline__ float hi_f(uint32_t r) { return to_float(from_bits<T>(static_cast<uint16_t>(r >> 16))); }

// A 32-bit load of two consecutive 16-bit elements (4-byte aligned address).
template <typename T>
__device__ __forceinline__ uint32_t ld32(const T* p) { return *reinterpret_cast<const uint32_t*>(p); }

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
template <typename T> __device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]);
template <>
__device__ __forceinline__ void mma_16816<__half>(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
template <>
__device__ __forceinline__ void mma_16816<__nv_bfloat16>(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#else
// Portable: lane (g, t) computes D[g][2t..2t+1] and D[g+8][2t..2t+1]. It needs A rows g and g+8
// (held by lanes 4g..4g+3) and B columns 2t, 2t+1 (held by lanes 8t..8t+3 and 8t+4..8t+7);
// source lane s of a group holds the k indices 2s, 2s+1, 2s+8, 2s+9.
template <typename T>
__device__ __forceinline__ void mma_16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
    const int lane = static_cast<int>(threadIdx.x) & 31, g = lane >> 2, t = lane & 3;
    const unsigned long long a01 = a[0] | (static_cast<unsigned long long>(a[1]) << 32);
    const unsigned long long a23 = a[2] | (static_cast<unsigned long long>(a[3]) << 32);
    const unsigned long long b01 = b[0] | (static_cast<unsigned long long>(b[1]) << 32);
    float acc[4] = {d[0], d[1], d[2], d[3]};
    for (int s = 0; s < 4; ++s) {
        const unsigned long long x01 = __shfl_sync(0xffffffffu, a01, 4 * g + s);
        const unsigned long long x23 = __shfl_sync(0xffffffffu, a23, 4 * g + s);
        const unsigned long long c0 = __shfl_sync(0xffffffffu, b01, 8 * t + s);      // column 2t
        const unsigned long long c1 = __shfl_sync(0xffffffffu, b01, 8 * t + 4 + s);  // column 2t + 1
        const uint32_t r_a0 = static_cast<uint32_t>(x01), r_a1 = static_cast<uint32_t>(x01 >> 32);
        const uint32_t r_a2 = static_cast<uint32_t>(x23), r_a3 = static_cast<uint32_t>(x23 >> 32);
        // row g: k = 2s, 2s+1 from a0, k = 2s+8, 2s+9 from a2; row g+8 likewise from a1, a3
        const float ag[4] = {lo_f<T>(r_a0), hi_f<T>(r_a0), lo_f<T>(r_a2), hi_f<T>(r_a2)};
        const float ag8[4] = {lo_f<T>(r_a1), hi_f<T>(r_a1), lo_f<T>(r_a3), hi_f<T>(r_a3)};
        const uint32_t c0lo = static_cast<uint32_t>(c0), c0hi = static_cast<uint32_t>(c0 >> 32);
        const uint32_t c1lo = static_cast<uint32_t>(c1), c1hi = static_cast<uint32_t>(c1 >> 32);
        const float b0[4] = {lo_f<T>(c0lo), hi_f<T>(c0lo), lo_f<T>(c0hi), hi_f<T>(c0hi)};
        const float b1[4] = {lo_f<T>(c1lo), hi_f<T>(c1lo), lo_f<T>(c1hi), hi_f<T>(c1hi)};
        for (int i = 0; i < 4; ++i) {
            acc[0] += ag[i] * b0[i];
            acc[1] += ag[i] * b1[i];
            acc[2] += ag8[i] * b0[i];
            acc[3] += ag8[i] * b1[i];
        }
    }
    for (int i = 0; i < 4; ++i) d[i] = acc[i];
}
#endif

}  // namespace cuda
}  // namespace fna
