// FnaLandmarks on the GPU: one CTA per image, no host synchronisation.
//
// Same rank formulation as fna_deploy/ops/landmarks.py and reference.cpp:
//   1. lower median of the non-prefix scores (radix select on order-preserving float keys);
//   2. guaranteed / artifact / eligible masks and their positions (block-wide scans);
//   3. FPS: each step updates min-distances against the last pick and takes the argmax (ties to
//      the lowest index) in one pass over the tokens; or the grid rule;
//   4. scatter: token -> output slot (its rank among the landmarks) when that slot is < m.
#include <cfloat>

#include "cuda_common.cuh"
#include "kernels.h"

namespace fna {
namespace cuda {
namespace {

constexpr int kThreads = 1024;
constexpr int kWarps = kThreads / 32;

__device__ __forceinline__ uint32_t float_key(float f) {
    uint32_t u = __float_as_uint(f);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}
__device__ __forceinline__ float key_float(uint32_t k) {
    uint32_t u = (k & 0x80000000u) ? (k & 0x7fffffffu) : ~k;
    return __uint_as_float(u);
}

// Inclusive block scan of a packed 64-bit counter; returns the exclusive prefix, total in *total.
__device__ uint64_t block_exclusive_scan(uint64_t v, uint64_t* total, uint64_t* smem /*[kWarps]*/) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint64_t x = v;
    for (int o = 1; o < 32; o <<= 1) {
        uint64_t y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o) x += y;
    }
    if (lane == 31) smem[warp] = x;
    __syncthreads();
    if (warp == 0) {
        uint64_t w = lane < kWarps ? smem[lane] : 0;
        for (int o = 1; o < 32; o <<= 1) {
            uint64_t y = __shfl_up_sync(0xffffffffu, w, o);
            if (lane >= o) w += y;
        }
        if (lane < kWarps) smem[lane] = w;  // inclusive warp totals
    }
    __syncthreads();
    uint64_t before = warp > 0 ? smem[warp - 1] : 0;
    *total = smem[kWarps - 1];
    __syncthreads();  // smem reused by the next call
    return before + x - v;
}

// Packed per-token counters: guaranteed | artifact << 21 | eligible << 42 (N < 2^21).
constexpr int kShiftA = 21, kShiftE = 42;
constexpr uint64_t kMask21 = (1ull << 21) - 1;

template <typename TF, typename TS>
__global__ void __launch_bounds__(kThreads) landmarks_kernel(const TF* __restrict__ features, const TS* __restrict__ scores,
                                                             int N, int D, LandmarkAttrs a, int32_t* __restrict__ out,
                                                             float* __restrict__ min_dist_all, int32_t* __restrict__ rank_all) {
    extern __shared__ float s_point[];  // [D] the last pick's features
    __shared__ uint64_t s_scan[kWarps];
    __shared__ uint32_t s_hist[256];
    __shared__ uint32_t s_prefix, s_mask, s_k;
    __shared__ float s_best_v[kWarps];
    __shared__ int s_best_i[kWarps];
    __shared__ int s_pick;

    const int b = blockIdx.x, tid = threadIdx.x;
    const TF* f = features + static_cast<int64_t>(b) * N * D;
    float* min_dist = min_dist_all + static_cast<int64_t>(b) * N;
    int32_t* rank = rank_all + static_cast<int64_t>(b) * N;
    const int P = a.num_prefix, m = a.num_landmarks;
    const bool use_scores = scores != nullptr && (a.massive_ratio > 0.f || a.artifact_ratio > 0.f) && P < N;

    // ---- 1. lower median of scores[P:N] by 4 passes of 8-bit radix select
    float med = 0.f;
    if (use_scores) {
        const TS* s = scores + static_cast<int64_t>(b) * N;
        if (tid == 0) { s_prefix = 0; s_mask = 0; s_k = static_cast<uint32_t>((N - P - 1) / 2); }
        for (int shift = 24; shift >= 0; shift -= 8) {
            for (int i = tid; i < 256; i += kThreads) s_hist[i] = 0;
            __syncthreads();
            const uint32_t prefix = s_prefix, mask = s_mask;
            for (int i = P + tid; i < N; i += kThreads) {
                uint32_t key = float_key(to_float(s[i]));
                if ((key & mask) == prefix) atomicAdd(&s_hist[(key >> shift) & 255u], 1u);
            }
            __syncthreads();
            if (tid == 0) {
                uint32_t k = s_k, cum = 0, bin = 0;
                for (; bin < 256; ++bin) {
                    if (cum + s_hist[bin] > k) break;
                    cum += s_hist[bin];
                }
                s_k = k - cum;
                s_prefix = prefix | (bin << shift);
                s_mask = mask | (255u << shift);
            }
            __syncthreads();
        }
        med = key_float(s_prefix);
    }
    const float massive_thr = a.massive_ratio * med, artifact_thr = a.artifact_ratio * med;

    auto classify = [&](int i) -> int {  // 0 guaranteed, 1 artifact, 2 eligible
        if (i < P) return 0;
        if (use_scores) {
            const float sc = to_float(scores[static_cast<int64_t>(b) * N + i]);
            if (a.massive_ratio > 0.f && sc >= massive_thr) return 0;
            if (a.artifact_ratio > 0.f && sc >= artifact_thr) return 1;
        }
        return 2;
    };
    auto packed = [](int cls) -> uint64_t { return cls == 0 ? 1ull : (cls == 1 ? (1ull << kShiftA) : (1ull << kShiftE)); };

    // ---- 2. totals, then ranks (guaranteed, artifact, unpicked) in index order
    uint64_t local = 0;
    for (int i = tid; i < N; i += kThreads) local += packed(classify(i));
    uint64_t totals;
    block_exclusive_scan(local, &totals, s_scan);
    const int G = static_cast<int>(totals & kMask21), E = static_cast<int>((totals >> kShiftE) & kMask21);
    const int k_grid = max(m - G, 0), e1 = max(E, 1);

    uint64_t offset = 0;
    for (int base = 0; base < N; base += kThreads) {
        const int i = base + tid;
        const int cls = i < N ? classify(i) : -1;
        uint64_t chunk_total;
        const uint64_t pos = offset + block_exclusive_scan(cls >= 0 ? packed(cls) : 0ull, &chunk_total, s_scan);
        offset += chunk_total;
        if (i >= N) continue;
        int r = 2 * N + i;
        float md = -INFINITY;
        if (cls == 0) {
            r = static_cast<int>(pos & kMask21);
        } else if (cls == 1) {
            r = G + E + static_cast<int>((pos >> kShiftA) & kMask21);
        } else {
            md = INFINITY;
            if (a.method == Method::kGrid) {
                const long long p = static_cast<long long>((pos >> kShiftE) & kMask21);
                const long long j = (p * k_grid + e1 - 1) / e1;
                if (j < k_grid && (j * E) / max(k_grid, 1) == p) r = G + static_cast<int>(p);
            }
        }
        rank[i] = r;
        min_dist[i] = md;
    }
    __syncthreads();

    // ---- 3. farthest-point sampling over eligible tokens
    if (a.method == Method::kFps) {
        const int steps = min(m - P, E);
        const int lane = tid & 31, warp = tid >> 5;
        int pick = -1;
        for (int t = 0; t < steps; ++t) {
            // distances to the previous pick (none at t = 0), fused with the argmax
            float best_v = -INFINITY;
            int best_i = 0x7fffffff;
            for (int i = tid; i < N; i += kThreads) {
                float md = min_dist[i];
                if (pick >= 0 && md != -INFINITY) {
                    const TF* fi = f + static_cast<int64_t>(i) * D;
                    float dist = 0.f;
                    for (int c = 0; c < D; ++c) {
                        const float diff = to_float(fi[c]) - s_point[c];
                        dist += diff * diff;
                    }
                    md = fminf(md, dist);
                    min_dist[i] = md;
                }
                if (md > best_v || (md == best_v && i < best_i)) { best_v = md; best_i = i; }
            }
            for (int o = 16; o > 0; o >>= 1) {
                const float ov = __shfl_xor_sync(0xffffffffu, best_v, o);
                const int oi = __shfl_xor_sync(0xffffffffu, best_i, o);
                if (ov > best_v || (ov == best_v && oi < best_i)) { best_v = ov; best_i = oi; }
            }
            if (lane == 0) { s_best_v[warp] = best_v; s_best_i[warp] = best_i; }
            __syncthreads();
            if (warp == 0) {
                best_v = lane < kWarps ? s_best_v[lane] : -INFINITY;
                best_i = lane < kWarps ? s_best_i[lane] : 0x7fffffff;
                for (int o = 16; o > 0; o >>= 1) {
                    const float ov = __shfl_xor_sync(0xffffffffu, best_v, o);
                    const int oi = __shfl_xor_sync(0xffffffffu, best_i, o);
                    if (ov > best_v || (ov == best_v && oi < best_i)) { best_v = ov; best_i = oi; }
                }
                if (lane == 0) {
                    s_pick = best_i;
                    rank[best_i] = G + t;
                    min_dist[best_i] = -INFINITY;
                }
            }
            __syncthreads();
            pick = s_pick;
            for (int c = tid; c < D; c += kThreads) s_point[c] = to_float(f[static_cast<int64_t>(pick) * D + c]);
            __syncthreads();
        }
    }

    // ---- 4. output slot of each token: guaranteed by position, picked by rank (fps) or by
    //         position among the picked (grid), artifacts after all picked tokens.
    const int picked_total = a.method == Method::kFps ? min(m - P, E) : min(k_grid, E);
    offset = 0;
    for (int base = 0; base < N; base += kThreads) {
        const int i = base + tid;
        int r = i < N ? rank[i] : 0x7fffffff;
        const bool is_picked = i < N && r >= G && r < G + E;
        const bool is_artifact = i < N && r >= G + E && r < 2 * N;
        uint64_t chunk_total;
        const uint64_t pos = offset + block_exclusive_scan((is_picked ? 1ull : 0ull) | (is_artifact ? (1ull << kShiftA) : 0ull),
                                                           &chunk_total, s_scan);
        offset += chunk_total;
        if (i >= N) continue;
        int slot = -1;
        if (r < G) slot = r;
        else if (is_picked) slot = a.method == Method::kFps ? r : G + static_cast<int>(pos & kMask21);
        else if (is_artifact) slot = G + picked_total + static_cast<int>((pos >> kShiftA) & kMask21);
        if (slot >= 0 && slot < m) out[static_cast<int64_t>(b) * m + slot] = i;
    }
}

template <typename TF, typename TS>
int launch_typed(const void* features, const void* scores, int64_t B, int64_t N, int64_t D, const LandmarkAttrs& a,
                 int32_t* out, float* min_dist, int32_t* rank, cudaStream_t stream) {
    const size_t smem = static_cast<size_t>(D) * sizeof(float);
    auto kernel = landmarks_kernel<TF, TS>;
    if (smem > 48 * 1024) {
        cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
        if (e != cudaSuccess) return e;
    }
    kernel<<<static_cast<unsigned>(B), kThreads, smem, stream>>>(static_cast<const TF*>(features), static_cast<const TS*>(scores),
                                                              static_cast<int>(N), static_cast<int>(D), a, out, min_dist, rank);
    return cudaGetLastError();
}

}  // namespace

bool built_with_cuda() { return true; }

const char* error_string(int code) {
    switch (code) {
        case kErrNotBuilt: return "the fna library was built without CUDA (CPU reference only)";
        case kErrBadArgs: return "invalid shapes or attributes";
        case kErrWorkspace: return "workspace too small";
        default: return cudaGetErrorString(static_cast<cudaError_t>(code));
    }
}

int launch_landmarks(const void* features, DType ft, const void* scores, DType st, int64_t B, int64_t N, int64_t D,
                     const LandmarkAttrs& a, int32_t* out, void* workspace, size_t workspace_bytes, void* stream) {
    if (!validate(a).empty() || N < 1 || N >= (1 << 20) || D < 1 || a.num_landmarks > N || B < 0) return kErrBadArgs;
    if (B == 0) return 0;
    if (workspace_bytes < landmarks_workspace_size(B, N)) return kErrWorkspace;
    float* min_dist = static_cast<float*>(align256(workspace));
    int32_t* rank = static_cast<int32_t*>(align256(min_dist + B * N));
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    const bool h = ft == kFloat16;
    const bool sh = scores != nullptr && st == kFloat16;
    if (!h && !sh) return launch_typed<float, float>(features, scores, B, N, D, a, out, min_dist, rank, s);
    if (!h && sh) return launch_typed<float, __half>(features, scores, B, N, D, a, out, min_dist, rank, s);
    if (h && !sh) return launch_typed<__half, float>(features, scores, B, N, D, a, out, min_dist, rank, s);
    return launch_typed<__half, __half>(features, scores, B, N, D, a, out, min_dist, rank, s);
}

}  // namespace cuda
}  // namespace fna
