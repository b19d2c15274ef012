// NystromAttention on the GPU. All products accumulate in fp32; the m x m system is fp32.
//
//   A   = softmax(s qp kp^T)                 probs_kernel        [BH, m, m]
//   Bv  = softmax(s qp k^T) v                attention_kernel, keys split over N, partial
//                                            (max, sum, acc) per split, merged by merge_kernel
//   Z   = pinv(A), Newton-Schulz             z0_kernel + batched_matmul (4 per iteration)
//   W   = Z Bv                               batched_matmul      [BH, m, dv]
//   out = softmax(s q kp^T) W                attention_kernel streamed over q; the landmark
//                                            key/value tiles sit in shared memory
//
// Workspace layout: fna::nystrom_layout (fna_logic.cpp), shared with the sizing function.
#include <cfloat>

#include "cuda_common.cuh"
#include "kernels.h"

namespace fna {
namespace cuda {
namespace {

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
    int nsplit, keys_per_split;
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

    const int bh = blockIdx.z, b = bh / p.H, split = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int row0 = blockIdx.x * kRowsPerCta + warp * kRowsPerWarp;  // this warp's first row
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

// Online-softmax merge of the key splits: out[bh, row] = sum_s e^(m_s - M) acc_s / sum_s e^(m_s - M) l_s.
__global__ void merge_kernel(const float* __restrict__ part, float* __restrict__ out, int nsplit, int nq, int dv, int64_t rows_total) {
    const int64_t gw = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
    const int lane = threadIdx.x & 31;
    if (gw >= rows_total) return;
    const int64_t bh = gw / nq, row = gw - bh * nq;
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

// A[bh, r, :] = softmax(s q[idx[r]] . k[idx[j]]), one warp per row, two passes over the row.
template <typename T>
__global__ void probs_kernel(const T* __restrict__ q, const T* __restrict__ k, const int32_t* __restrict__ idx, float* __restrict__ A,
                             int H, int N, int d, int m, float scale) {
    const int bh = blockIdx.y, b = bh / H;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int r = blockIdx.x * (blockDim.x >> 5) + warp;
    if (r >= m) return;
    const T* qr = q + (static_cast<int64_t>(bh) * N + idx[static_cast<int64_t>(b) * m + r]) * d;
    float* out = A + (static_cast<int64_t>(bh) * m + r) * m;
    float mx = -INFINITY;
    for (int j = lane; j < m; j += 32) {
        const T* kr = k + (static_cast<int64_t>(bh) * N + idx[static_cast<int64_t>(b) * m + j]) * d;
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

// Z0 = A^T / max_j sum_i A_ij, one CTA per matrix.
__global__ void z0_kernel(const float* __restrict__ A, float* __restrict__ Z, int m) {
    __shared__ float s_max[32];
    const int64_t off = static_cast<int64_t>(blockIdx.x) * m * m;
    float mx = -INFINITY;
    for (int j = threadIdx.x; j < m; j += blockDim.x) {
        float cs = 0.f;
        for (int i = 0; i < m; ++i) cs += A[off + static_cast<int64_t>(i) * m + j];
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
        Z[off + e] = A[off + j * m + i] * inv;
    }
}

// Batched C = alpha * A op(B), A [M,K], B [K,Nc], C [M,Nc] row-major per batch,
// op(B) = B, or (diag_c * I - B) when diag_minus (square B). 64x64 tiles, 4x4 per thread.
constexpr int kMT = 64, kKT = 16;
__global__ void __launch_bounds__(256) batched_matmul(const float* __restrict__ A, const float* __restrict__ Bm, float* __restrict__ C,
                                                      int M, int K, int Nc, int64_t sA, int64_t sB, int64_t sC, float alpha,
                                                      int diag_minus, float diag_c) {
    __shared__ float s_a[kKT][kMT + 4];
    __shared__ float s_b[kKT][kMT + 4];
    const int64_t z = blockIdx.z;
    A += z * sA; Bm += z * sB; C += z * sC;
    const int row0 = blockIdx.y * kMT, col0 = blockIdx.x * kMT;
    const int tx = threadIdx.x & 15, ty = threadIdx.x >> 4;
    float acc[4][4] = {};
    for (int k0 = 0; k0 < K; k0 += kKT) {
        for (int e = threadIdx.x; e < kMT * kKT; e += 256) {
            const int r = e / kKT, c = e - r * kKT;  // A tile: row r, k c
            const int gr = row0 + r, gk = k0 + c;
            s_a[c][r] = (gr < M && gk < K) ? A[static_cast<int64_t>(gr) * K + gk] : 0.f;
            const int kr = e / kMT, cc = e - kr * kMT;  // B tile: k kr, col cc
            const int bk = k0 + kr, bc = col0 + cc;
            float bv = 0.f;
            if (bk < K && bc < Nc) {
                bv = Bm[static_cast<int64_t>(bk) * Nc + bc];
                if (diag_minus) bv = (bk == bc ? diag_c : 0.f) - bv;
            }
            s_b[kr][cc] = bv;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < kKT; ++kk) {
            float a[4], bb[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) { a[i] = s_a[kk][ty + 16 * i]; bb[i] = s_b[kk][tx + 16 * i]; }
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * bb[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int r = row0 + ty + 16 * i, c = col0 + tx + 16 * j;
            if (r < M && c < Nc) C[static_cast<int64_t>(r) * Nc + c] = alpha * acc[i][j];
        }
}

int matmul(const float* A, const float* B, float* C, int batch, int M, int K, int Nc, float alpha, bool diag_minus, float diag_c,
           cudaStream_t s) {
    dim3 grid((Nc + kMT - 1) / kMT, (M + kMT - 1) / kMT, batch);
    batched_matmul<<<grid, 256, 0, s>>>(A, B, C, M, K, Nc, static_cast<int64_t>(M) * K, static_cast<int64_t>(K) * Nc,
                                        static_cast<int64_t>(M) * Nc, alpha, diag_minus ? 1 : 0, diag_c);
    return cudaGetLastError();
}

template <typename T, typename TV, typename TO, int NV>
int launch_attention(const AttnArgs& p, int bh, cudaStream_t s) {
    const size_t smem = (static_cast<size_t>(kRowsPerCta) * p.d + static_cast<size_t>(kTile) * (p.d + 1) +
                         static_cast<size_t>(kTile) * p.dv) * sizeof(float);
    auto kernel = attention_kernel<T, TV, TO, NV>;
    if (smem > 48 * 1024) {
        cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
        if (e != cudaSuccess) return e;
    }
    dim3 grid((p.nq + kRowsPerCta - 1) / kRowsPerCta, p.nsplit, bh);
    kernel<<<grid, kAttnThreads, smem, s>>>(p);
    return cudaGetLastError();
}

template <typename T, typename TV, typename TO>
int dispatch_attention(const AttnArgs& p, int bh, cudaStream_t s) {
    if (p.dv <= 32) return launch_attention<T, TV, TO, 1>(p, bh, s);
    if (p.dv <= 64) return launch_attention<T, TV, TO, 2>(p, bh, s);
    if (p.dv <= 128) return launch_attention<T, TV, TO, 4>(p, bh, s);
    return launch_attention<T, TV, TO, 8>(p, bh, s);
}

template <typename T>
int run(const void* q, const void* k, const void* v, const int32_t* idx, int B, int H, int N, int d, int dv, int m,
        float scale, int iters, void* out, float* ws, cudaStream_t s) {
    const NystromLayout L = nystrom_layout(B, H, N, dv, m);
    const int bh = B * H;
    float* A = ws + L.a;
    float* Z = ws + L.z;
    float* AZ = ws + L.az;
    float* Y1 = ws + L.y1;
    float* Y2 = ws + L.y2;
    float* Bv = ws + L.bv;
    float* W = ws + L.w;
    int e;

    // A = softmax(s qp kp^T)
    {
        dim3 grid((m + 7) / 8, bh);
        probs_kernel<T><<<grid, 256, 0, s>>>(static_cast<const T*>(q), static_cast<const T*>(k), idx, A, H, N, d, m, scale);
        if ((e = cudaGetLastError())) return e;
    }
    // Bv = softmax(s qp k^T) v, keys split over N
    {
        AttnArgs p{};
        p.q = q; p.k = k; p.v = v; p.idx = idx; p.H = H; p.N = N; p.d = d; p.dv = dv; p.m = m;
        p.nq = m; p.nk = N; p.q_gather = 1; p.k_gather = 0; p.v_local = 0; p.scale = scale;
        p.nsplit = nystrom_num_splits(N);
        p.keys_per_split = (N + p.nsplit - 1) / p.nsplit;
        p.keys_per_split = (p.keys_per_split + kTile - 1) / kTile * kTile;
        p.nsplit = (N + p.keys_per_split - 1) / p.keys_per_split;
        p.out = Bv; p.part = ws + L.part;
        if ((e = dispatch_attention<T, T, float>(p, bh, s))) return e;
        if (p.nsplit > 1) {
            const int64_t rows = static_cast<int64_t>(bh) * m;
            merge_kernel<<<static_cast<unsigned>((rows * 32 + 255) / 256), 256, 0, s>>>(ws + L.part, Bv, p.nsplit, m, dv, rows);
            if ((e = cudaGetLastError())) return e;
        }
    }
    // Z = pinv(A): Z0, then Z <- 1/4 Z (13I - AZ(15I - AZ(7I - AZ)))
    z0_kernel<<<bh, 256, 0, s>>>(A, Z, m);
    if ((e = cudaGetLastError())) return e;
    for (int it = 0; it < iters; ++it) {
        if ((e = matmul(A, Z, AZ, bh, m, m, m, 1.f, false, 0.f, s))) return e;
        if ((e = matmul(AZ, AZ, Y1, bh, m, m, m, 1.f, true, 7.f, s))) return e;
        if ((e = matmul(AZ, Y1, Y2, bh, m, m, m, 1.f, true, 15.f, s))) return e;
        if ((e = matmul(Z, Y2, AZ, bh, m, m, m, 0.25f, true, 13.f, s))) return e;  // new Z into AZ's buffer
        float* t = Z; Z = AZ; AZ = t;
    }
    // W = Z Bv
    if ((e = matmul(Z, Bv, W, bh, m, m, dv, 1.f, false, 0.f, s))) return e;
    // out = softmax(s q kp^T) W, streamed over q
    {
        AttnArgs p{};
        p.q = q; p.k = k; p.v = W; p.idx = idx; p.H = H; p.N = N; p.d = d; p.dv = dv; p.m = m;
        p.nq = N; p.nk = m; p.q_gather = 0; p.k_gather = 1; p.v_local = 1; p.scale = scale;
        p.nsplit = 1; p.keys_per_split = m; p.out = out;
        if ((e = dispatch_attention<T, float, T>(p, bh, s))) return e;
    }
    return 0;
}

}  // namespace

int launch_nystrom(const void* q, const void* k, const void* v, DType type, const int32_t* idx, int64_t B, int64_t H,
                   int64_t N, int64_t d, int64_t dv, int64_t m, const NystromAttrs& attrs, void* out, void* workspace,
                   size_t workspace_bytes, void* stream) {
    if (!validate(attrs).empty() || !check_nystrom_shapes({B, H, N, d}, {B, H, N, d}, {B, H, N, dv}, {B, m}).empty() ||
        d < 1 || dv < 1 || N >= (1ll << 31) / 8)
        return kErrBadArgs;
    if (B * H == 0) return 0;
    if (workspace_bytes < nystrom_workspace_size(B, H, N, d, dv, m)) return kErrWorkspace;
    const float scale = attrs.scale > 0.f ? attrs.scale : 1.0f / sqrtf(static_cast<float>(d));
    float* ws = static_cast<float*>(align256(workspace));
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    if (type == kFloat16)
        return run<__half>(q, k, v, idx, int(B), int(H), int(N), int(d), int(dv), int(m), scale, attrs.pinv_iters, out, ws, s);
    return run<float>(q, k, v, idx, int(B), int(H), int(N), int(d), int(dv), int(m), scale, attrs.pinv_iters, out, ws, s);
}

}  // namespace cuda
}  // namespace fna
