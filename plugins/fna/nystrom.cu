// NystromAttention on the GPU. All products accumulate in fp32; the m x m system is fp32.
//
//   Bv  = softmax(s qp k^T) v       landmark queries over all N keys, split over N; fp16/bf16 on
//                                   tensor cores (tc_attention_kernel), fp32 (and head dims > 128)
//                                   on CUDA cores (attention_kernel). Per split a partial
//                                   (max, sum, acc) per row, parked in the OUTPUT tensor (written
//                                   only by the last kernel), merged by the system kernel.
//   A   = softmax(s qp kp^T)        \
//   Z   = pinv(A), Newton-Schulz     > system_kernel: one CTA per (b, h), one launch for all of it
//   W   = Z Bv                      /  (m <= kNystromFusedMaxLandmarks); larger m: the multi-launch
//                                      path (probs_kernel, z0_kernel, batched_matmul)
//   out = softmax(s q kp^T) W       all N queries over the m landmark keys, same two kernels as Bv
//
// Three launches in all for m <= 256. Workspace layout: fna::nystrom_layout (fna_logic.cpp),
// shared with the sizing function; no allocation and no host synchronisation here.
#include <cfloat>

#include "cuda_common.cuh"
#include "kernels.h"
#include "mma.cuh"

namespace fna {
namespace cuda {
namespace {

// ---------------------------------------------------------------------------------------------
// CUDA-core attention (fp32 I/O, and any dtype with head dims > 128)
// ---------------------------------------------------------------------------------------------
constexpr int kWarpsPerCta = 8;
constexpr int kRowsPerWarp = 4;  // each warp streams the key tiles for 4 query rows (tile reuse)
constexpr int kRowsPerCta = kWarpsPerCta * kRowsPerWarp;
constexpr int kAttnThreads = kWarpsPerCta * 32;
constexpr int kTile = 32;  // keys per shared-memory tile

struct AttnArgs {
    const void* q;        // [BH, N, d]
    const void* k;        // [BH, N, d]
    const void* v;        // v_local ? [BH, m, dv] fp32 : [BH, N, dv]
    void* out;            // [BH, nq, dv]  (nsplit == 1)
    float* part;          // [BH, nsplit, nq, dv + 2]  (nsplit > 1)
    const int32_t* idx;   // [B, m]
    int H, N, d, dv, m;
    int nq, nk;           // query rows, keys
    int q_gather, k_gather, v_local;
    int nsplit, keys_per_split, qtiles;  // grid.x = BH * qtiles (no 65535 limit), grid.y = nsplit
    float scale;
};

__device__ __forceinline__ int gather_row(const int32_t* idx, int b, int m, int r, bool gather) {
    return gather ? idx[static_cast<int64_t>(b) * m + r] : r;
}

// Softmax attention of nq query rows over nk keys for one (b, h) and one key split. The CTA
// stages 32-key tiles of K and V in shared memory; each warp owns kRowsPerWarp query rows, lane j
// scores key j of the tile for all of them, and the rows' running (max, sum, acc) live in registers.
template <typename T, typename TV, typename TO, int NV>
__global__ void __launch_bounds__(kAttnThreads) attention_kernel(AttnArgs p) {
    extern __shared__ float smem[];
    const int d = p.d, dv = p.dv;
    float* s_q = smem;                              // [kRowsPerCta][d]
    float* s_k = s_q + kRowsPerCta * d;             // [kTile][d + 1]
    float* s_v = s_k + kTile * (d + 1);             // [kTile][dv]

    const int bh = blockIdx.x / p.qtiles, qt = blockIdx.x - bh * p.qtiles, b = bh / p.H, split = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int row0 = qt * kRowsPerCta + warp * kRowsPerWarp;  // this warp's first row
    const bool warp_active = row0 < p.nq;
    const T* q = static_cast<const T*>(p.q) + static_cast<int64_t>(bh) * p.N * d;
    const T* k = static_cast<const T*>(p.k) + static_cast<int64_t>(bh) * p.N * d;
    const TV* v = static_cast<const TV*>(p.v) + static_cast<int64_t>(bh) * (p.v_local ? p.m : p.N) * dv;

#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
        const int row = row0 + r;
        float* dst = s_q + (warp * kRowsPerWarp + r) * d;
        if (row < p.nq) {
            const int qr = gather_row(p.idx, b, p.m, row, p.q_gather);
            for (int c = lane; c < d; c += 32) dst[c] = to_float(q[static_cast<int64_t>(qr) * d + c]) * p.scale;
        } else {
            for (int c = lane; c < d; c += 32) dst[c] = 0.f;
        }
    }
    const int k_begin = split * p.keys_per_split;
    const int k_end = min(p.nk, k_begin + p.keys_per_split);

    float m_run[kRowsPerWarp], l_run[kRowsPerWarp], acc[kRowsPerWarp][NV];
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
        m_run[r] = -INFINITY;
        l_run[r] = 0.f;
#pragma unroll
        for (int c = 0; c < NV; ++c) acc[r][c] = 0.f;
    }

    for (int kt = k_begin; kt < k_end; kt += kTile) {
        __syncthreads();  // previous tile consumed (and s_q written before the first)
        for (int e = threadIdx.x; e < kTile * d; e += kAttnThreads) {
            const int j = e / d, c = e - j * d, key = kt + j;
            float val = 0.f;
            if (key < k_end) val = to_float(k[static_cast<int64_t>(gather_row(p.idx, b, p.m, key, p.k_gather)) * d + c]);
            s_k[j * (d + 1) + c] = val;
        }
        for (int e = threadIdx.x; e < kTile * dv; e += kAttnThreads) {
            const int j = e / dv, c = e - j * dv, key = kt + j;
            float val = 0.f;
            if (key < k_end) {
                const int vr = p.v_local ? key : gather_row(p.idx, b, p.m, key, p.k_gather);
                val = to_float(v[static_cast<int64_t>(vr) * dv + c]);
            }
            s_v[j * dv + c] = val;
        }
        __syncthreads();
        if (!warp_active) continue;
        // lane j scores key kt + j against the warp's rows
        float dot[kRowsPerWarp];
#pragma unroll
        for (int r = 0; r < kRowsPerWarp; ++r) dot[r] = 0.f;
        const bool key_ok = kt + lane < k_end;
        if (key_ok) {
            const float* kr = s_k + lane * (d + 1);
            const float* qw = s_q + warp * kRowsPerWarp * d;
            for (int c = 0; c < d; ++c) {
                const float kv = kr[c];
#pragma unroll
                for (int r = 0; r < kRowsPerWarp; ++r) dot[r] += qw[r * d + c] * kv;
            }
        }
        float pj[kRowsPerWarp];
#pragma unroll
        for (int r = 0; r < kRowsPerWarp; ++r) {
            const float logit = (key_ok && row0 + r < p.nq) ? dot[r] : -INFINITY;
            const float m_new = fmaxf(m_run[r], warp_max(logit));
            const float corr = m_run[r] == -INFINITY ? 0.f : __expf(m_run[r] - m_new);
            pj[r] = logit == -INFINITY ? 0.f : __expf(logit - m_new);
            l_run[r] = l_run[r] * corr + warp_sum(pj[r]);
            m_run[r] = m_new;
#pragma unroll
            for (int c = 0; c < NV; ++c) acc[r][c] *= corr;
        }
        const int nkeys = min(kTile, k_end - kt);
        for (int j = 0; j < nkeys; ++j) {
            float w[kRowsPerWarp];
#pragma unroll
            for (int r = 0; r < kRowsPerWarp; ++r) w[r] = __shfl_sync(0xffffffffu, pj[r], j);
#pragma unroll
            for (int c = 0; c < NV; ++c) {
                const int col = lane + 32 * c;
                if (col < dv) {
                    const float vv = s_v[j * dv + col];
#pragma unroll
                    for (int r = 0; r < kRowsPerWarp; ++r) acc[r][c] += w[r] * vv;
                }
            }
        }
    }
    if (!warp_active) return;
#pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
        const int row = row0 + r;
        if (row >= p.nq) break;
        if (p.nsplit == 1) {
            TO* out = static_cast<TO*>(p.out) + (static_cast<int64_t>(bh) * p.nq + row) * dv;
            const float inv = l_run[r] > 0.f ? 1.f / l_run[r] : 0.f;
#pragma unroll
            for (int c = 0; c < NV; ++c) {
                const int col = lane + 32 * c;
                if (col < dv) out[col] = from_float<TO>(acc[r][c] * inv);
            }
        } else {
            float* part = p.part + ((static_cast<int64_t>(bh) * p.nsplit + split) * p.nq + row) * (dv + 2);
            if (lane == 0) { part[0] = m_run[r]; part[1] = l_run[r]; }
#pragma unroll
            for (int c = 0; c < NV; ++c) {
                const int col = lane + 32 * c;
                if (col < dv) part[2 + col] = acc[r][c];
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Tensor-core attention (fp16 / bf16 I/O, head dims <= 128): flash-attention-2 style
// ---------------------------------------------------------------------------------------------
// A CTA of 4 warps owns 64 query rows (16 per warp, the M of one m16n8k16 tile) and streams
// 64-key tiles of K and V through shared memory. Per tile and warp: S = Q K^T as 8 n-tiles of 8
// keys (Q fragments stay in registers for the whole CTA), online softmax on the accumulator
// fragments (a row lives in the 4 lanes of a group: two xor-shuffles reduce it), then the
// probabilities are re-packed in registers as the A fragments of O += P V (the C layout of two
// adjacent n-tiles is exactly the A layout of one k-step). V is stored transposed so that both B
// operands are single 32-bit shared-memory loads; rows are padded by 16 bytes so that the 32
// lanes of a fragment load hit 32 different banks.
constexpr int kTcWarps = 4;
constexpr int kTcRows = 16 * kTcWarps;  // query rows per CTA
constexpr int kTcKeys = 64;             // keys per shared-memory tile
constexpr int kTcThreads = 32 * kTcWarps;
constexpr float kLn2 = 0.6931471805599453f;
constexpr float kLog2e = 1.4426950408889634f;

enum TcMode : int { kToOut = 0, kToBv = 1, kToPartials = 2 };

struct TcArgs {
    const void* q;          // [BH, N, d]
    const void* k;          // [BH, N, d]
    const void* v;          // v_local ? W [BH, m, dv] : v [BH, N, dv]; all of type T
    void* out;              // kToOut: [BH, nq, dv] of T
    float* bv;              // kToBv: [BH, nq, dv] fp32
    float* part;            // kToPartials: [BH, nsplit, nq, dv + 2] fp32 (natural-log max, sum, acc)
    const int32_t* idx;     // [B, m]
    int H, N, d, dv, m;
    int nq, nk;             // query rows, keys
    int q_gather, k_gather, v_local, mode;
    int vec_q, vec_k, vec_v;  // 16-byte row loads allowed (row length % 8 == 0, aligned base)
    int nsplit, keys_per_split, qtiles;  // grid.x = BH * qtiles, grid.y = nsplit
    float scale_log2;       // scale * log2(e): the softmax runs on exp2
};

// Rows of a [*, cols] matrix into shared memory [rows][ld] (row-major, or transposed [col][ld]
// when TRANSPOSE), zero where row_of(r) < 0 or col >= cols, up to `width` columns (a multiple of 8).
template <typename T, bool TRANSPOSE, typename RowOf>
__device__ __forceinline__ void load_tile(T* dst, int ld, int rows, int width, const T* src, int cols, bool vec, RowOf row_of) {
    const T zero = from_float<T>(0.f);
    if (vec) {
        const int chunks = width / 8;
        for (int e = threadIdx.x; e < rows * chunks; e += kTcThreads) {
            const int r = e / chunks, c = (e - r * chunks) * 8;
            const int64_t gr = row_of(r);
            uint4 val = make_uint4(0u, 0u, 0u, 0u);
            if (gr >= 0 && c < cols) val = *reinterpret_cast<const uint4*>(src + gr * cols + c);
            if (TRANSPOSE) {
                T x[8];
                memcpy(x, &val, sizeof(x));  // not a pointer cast: that would break strict aliasing
#pragma unroll
                for (int i = 0; i < 8; ++i) dst[(c + i) * ld + r] = x[i];
            } else {
                *reinterpret_cast<uint4*>(dst + r * ld + c) = val;
            }
        }
    } else {
        for (int e = threadIdx.x; e < rows * width; e += kTcThreads) {
            const int r = e / width, c = e - r * width;
            const int64_t gr = row_of(r);
            const T val = (gr >= 0 && c < cols) ? src[gr * cols + c] : zero;
            dst[TRANSPOSE ? c * ld + r : r * ld + c] = val;
        }
    }
}

template <typename T, int D>
__global__ void __launch_bounds__(kTcThreads) tc_attention_kernel(TcArgs p) {
    extern __shared__ float smem[];
    constexpr int LQ = D + 8;        // row stride (elements) of the Q and K tiles
    constexpr int LV = kTcKeys + 8;  // row stride of the transposed V tile
    T* s_q = reinterpret_cast<T*>(smem);  // [kTcRows][LQ]
    T* s_k = s_q + kTcRows * LQ;          // [kTcKeys][LQ]
    T* s_v = s_k + kTcKeys * LQ;          // [D][LV], V^T

    const int bh = blockIdx.x / p.qtiles, qt = blockIdx.x - bh * p.qtiles, b = bh / p.H, split = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int d = p.d, dv = p.dv;
    const T* q = static_cast<const T*>(p.q) + static_cast<int64_t>(bh) * p.N * d;
    const T* k = static_cast<const T*>(p.k) + static_cast<int64_t>(bh) * p.N * d;
    const T* v = static_cast<const T*>(p.v) + static_cast<int64_t>(bh) * (p.v_local ? p.m : p.N) * dv;
    const int32_t* idx = p.idx + static_cast<int64_t>(b) * p.m;
    const int q0 = qt * kTcRows;

    load_tile<T, false>(s_q, LQ, kTcRows, D, q, d, p.vec_q, [&](int r) -> int64_t {
        const int row = q0 + r;
        return row < p.nq ? (p.q_gather ? idx[row] : row) : -1;
    });
    __syncthreads();
    uint32_t qa[D / 16][4];  // this warp's 16 query rows as A fragments, for every 16-wide k-step
#pragma unroll
    for (int ks = 0; ks < D / 16; ++ks) {
        const T* r0 = s_q + (warp * 16 + g) * LQ + ks * 16 + 2 * t;
        qa[ks][0] = ld32(r0);
        qa[ks][1] = ld32(r0 + 8 * LQ);
        qa[ks][2] = ld32(r0 + 8);
        qa[ks][3] = ld32(r0 + 8 * LQ + 8);
    }

    const int k_begin = split * p.keys_per_split;
    const int k_end = min(p.nk, k_begin + p.keys_per_split);
    float o[D / 8][4];
#pragma unroll
    for (int c = 0; c < D / 8; ++c) o[c][0] = o[c][1] = o[c][2] = o[c][3] = 0.f;
    float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};  // rows g and g + 8 (log2 units)

    for (int kt = k_begin; kt < k_end; kt += kTcKeys) {
        __syncthreads();  // the previous tile is consumed (and qa is read) before it is overwritten
        auto key_row = [&](int r) -> int64_t {
            const int key = kt + r;
            return key < k_end ? (p.k_gather ? idx[key] : key) : -1;
        };
        load_tile<T, false>(s_k, LQ, kTcKeys, D, k, d, p.vec_k, key_row);
        load_tile<T, true>(s_v, LV, kTcKeys, D, v, dv, p.vec_v, [&](int r) -> int64_t {
            const int key = kt + r;
            return key < k_end ? (p.v_local ? key : key_row(r)) : -1;
        });
        __syncthreads();

        // S = Q K^T: n-tile j holds keys kt + 8j .. 8j + 7; B[kk][n] = K[key n][dim kk]
        float s[kTcKeys / 8][4];
#pragma unroll
        for (int j = 0; j < kTcKeys / 8; ++j) {
            s[j][0] = s[j][1] = s[j][2] = s[j][3] = 0.f;
#pragma unroll
            for (int ks = 0; ks < D / 16; ++ks) {
                if (ks * 16 >= d) break;  // zero padding beyond d: nothing to add
                const T* kr = s_k + (j * 8 + g) * LQ + ks * 16 + 2 * t;
                const uint32_t bf[2] = {ld32(kr), ld32(kr + 8)};
                mma_16816<T>(s[j], qa[ks], bf);
            }
        }
        // online softmax on the fragments: lane holds keys 8j + 2t, 8j + 2t + 1 of rows g, g + 8
        float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
        for (int j = 0; j < kTcKeys / 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int key = kt + j * 8 + 2 * t + (e & 1);
                const float x = key < k_end ? s[j][e] * p.scale_log2 : -INFINITY;
                s[j][e] = x;
                mx[e >> 1] = fmaxf(mx[e >> 1], x);
            }
        float corr[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
            mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
            const float m_new = fmaxf(m_run[h], mx[h]);  // finite: key kt < k_end is in every tile
            corr[h] = exp2f(m_run[h] - m_new);           // 0 on the first tile (exp2(-inf))
            m_run[h] = m_new;
            l_run[h] *= corr[h];
        }
#pragma unroll
        for (int j = 0; j < kTcKeys / 8; ++j)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const float pe = exp2f(s[j][e] - m_run[e >> 1]);
                s[j][e] = pe;
                l_run[e >> 1] += pe;
            }
#pragma unroll
        for (int c = 0; c < D / 8; ++c) {
            o[c][0] *= corr[0]; o[c][1] *= corr[0];
            o[c][2] *= corr[1]; o[c][3] *= corr[1];
        }
        // O += P V: k-step kk covers keys 16kk .. 16kk + 15 = the n-tiles 2kk and 2kk + 1 of S
#pragma unroll
        for (int kk = 0; kk < kTcKeys / 16; ++kk) {
            if (kt + kk * 16 >= k_end) break;  // all-zero probabilities beyond the last key
            const uint32_t pa[4] = {pack2f<T>(s[2 * kk][0], s[2 * kk][1]), pack2f<T>(s[2 * kk][2], s[2 * kk][3]),
                                    pack2f<T>(s[2 * kk + 1][0], s[2 * kk + 1][1]), pack2f<T>(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
            for (int c = 0; c < D / 8; ++c) {
                if (c * 8 >= dv) break;
                const T* vr = s_v + (c * 8 + g) * LV + kk * 16 + 2 * t;
                const uint32_t bf[2] = {ld32(vr), ld32(vr + 8)};
                mma_16816<T>(o[c], pa, bf);
            }
        }
    }

    // the row sums are spread over the 4 lanes of a group
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        l_run[h] += __shfl_xor_sync(0xffffffffu, l_run[h], 1);
        l_run[h] += __shfl_xor_sync(0xffffffffu, l_run[h], 2);
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int row = q0 + warp * 16 + g + 8 * h;
        if (row >= p.nq) continue;
        const float inv = l_run[h] > 0.f ? 1.f / l_run[h] : 0.f;
        if (p.mode == kToOut) {
            T* out = static_cast<T*>(p.out) + (static_cast<int64_t>(bh) * p.nq + row) * dv;
#pragma unroll
            for (int c = 0; c < D / 8; ++c)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int col = c * 8 + 2 * t + e;
                    if (col < dv) out[col] = from_float<T>(o[c][2 * h + e] * inv);
                }
        } else if (p.mode == kToBv) {
            float* out = p.bv + (static_cast<int64_t>(bh) * p.nq + row) * dv;
#pragma unroll
            for (int c = 0; c < D / 8; ++c)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int col = c * 8 + 2 * t + e;
                    if (col < dv) out[col] = o[c][2 * h + e] * inv;
                }
        } else {
            float* part = p.part + ((static_cast<int64_t>(bh) * p.nsplit + split) * p.nq + row) * (dv + 2);
            if (t == 0) { part[0] = m_run[h] * kLn2; part[1] = l_run[h]; }  // max in natural-log units
#pragma unroll
            for (int c = 0; c < D / 8; ++c)
#pragma unroll
                for (int e = 0; e < 2; ++e) {
                    const int col = c * 8 + 2 * t + e;
                    if (col < dv) part[2 + col] = o[c][2 * h + e];
                }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The m x m system: merge of the key splits, A, Z = pinv(A), W = Z Bv (fp32 throughout)
// ---------------------------------------------------------------------------------------------
// Online-softmax merge of one row of the key splits (one warp):
// out[row] = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s.
__device__ __forceinline__ void merge_row(const float* part, float* out, int nsplit, int nq, int dv, int64_t bh, int64_t row,
                                          int lane) {
    auto at = [&](int s) { return part + ((bh * nsplit + s) * nq + row) * (dv + 2); };
    float M = -INFINITY;
    for (int s = 0; s < nsplit; ++s) M = fmaxf(M, at(s)[0]);
    float l = 0.f;
    for (int s = 0; s < nsplit; ++s) {
        const float ms = at(s)[0];
        if (ms != -INFINITY) l += __expf(ms - M) * at(s)[1];
    }
    const float inv = l > 0.f ? 1.f / l : 0.f;
    for (int c = lane; c < dv; c += 32) {
        float acc = 0.f;
        for (int s = 0; s < nsplit; ++s) {
            const float ms = at(s)[0];
            if (ms != -INFINITY) acc += __expf(ms - M) * at(s)[2 + c];
        }
        out[(bh * nq + row) * dv + c] = acc * inv;
    }
}

__global__ void merge_kernel(const float* __restrict__ part, float* __restrict__ out, int nsplit, int nq, int dv, int64_t rows_total) {
    const int64_t gw = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
    if (gw >= rows_total) return;
    const int64_t bh = gw / nq;
    merge_row(part, out, nsplit, nq, dv, bh, gw - bh * nq, threadIdx.x & 31);
}

// A[r, :] = softmax(s q[idx[r]] . k[idx[j]]) for one (b, h) and one row r (one warp, two passes).
template <typename T>
__device__ __forceinline__ void probs_row(const T* q, const T* k, const int32_t* idx, float* A, int N, int d, int m, float scale,
                                          int64_t bh, int b, int r, int lane) {
    const T* qr = q + (bh * N + idx[static_cast<int64_t>(b) * m + r]) * d;
    float* out = A + (bh * m + r) * m;
    float mx = -INFINITY;
    for (int j = lane; j < m; j += 32) {
        const T* kr = k + (bh * N + idx[static_cast<int64_t>(b) * m + j]) * d;
        float dot = 0.f;
        for (int c = 0; c < d; ++c) dot += to_float(qr[c]) * to_float(kr[c]);
        dot *= scale;
        out[j] = dot;
        mx = fmaxf(mx, dot);
    }
    mx = warp_max(mx);
    float sum = 0.f;
    for (int j = lane; j < m; j += 32) {
        const float e = __expf(out[j] - mx);
        out[j] = e;
        sum += e;
    }
    sum = warp_sum(sum);
    const float inv = 1.f / sum;
    for (int j = lane; j < m; j += 32) out[j] *= inv;
}

template <typename T>
__global__ void probs_kernel(const T* __restrict__ q, const T* __restrict__ k, const int32_t* __restrict__ idx, float* __restrict__ A,
                             int H, int N, int d, int m, float scale, int64_t bh0) {
    const int64_t bh = bh0 + blockIdx.y;
    const int r = blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (r >= m) return;
    probs_row(q, k, idx, A, N, d, m, scale, bh, static_cast<int>(bh / H), r, threadIdx.x & 31);
}

// Z0 = A^T / max_j sum_i A_ij for one m x m matrix, by the whole CTA (s_max: 32 floats of shared memory).
__device__ __forceinline__ void z0_block(const float* A, float* Z, int m, float* s_max) {
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < m; j += blockDim.x) {
        float cs = 0.f;
        for (int i = 0; i < m; ++i) cs += A[static_cast<int64_t>(i) * m + j];
        mx = fmaxf(mx, cs);
    }
    mx = warp_max(mx);
    if ((threadIdx.x & 31) == 0) s_max[threadIdx.x >> 5] = mx;
    __syncthreads();
    if (threadIdx.x < 32) {
        float v = threadIdx.x < (blockDim.x >> 5) ? s_max[threadIdx.x] : -INFINITY;
        v = warp_max(v);
        if (threadIdx.x == 0) s_max[0] = v;
    }
    __syncthreads();
    const float inv = 1.f / s_max[0];
    for (int64_t e = threadIdx.x; e < static_cast<int64_t>(m) * m; e += blockDim.x) {
        const int64_t i = e / m, j = e - i * m;
        Z[e] = A[j * m + i] * inv;
    }
}

__global__ void z0_kernel(const float* __restrict__ A, float* __restrict__ Z, int m) {
    __shared__ float s_max[32];
    const int64_t off = static_cast<int64_t>(blockIdx.x) * m * m;
    z0_block(A + off, Z + off, m, s_max);
}

// One 64x64 tile (rows row0.., columns col0..) of C = alpha * X op(Y), X [M,K], Y [K,Nc], C [M,Nc]
// row-major; op(Y) = Y, or (diag_c * I - Y) when diag_minus (square Y). 256 threads (tid 0..255
// of their group), 4x4 outputs each, 16-deep k-slices staged in shared memory. C must not alias
// X or Y. Every thread of the CTA calls it the same number of times (it has barriers); an
// inactive group (no tile left for it) only takes part in the barriers.
constexpr int kMT = 64, kKT = 16, kMatThreads = 256;
constexpr int kSysGroups = 4, kSysThreads = kMatThreads * kSysGroups;  // the system kernel: 4 tiles at once
struct MatTiles {
    float a[kKT][kMT + 4];
    float b[kKT][kMT + 4];
};

template <typename TC>
__device__ __forceinline__ void matmul_tile(const float* X, const float* Y, TC* C, int M, int K, int Nc, float alpha, bool diag_minus,
                                            float diag_c, int row0, int col0, bool active, int tid, MatTiles& s) {
    const int tx = tid & 15, ty = tid >> 4;
    float acc[4][4] = {};
    for (int k0 = 0; k0 < K; k0 += kKT) {
        for (int e = active ? tid : kMT * kKT; e < kMT * kKT; e += kMatThreads) {
            const int r = e / kKT, c = e - r * kKT;  // X tile: row r, k c
            const int gr = row0 + r, gk = k0 + c;
            s.a[c][r] = (gr < M && gk < K) ? X[static_cast<int64_t>(gr) * K + gk] : 0.f;
            const int kr = e / kMT, cc = e - kr * kMT;  // Y tile: k kr, column cc
            const int bk = k0 + kr, bc = col0 + cc;
            float bv = 0.f;
            if (bk < K && bc < Nc) {
                bv = Y[static_cast<int64_t>(bk) * Nc + bc];
                if (diag_minus) bv = (bk == bc ? diag_c : 0.f) - bv;
            }
            s.b[kr][cc] = bv;
        }
        __syncthreads();
        if (active) {
#pragma unroll
            for (int kk = 0; kk < kKT; ++kk) {
                float a[4], bb[4];
#pragma unroll
                for (int i = 0; i < 4; ++i) { a[i] = s.a[kk][ty + 16 * i]; bb[i] = s.b[kk][tx + 16 * i]; }
#pragma unroll
                for (int i = 0; i < 4; ++i)
#pragma unroll
                    for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * bb[j];
            }
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int r = row0 + ty + 16 * i, c = col0 + tx + 16 * j;
            if (active && r < M && c < Nc) C[static_cast<int64_t>(r) * Nc + c] = from_float<TC>(alpha * acc[i][j]);
        }
}

// The whole matrix by one CTA of kSysThreads: its kSysGroups groups of 256 threads take the
// output tiles in turn (m = 128: all four at once). Ends with a barrier: the next product may read C.
template <typename TC>
__device__ void matmul_block(const float* X, const float* Y, TC* C, int M, int K, int Nc, float alpha, bool diag_minus, float diag_c,
                             MatTiles (&s)[kSysGroups]) {
    const int group = threadIdx.x / kMatThreads, tid = threadIdx.x - group * kMatThreads;
    const int tiles_c = (Nc + kMT - 1) / kMT, tiles = (M + kMT - 1) / kMT * tiles_c;
    for (int base = 0; base < tiles; base += kSysGroups) {
        const int t = base + group;
        const bool active = t < tiles;
        const int tr = active ? t / tiles_c : 0, tc = active ? t - tr * tiles_c : 0;
        matmul_tile(X, Y, C, M, K, Nc, alpha, diag_minus, diag_c, tr * kMT, tc * kMT, active, tid, s[group]);
    }
    __syncthreads();
}

// Batched (grid.z = batch) one-tile-per-CTA version for the multi-launch path (m > 256).
__global__ void __launch_bounds__(kMatThreads) batched_matmul(const float* __restrict__ X, const float* __restrict__ Y, float* __restrict__ C,
                                                              int M, int K, int Nc, float alpha, int diag_minus, float diag_c) {
    __shared__ MatTiles s;
    const int64_t z = blockIdx.z;
    matmul_tile(X + z * M * K, Y + z * K * Nc, C + z * M * Nc, M, K, Nc, alpha, diag_minus != 0, diag_c, blockIdx.y * kMT,
                blockIdx.x * kMT, true, static_cast<int>(threadIdx.x), s);
}

struct SysArgs {
    const void* q;
    const void* k;
    const int32_t* idx;
    const float* part;  // [BH, nsplit, m, dv + 2] when nsplit > 1 (in the output tensor)
    float* bv;          // [BH, m, dv]: merged here when nsplit > 1, else written by the Bv kernel
    float *A, *Z, *AZ, *Y1, *Y2;  // [BH, m, m] each
    void* w;            // [BH, m, dv] of TW
    int H, N, d, dv, m, nsplit, iters;
    float scale;
};

// One CTA (1024 threads) per (b, h): merge, A = softmax(s qp kp^T), Z0 = A^T / max colsum, Newton-Schulz
// Z <- 1/4 Z (13I - AZ(15I - AZ(7I - AZ))), W = Z Bv (stored as TW). The matrices live in the
// workspace (L2-resident: 5 x 64 KiB per head at m = 128); one launch replaces 27.
template <typename T, typename TW>
__global__ void __launch_bounds__(kSysThreads) system_kernel(SysArgs p) {
    __shared__ MatTiles s[kSysGroups];
    __shared__ float s_max[32];
    const int64_t bh = blockIdx.x;
    const int b = static_cast<int>(bh / p.H), m = p.m, dv = p.dv;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = kSysThreads / 32;
    const int64_t mm = static_cast<int64_t>(m) * m;
    float* A = p.A + bh * mm;
    float* Z = p.Z + bh * mm;
    float* AZ = p.AZ + bh * mm;
    float* Y1 = p.Y1 + bh * mm;
    float* Y2 = p.Y2 + bh * mm;
    if (p.nsplit > 1)
        for (int r = warp; r < m; r += nwarps) merge_row(p.part, p.bv, p.nsplit, m, dv, bh, r, lane);
    for (int r = warp; r < m; r += nwarps)
        probs_row(static_cast<const T*>(p.q), static_cast<const T*>(p.k), p.idx, p.A, p.N, p.d, m, p.scale, bh, b, r, lane);
    __syncthreads();
    z0_block(A, Z, m, s_max);
    __syncthreads();
    for (int it = 0; it < p.iters; ++it) {
        matmul_block(A, Z, AZ, m, m, m, 1.f, false, 0.f, s);
        matmul_block(AZ, AZ, Y1, m, m, m, 1.f, true, 7.f, s);
        matmul_block(AZ, Y1, Y2, m, m, m, 1.f, true, 15.f, s);
        matmul_block(Z, Y2, AZ, m, m, m, 0.25f, true, 13.f, s);  // the new Z, into AZ's buffer
        float* tmp = Z; Z = AZ; AZ = tmp;
    }
    matmul_block(Z, p.bv + bh * m * dv, static_cast<TW*>(p.w) + bh * m * dv, m, m, dv, 1.f, false, 0.f, s);
}

// ---------------------------------------------------------------------------------------------
// Launchers
// ---------------------------------------------------------------------------------------------
// Both attention kernels take a flat grid.x of (query tile, b*h) and grid.y = key split; this
// launches either with its dynamic shared memory, `rows` query rows per CTA.
template <typename Args>
int launch_query_tiles(void (*kernel)(Args), Args p, int rows, int threads, size_t smem, int bh, cudaStream_t s) {
    if (smem > 48 * 1024) {
        cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
        if (e != cudaSuccess) return e;
    }
    p.qtiles = (p.nq + rows - 1) / rows;
    if (static_cast<int64_t>(p.qtiles) * bh > 0x7fffffff) return kErrBadArgs;  // grid.x
    dim3 grid(static_cast<unsigned>(static_cast<int64_t>(p.qtiles) * bh), p.nsplit);
    kernel<<<grid, threads, smem, s>>>(p);
    return cudaGetLastError();
}

template <typename T, typename TV, typename TO, int NV>
int launch_attention(AttnArgs p, int bh, cudaStream_t s) {
    const size_t smem = (static_cast<size_t>(kRowsPerCta) * p.d + static_cast<size_t>(kTile) * (p.d + 1) +
                         static_cast<size_t>(kTile) * p.dv) * sizeof(float);
    return launch_query_tiles(attention_kernel<T, TV, TO, NV>, p, kRowsPerCta, kAttnThreads, smem, bh, s);
}

template <typename T, typename TV, typename TO>
int dispatch_attention(const AttnArgs& p, int bh, cudaStream_t s) {
    if (p.dv <= 32) return launch_attention<T, TV, TO, 1>(p, bh, s);
    if (p.dv <= 64) return launch_attention<T, TV, TO, 2>(p, bh, s);
    if (p.dv <= 128) return launch_attention<T, TV, TO, 4>(p, bh, s);
    return launch_attention<T, TV, TO, 8>(p, bh, s);
}

template <typename T, int D>
int launch_tc(TcArgs p, int bh, cudaStream_t s) {
    const size_t smem = (static_cast<size_t>(kTcRows + kTcKeys) * (D + 8) + static_cast<size_t>(D) * (kTcKeys + 8)) * sizeof(T);
    return launch_query_tiles(tc_attention_kernel<T, D>, p, kTcRows, kTcThreads, smem, bh, s);
}

template <typename T>
int dispatch_tc(const TcArgs& p, int bh, cudaStream_t s) {
    const int w = p.d > p.dv ? p.d : p.dv;
    if (w <= 32) return launch_tc<T, 32>(p, bh, s);
    if (w <= 64) return launch_tc<T, 64>(p, bh, s);
    if (w <= 96) return launch_tc<T, 96>(p, bh, s);
    return launch_tc<T, 128>(p, bh, s);
}

// The tensor-core kernel exists for 16-bit types only; the fp32 instantiation of run() never calls it.
template <typename T>
int tc_product(const TcArgs& p, int bh, cudaStream_t s) {
    if constexpr (sizeof(T) == 2) return dispatch_tc<T>(p, bh, s);
    else return kErrBadArgs;
}

bool aligned16(const void* ptr) { return (reinterpret_cast<uintptr_t>(ptr) & 15u) == 0; }

int matmul(const float* A, const float* B, float* C, int batch, int M, int K, int Nc, float alpha, bool diag_minus, float diag_c,
           cudaStream_t s) {
    for (int z0 = 0; z0 < batch; z0 += 65535) {  // grid.z limit
        const int nb = batch - z0 < 65535 ? batch - z0 : 65535;
        dim3 grid((Nc + kMT - 1) / kMT, (M + kMT - 1) / kMT, nb);
        batched_matmul<<<grid, kMatThreads, 0, s>>>(A + static_cast<int64_t>(z0) * M * K, B + static_cast<int64_t>(z0) * K * Nc,
                                                     C + static_cast<int64_t>(z0) * M * Nc, M, K, Nc, alpha, diag_minus ? 1 : 0, diag_c);
        if (cudaError_t e = cudaGetLastError()) return e;
    }
    return 0;
}

// The m x m system for m > kNystromFusedMaxLandmarks, one kernel per step (W in fp32).
template <typename T>
int run_system_unfused(const SysArgs& a, int bh, cudaStream_t s) {
    const int m = a.m;
    int e;
    if (a.nsplit > 1) {
        const int64_t rows = static_cast<int64_t>(bh) * m;
        merge_kernel<<<static_cast<unsigned>((rows * 32 + 255) / 256), 256, 0, s>>>(a.part, a.bv, a.nsplit, m, a.dv, rows);
        if ((e = cudaGetLastError())) return e;
    }
    for (int z0 = 0; z0 < bh; z0 += 65535) {
        const int nb = bh - z0 < 65535 ? bh - z0 : 65535;
        dim3 grid((m + 7) / 8, nb);
        probs_kernel<T><<<grid, 256, 0, s>>>(static_cast<const T*>(a.q), static_cast<const T*>(a.k), a.idx, a.A, a.H, a.N, a.d, m,
                                              a.scale, z0);
        if ((e = cudaGetLastError())) return e;
    }
    float *Z = a.Z, *AZ = a.AZ;
    z0_kernel<<<bh, 256, 0, s>>>(a.A, Z, m);
    if ((e = cudaGetLastError())) return e;
    for (int it = 0; it < a.iters; ++it) {
        if ((e = matmul(a.A, Z, AZ, bh, m, m, m, 1.f, false, 0.f, s))) return e;
        if ((e = matmul(AZ, AZ, a.Y1, bh, m, m, m, 1.f, true, 7.f, s))) return e;
        if ((e = matmul(AZ, a.Y1, a.Y2, bh, m, m, m, 1.f, true, 15.f, s))) return e;
        if ((e = matmul(Z, a.Y2, AZ, bh, m, m, m, 0.25f, true, 13.f, s))) return e;  // new Z into AZ's buffer
        float* t = Z; Z = AZ; AZ = t;
    }
    return matmul(Z, a.bv, static_cast<float*>(a.w), bh, m, m, a.dv, 1.f, false, 0.f, s);
}

template <typename T>
int run(const void* q, const void* k, const void* v, const int32_t* idx, int B, int H, int N, int d, int dv, int m,
        float scale, int iters, void* out, float* ws, cudaStream_t s) {
    const NystromLayout L = nystrom_layout(B, H, N, dv, m);
    const int bh = B * H;
    constexpr bool kHalf = sizeof(T) == 2;
    const bool tc = kHalf && d <= 128 && dv <= 128;         // tensor-core products
    const bool fused = m <= kNystromFusedMaxLandmarks;
    const bool w_in_t = tc && fused;                         // W stored in T for the tensor-core out product
    int nsplit = nystrom_num_splits(bh, N, m, dv, static_cast<int64_t>(sizeof(T)));
    if (reinterpret_cast<uintptr_t>(out) & 3u) nsplit = 1;  // the fp32 partials need a 4-byte aligned output
    int kps = (N + nsplit - 1) / nsplit;
    kps = (kps + kTcKeys - 1) / kTcKeys * kTcKeys;           // whole 64-key tiles (also whole 32-key SIMT tiles)
    nsplit = (N + kps - 1) / kps;
    float* Bv = ws + L.bv;
    float* part = static_cast<float*>(out);                  // partials parked in the output tensor
    int e;

    // Bv = softmax(s qp k^T) v, keys split over N
    if (tc) {
        TcArgs p{};
        p.q = q; p.k = k; p.v = v; p.idx = idx; p.H = H; p.N = N; p.d = d; p.dv = dv; p.m = m;
        p.nq = m; p.nk = N; p.q_gather = 1; p.k_gather = 0; p.v_local = 0;
        p.mode = nsplit > 1 ? kToPartials : kToBv;
        p.vec_q = d % 8 == 0 && aligned16(q); p.vec_k = p.vec_q && aligned16(k); p.vec_q = p.vec_k;
        p.vec_v = dv % 8 == 0 && aligned16(v);
        p.nsplit = nsplit; p.keys_per_split = kps; p.bv = Bv; p.part = part;
        p.scale_log2 = scale * kLog2e;
        if ((e = tc_product<T>(p, bh, s))) return e;
    } else {
        AttnArgs p{};
        p.q = q; p.k = k; p.v = v; p.idx = idx; p.H = H; p.N = N; p.d = d; p.dv = dv; p.m = m;
        p.nq = m; p.nk = N; p.q_gather = 1; p.k_gather = 0; p.v_local = 0; p.scale = scale;
        p.nsplit = nsplit; p.keys_per_split = kps;
        p.out = Bv; p.part = part;
        if ((e = dispatch_attention<T, T, float>(p, bh, s))) return e;
    }
    // the m x m system -> W
    SysArgs sa{};
    sa.q = q; sa.k = k; sa.idx = idx; sa.part = part; sa.bv = Bv;
    sa.A = ws + L.a; sa.Z = ws + L.z; sa.AZ = ws + L.az; sa.Y1 = ws + L.y1; sa.Y2 = ws + L.y2; sa.w = ws + L.w;
    sa.H = H; sa.N = N; sa.d = d; sa.dv = dv; sa.m = m; sa.nsplit = nsplit; sa.iters = iters; sa.scale = scale;
    if (fused) {
        if (w_in_t) system_kernel<T, T><<<bh, kSysThreads, 0, s>>>(sa);
        else system_kernel<T, float><<<bh, kSysThreads, 0, s>>>(sa);
        if ((e = cudaGetLastError())) return e;
    } else if ((e = run_system_unfused<T>(sa, bh, s))) {
        return e;
    }
    // out = softmax(s q kp^T) W, streamed over q
    if (w_in_t) {
        TcArgs p{};
        p.q = q; p.k = k; p.v = ws + L.w; p.idx = idx; p.H = H; p.N = N; p.d = d; p.dv = dv; p.m = m;
        p.nq = N; p.nk = m; p.q_gather = 0; p.k_gather = 1; p.v_local = 1; p.mode = kToOut;
        p.vec_q = d % 8 == 0 && aligned16(q) && aligned16(k); p.vec_k = p.vec_q;
        p.vec_v = dv % 8 == 0;  // W in the (aligned) workspace
        p.nsplit = 1; p.keys_per_split = m; p.out = out;
        p.scale_log2 = scale * kLog2e;
        return tc_product<T>(p, bh, s);
    }
    AttnArgs p{};
    p.q = q; p.k = k; p.v = ws + L.w; p.idx = idx; p.H = H; p.N = N; p.d = d; p.dv = dv; p.m = m;
    p.nq = N; p.nk = m; p.q_gather = 0; p.k_gather = 1; p.v_local = 1; p.scale = scale;
    p.nsplit = 1; p.keys_per_split = m; p.out = out;
    return dispatch_attention<T, float, T>(p, bh, s);
}

}  // namespace

int launch_nystrom(const void* q, const void* k, const void* v, DType type, const int32_t* idx, int64_t B, int64_t H,
                   int64_t N, int64_t d, int64_t dv, int64_t m, const NystromAttrs& attrs, void* out, void* workspace,
                   size_t workspace_bytes, void* stream) {
    if (!validate(attrs).empty() || !check_nystrom_shapes({B, H, N, d}, {B, H, N, d}, {B, H, N, dv}, {B, m}).empty() ||
        d < 1 || dv < 1 || N >= (1ll << 31) / 8 || B * H >= (1ll << 31) / 64 || (type != kFloat32 && type != kFloat16 && type != kBFloat16))
        return kErrBadArgs;
    if (B * H == 0) return 0;
    if (workspace_bytes < nystrom_workspace_size(B, H, N, d, dv, m)) return kErrWorkspace;
    const float scale = attrs.scale > 0.f ? attrs.scale : 1.0f / sqrtf(static_cast<float>(d));
    float* ws = static_cast<float*>(align256(workspace));
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    if (type == kFloat16)
        return run<__half>(q, k, v, idx, int(B), int(H), int(N), int(d), int(dv), int(m), scale, attrs.pinv_iters, out, ws, s);
    if (type == kBFloat16)
        return run<__nv_bfloat16>(q, k, v, idx, int(B), int(H), int(N), int(d), int(dv), int(m), scale, attrs.pinv_iters, out, ws, s);
    return run<float>(q, k, v, idx, int(B), int(H), int(N), int(d), int(dv), int(m), scale, attrs.pinv_iters, out, ws, s);
}

}  // namespace cuda
}  // namespace fna
