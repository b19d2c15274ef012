// FnaLandmarks on the GPU: one CTA per image, no host synchronisation.
//
// Same rank formulation as fna_deploy/ops/landmarks.py and reference.cpp:
//   1. lower median of the non-prefix scores (radix select on order-preserving float keys);
//   2. guaranteed / artifact / eligible masks and their positions (block-wide scans);
//   3. FPS: each step updates min-distances against the last pick and takes the argmax (ties to
//      the lowest index) in one pass over the tokens; or the grid rule;
//   4. scatter: token -> output slot (its rank among the landmarks) when that slot is < m.
#include <cfloat>
#include <map>
#include <mutex>
#include <tuple>

#include "cluster.cuh"
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

// Block scan of a packed 64-bit counter over kW warps; returns the exclusive prefix, total in *total.
template <int kW = kWarps>
__device__ uint64_t block_exclusive_scan(uint64_t v, uint64_t* total, uint64_t* smem /*[kW]*/) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint64_t x = v;
    for (int o = 1; o < 32; o <<= 1) {
        uint64_t y = __shfl_up_sync(0xffffffffu, x, o);
        if (lane >= o) x += y;
    }
    if (lane == 31) smem[warp] = x;
    __syncthreads();
    if (warp == 0) {
        uint64_t w = lane < kW ? smem[lane] : 0;
        for (int o = 1; o < 32; o <<= 1) {
            uint64_t y = __shfl_up_sync(0xffffffffu, w, o);
            if (lane >= o) w += y;
        }
        if (lane < kW) smem[lane] = w;  // inclusive warp totals
    }
    __syncthreads();
    uint64_t before = warp > 0 ? smem[warp - 1] : 0;
    *total = smem[kW - 1];
    __syncthreads();  // smem reused by the next call
    return before + x - v;
}

// Packed per-token counters: guaranteed | artifact << 21 | eligible << 42 (N < 2^21).
constexpr int kShiftA = 21, kShiftE = 42;
constexpr uint64_t kMask21 = (1ull << 21) - 1;

// A token's class: 0 guaranteed (prefix or massive), 1 artifact (never picked), 2 eligible for FPS;
// and its packed counter. Both kernels classify with this one rule, as ops/landmarks.py does.
template <typename TS>
__device__ __forceinline__ int token_class(int i, int P, const TS* scores_b, bool use_scores, const LandmarkAttrs& a,
                                           float massive_thr, float artifact_thr) {
    if (i < P) return 0;
    if (use_scores) {
        const float sc = to_float(scores_b[i]);
        if (a.massive_ratio > 0.f && sc >= massive_thr) return 0;
        if (a.artifact_ratio > 0.f && sc >= artifact_thr) return 1;
    }
    return 2;
}

__device__ __forceinline__ uint64_t class_counter(int cls) {
    return cls == 0 ? 1ull : (cls == 1 ? (1ull << kShiftA) : (1ull << kShiftE));
}

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

    const TS* scores_b = use_scores ? scores + static_cast<int64_t>(b) * N : nullptr;
    auto classify = [&](int i) { return token_class(i, P, scores_b, use_scores, a, massive_thr, artifact_thr); };

    // ---- 2. totals, then ranks (guaranteed, artifact, unpicked) in index order
    uint64_t local = 0;
    for (int i = tid; i < N; i += kThreads) local += class_counter(classify(i));
    uint64_t totals;
    block_exclusive_scan(local, &totals, s_scan);
    const int G = static_cast<int>(totals & kMask21), E = static_cast<int>((totals >> kShiftE) & kMask21);
    const int k_grid = max(m - G, 0), e1 = max(E, 1);

    uint64_t offset = 0;
    for (int base = 0; base < N; base += kThreads) {
        const int i = base + tid;
        const int cls = i < N ? classify(i) : -1;
        uint64_t chunk_total;
        const uint64_t pos = offset + block_exclusive_scan(cls >= 0 ? class_counter(cls) : 0ull, &chunk_total, s_scan);
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
                        const float diff = __fsub_rn(to_float(fi[c]), s_point[c]);  // as reference.cpp: no FMA
                        dist = __fadd_rn(dist, __fmul_rn(diff, diff));
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

// ================================================================================================
// FPS over a thread-block cluster: one image = LandmarkPlan::ctas CTAs (a cluster on sm_90+, one
// CTA elsewhere), each owning `chunk` consecutive tokens. Everything an FPS step touches is on
// chip: the CTA's features (channel-pair major in shared memory, staged once with coalesced
// loads; or, when they do not fit, re-read from L2 each step), its min-distances (shared memory)
// and the last pick's features. A step = distance update fused with the CTA's argmax (packed
// 64-bit key: value, then lowest index), one cluster barrier, and every warp reducing the
// cluster's candidates through distributed shared memory; no global memory round trip.
// Distances are summed channel by channel with IEEE round-to-nearest operations (no FMA
// contraction), exactly as reference.cpp sums them, so the picks equal the reference's bit for bit.
// ================================================================================================
constexpr int kFpsWarps = kFpsThreads / 32;

template <typename TF> struct PairOf;
template <> struct PairOf<float> { using type = float2; };
template <> struct PairOf<__half> { using type = __half2; };
__device__ __forceinline__ float2 pair_to_float2(float2 p) { return p; }
__device__ __forceinline__ float2 pair_to_float2(__half2 p) { return __half22float2(p); }

// Argmax key: larger min-distance first, then the lower index (the reference's first maximum).
__device__ __forceinline__ uint64_t argmax_key(float md, int i) {
    return (static_cast<uint64_t>(float_key(md)) << 32) | static_cast<uint64_t>(0xffffffffu - static_cast<uint32_t>(i));
}
__device__ __forceinline__ int key_index(uint64_t k) { return static_cast<int>(0xffffffffu - static_cast<uint32_t>(k)); }
__device__ __forceinline__ uint64_t warp_max_u64(uint64_t v) {
    for (int o = 16; o > 0; o >>= 1) {
        const uint64_t w = __shfl_xor_sync(0xffffffffu, v, o);
        v = w > v ? w : v;
    }
    return v;
}

struct FpsArgs {
    int N, D, chunk, pairs;
    int point_offset, md_offset, feat_offset;
};

template <typename TF, typename TS, bool kOnChip>
__global__ void __launch_bounds__(kFpsThreads, 1) fps_cluster_kernel(const TF* __restrict__ features, const TS* __restrict__ scores,
                                                                   FpsArgs g, LandmarkAttrs a, int32_t* __restrict__ out) {
    using Pair = typename PairOf<TF>::type;
    extern __shared__ float4 fps_smem[];  // dynamic only: the emulator gives each CTA of a cluster its own
    unsigned char* smem = reinterpret_cast<unsigned char*>(fps_smem);
    uint32_t* s_hist = reinterpret_cast<uint32_t*>(smem);            // [256] this CTA's histogram
    uint32_t* s_hsum = s_hist + 256;                                  // [256] the cluster's histogram
    uint32_t* s_ctrl = s_hsum + 256;                                  // [4] radix select: prefix, mask, k
    uint64_t* s_scan = reinterpret_cast<uint64_t*>(smem + 2080);      // [kFpsWarps] scan scratch
    uint64_t* s_warp = s_scan + kFpsWarps;                            // [kFpsWarps] per-warp argmax keys
    uint64_t* s_cand = s_warp + kFpsWarps;                            // [2] this CTA's argmax key, by step parity
    uint64_t* s_count = s_cand + 2;                                   // [1] this CTA's packed class counts
    float2* s_point = reinterpret_cast<float2*>(smem + g.point_offset);  // [pairs] the last pick's features
    float* s_md = reinterpret_cast<float*>(smem + g.md_offset);          // [chunk] min-distances
    Pair* s_feat = reinterpret_cast<Pair*>(smem + g.feat_offset);        // [pairs][chunk] features (on chip)

    const int N = g.N, D = g.D, chunk = g.chunk, pairs = g.pairs;
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const unsigned rank = cluster_rank(), C = cluster_size();
    const int b = static_cast<int>(blockIdx.x / C);
    const int lo = static_cast<int>(rank) * chunk, hi = min(lo + chunk, N), n_local = max(hi - lo, 0);
    const TF* f = features + static_cast<int64_t>(b) * N * D;
    const int P = a.num_prefix, m = a.num_landmarks;
    const bool use_scores = scores != nullptr && (a.massive_ratio > 0.f || a.artifact_ratio > 0.f) && P < N;

    // ---- 0. stage this CTA's features: coalesced reads of its contiguous rows, pair-major stores
    if (kOnChip) {
        TF* s_scalar = reinterpret_cast<TF*>(s_feat);
        const TF* src = f + static_cast<int64_t>(lo) * D;
        const int total = n_local * D;
        for (int k = tid; k < total; k += kFpsThreads) {
            const int t = k / D, c = k - t * D;
            s_scalar[((c >> 1) * chunk + t) * 2 + (c & 1)] = src[k];
        }
        if (D & 1)  // odd D: the padding channel is 0 in every token and in the point: adds +0
            for (int t = tid; t < n_local; t += kFpsThreads) s_scalar[((D >> 1) * chunk + t) * 2 + 1] = from_float<TF>(0.f);
    }

    // ---- 1. lower median of scores[P:N]: 8-bit radix select over the cluster's histograms
    float med = 0.f;
    if (use_scores) {
        const TS* s = scores + static_cast<int64_t>(b) * N;
        if (tid == 0) { s_ctrl[0] = 0; s_ctrl[1] = 0; s_ctrl[2] = static_cast<uint32_t>((N - P - 1) / 2); }
        for (int shift = 24; shift >= 0; shift -= 8) {
            for (int i = tid; i < 256; i += kFpsThreads) s_hist[i] = 0;
            __syncthreads();
            const uint32_t prefix = s_ctrl[0], mask = s_ctrl[1];
            for (int i = max(lo, P) + tid; i < hi; i += kFpsThreads) {
                const uint32_t key = float_key(to_float(s[i]));
                if ((key & mask) == prefix) atomicAdd(&s_hist[(key >> shift) & 255u], 1u);
            }
            cluster_sync();  // every CTA's histogram is complete
            for (int i = tid; i < 256; i += kFpsThreads) {
                uint32_t sum = 0;
                for (unsigned r = 0; r < C; ++r) sum += cluster_map(s_hist, r)[i];
                s_hsum[i] = sum;
            }
            __syncthreads();
            if (tid == 0) {  // every CTA finds the same bin
                uint32_t k = s_ctrl[2], cum = 0, bin = 0;
                for (; bin < 256; ++bin) {
                    if (cum + s_hsum[bin] > k) break;
                    cum += s_hsum[bin];
                }
                s_ctrl[2] = k - cum;
                s_ctrl[0] = prefix | (bin << shift);
                s_ctrl[1] = mask | (255u << shift);
            }
            cluster_sync();  // nobody clears its histogram while another CTA still reads it
        }
        med = key_float(s_ctrl[0]);
    }
    const float massive_thr = a.massive_ratio * med, artifact_thr = a.artifact_ratio * med;
    const TS* scores_b = use_scores ? scores + static_cast<int64_t>(b) * N : nullptr;
    auto classify = [&](int i) { return token_class(i, P, scores_b, use_scores, a, massive_thr, artifact_thr); };

    // ---- 2. class counts: this CTA's, then the cluster's totals and the counts before this CTA
    uint64_t local = 0;
    for (int i = lo + tid; i < hi; i += kFpsThreads) local += class_counter(classify(i));
    uint64_t cta_total;
    block_exclusive_scan<kFpsWarps>(local, &cta_total, s_scan);
    if (tid == 0) *s_count = cta_total;
    cluster_sync();
    uint64_t before = 0, totals = 0;
    for (unsigned r = 0; r < C; ++r) {
        const uint64_t v = *cluster_map(s_count, r);
        totals += v;
        if (r < rank) before += v;
    }
    const int G = static_cast<int>(totals & kMask21), E = static_cast<int>((totals >> kShiftE) & kMask21);
    const int picked_total = min(m - P, E);  // ranks G .. G+picked_total-1 belong to FPS picks

    // ---- 3. guaranteed and artifact tokens go straight to their output slots; eligible tokens
    //         start at +inf, the others at -inf (never picked)
    uint64_t offset = before;
    for (int base = lo; base < hi; base += kFpsThreads) {
        const int i = base + tid;
        const int cls = i < hi ? classify(i) : -1;
        uint64_t round_total;
        const uint64_t pos = offset + block_exclusive_scan<kFpsWarps>(cls >= 0 ? class_counter(cls) : 0ull, &round_total, s_scan);
        offset += round_total;
        if (i >= hi) continue;
        float md = -INFINITY;
        int slot = -1;
        if (cls == 0) slot = static_cast<int>(pos & kMask21);
        else if (cls == 1) slot = G + picked_total + static_cast<int>((pos >> kShiftA) & kMask21);
        else md = INFINITY;
        if (slot >= 0 && slot < m) out[static_cast<int64_t>(b) * m + slot] = i;
        s_md[i - lo] = md;
    }
    __syncthreads();

    // ---- 4. FPS: picks G .. min(m, G+E)-1 (later picks of the reference never reach the output)
    const int steps = max(min(m - G, E), 0);
    const float* point = reinterpret_cast<const float*>(s_point);
    int prev = -1;
    for (int t = 0; t < steps; ++t) {
        uint64_t best = 0;
        for (int li = tid; li < n_local; li += kFpsThreads) {
            float md = s_md[li];
            if (prev >= 0 && md != -INFINITY) {
                if (lo + li == prev) {
                    md = -INFINITY;
                } else {
                    float dist = 0.f;
                    if (kOnChip) {
                        const Pair* col = s_feat + li;
                        for (int p = 0; p < pairs; ++p) {
                            const float2 x = pair_to_float2(col[p * chunk]);
                            const float2 q = s_point[p];
                            const float d0 = __fsub_rn(x.x, q.x);
                            dist = __fadd_rn(dist, __fmul_rn(d0, d0));
                            const float d1 = __fsub_rn(x.y, q.y);
                            dist = __fadd_rn(dist, __fmul_rn(d1, d1));
                        }
                    } else {
                        const TF* fi = f + static_cast<int64_t>(lo + li) * D;
                        for (int c = 0; c < D; ++c) {
                            const float d0 = __fsub_rn(to_float(fi[c]), point[c]);
                            dist = __fadd_rn(dist, __fmul_rn(d0, d0));
                        }
                    }
                    md = fminf(md, dist);
                }
                s_md[li] = md;
            }
            const uint64_t key = argmax_key(md, lo + li);
            best = key > best ? key : best;
        }
        best = warp_max_u64(best);
        if (lane == 0) s_warp[warp] = best;
        __syncthreads();
        if (warp == 0) {
            best = warp_max_u64(lane < kFpsWarps ? s_warp[lane] : 0ull);
            if (lane == 0) s_cand[t & 1] = best;  // parity: a CTA one step ahead writes the other slot
        }
        cluster_sync();
        // every warp reduces the cluster's candidates itself: no further barrier before the point load
        const uint64_t win = warp_max_u64(lane < static_cast<int>(C) ? *cluster_map(&s_cand[t & 1], lane) : 0ull);
        const int pick = key_index(win);
        if (rank == 0 && tid == 0) out[static_cast<int64_t>(b) * m + G + t] = pick;
        const TF* fp = f + static_cast<int64_t>(pick) * D;  // one row, read through L2
        for (int p = tid; p < pairs; p += kFpsThreads)
            s_point[p] = make_float2(to_float(fp[2 * p]), 2 * p + 1 < D ? to_float(fp[2 * p + 1]) : 0.f);
        __syncthreads();
        prev = pick;
    }
    cluster_sync();  // shared memory stays alive until every CTA is done reading it remotely
}

// The largest cluster this device schedules for `kernel` with `smem` bytes per CTA, among `want`
// and 8 (portable); 1 when the device or the compiled kernel has no clusters.
template <typename K>
int cluster_launchable(K kernel, int ctas, size_t smem, cudaStream_t stream) {
    if (ctas <= 1) return 1;
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(static_cast<unsigned>(ctas));
    cfg.blockDim = dim3(kFpsThreads);
    cfg.dynamicSmemBytes = smem;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = static_cast<unsigned>(ctas);
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    if (ctas > 8 && cudaFuncSetAttribute(kernel, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    if (cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    int n = 0;
    if (cudaOccupancyMaxActiveClusters(&n, kernel, &cfg) != cudaSuccess) {
        cudaGetLastError();
        return 0;
    }
    return n > 0 ? ctas : 0;
}

template <typename TF, typename TS, bool kOnChip>
int launch_fps(const void* features, const void* scores, int64_t B, int64_t N, int64_t D, const LandmarkAttrs& a,
               const LandmarkPlan& p, int32_t* out, cudaStream_t stream) {
    auto kernel = fps_cluster_kernel<TF, TS, kOnChip>;
    cudaError_t e = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(p.smem_bytes));
    if (e != cudaSuccess) return e;
    FpsArgs g{static_cast<int>(N), static_cast<int>(D), static_cast<int>(p.chunk), p.pairs, static_cast<int>(p.point_offset),
              static_cast<int>(p.md_offset), static_cast<int>(p.feat_offset)};
    cudaLaunchConfig_t cfg = {};
    cfg.gridDim = dim3(static_cast<unsigned>(B * p.ctas));
    cfg.blockDim = dim3(kFpsThreads);
    cfg.dynamicSmemBytes = p.smem_bytes;
    cfg.stream = stream;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeClusterDimension;
    attr[0].val.clusterDim.x = static_cast<unsigned>(p.ctas);
    attr[0].val.clusterDim.y = 1;
    attr[0].val.clusterDim.z = 1;
    cfg.attrs = attr;
    cfg.numAttrs = p.ctas > 1 ? 1 : 0;
    return cudaLaunchKernelEx(&cfg, kernel, static_cast<const TF*>(features), static_cast<const TS*>(scores), g, a, out);
}

struct DeviceLimits {
    int smem_optin = 48 * 1024;
    bool clusters = false;
};

// Device limits for the FPS kernel: opt-in shared memory per block, and whether clusters can be
// launched (device support and a kernel binary compiled for sm_90+).
template <typename TF, typename TS>
DeviceLimits device_limits() {
    DeviceLimits l;
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) { cudaGetLastError(); return l; }
    if (cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev) == cudaSuccess) l.smem_optin = v;
    else cudaGetLastError();
    int cl = 0;
    if (cudaDeviceGetAttribute(&cl, cudaDevAttrClusterLaunch, dev) != cudaSuccess) { cudaGetLastError(); cl = 0; }
    cudaFuncAttributes fa;
    if (cl && cudaFuncGetAttributes(&fa, fps_cluster_kernel<TF, TS, true>) == cudaSuccess) l.clusters = fa.binaryVersion >= 90;
    else cudaGetLastError();
    return l;
}

// Host queries (device attributes, kernel binary version, cluster occupancy) are cached per
// device and kernel, so that a launch captured into a CUDA graph after a warm-up call makes none.
// The emulator changes its device between cases: no cache there.
template <typename F>
int cached_query(int tag, const void* kernel, int ctas, size_t smem, F query) {
#ifdef FNA_EMULATED
    (void)tag; (void)kernel; (void)ctas; (void)smem;
    return query();
#else
    static std::mutex mu;
    static std::map<std::tuple<int, int, const void*, int, size_t>, int> cache;
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) { cudaGetLastError(); return query(); }
    const auto key = std::make_tuple(dev, tag, kernel, ctas, smem);
    {
        std::lock_guard<std::mutex> lock(mu);
        auto it = cache.find(key);
        if (it != cache.end()) return it->second;
    }
    const int v = query();
    std::lock_guard<std::mutex> lock(mu);
    cache[key] = v;
    return v;
#endif
}

// Plan (largest cluster first: 16 where the device schedules it, else 8), then launch.
template <typename TF, typename TS>
int launch_fps_planned(const void* features, const void* scores, int64_t B, int64_t N, int64_t D, const LandmarkAttrs& a,
                       int32_t* out, bool* legacy, cudaStream_t stream) {
    const void* id = reinterpret_cast<const void*>(fps_cluster_kernel<TF, TS, true>);
    DeviceLimits lim;
    lim.smem_optin = cached_query(0, id, 0, 0, [] { return device_limits<TF, TS>().smem_optin; });
    lim.clusters = cached_query(1, id, 0, 0, [] { return device_limits<TF, TS>().clusters ? 1 : 0; }) != 0;
    const int caps[3] = {16, 8, 1};
    for (int cap : caps) {
        if (cap > 1 && !lim.clusters) continue;
        const LandmarkPlan p = plan_landmarks(a.method, N, D, static_cast<int>(sizeof(TF)), cap, lim.smem_optin);
        if (p.legacy) break;
        const int ok = cached_query(p.features_on_chip ? 2 : 3, id, p.ctas, p.smem_bytes, [&] {
            return p.features_on_chip ? cluster_launchable(fps_cluster_kernel<TF, TS, true>, p.ctas, p.smem_bytes, stream)
                                      : cluster_launchable(fps_cluster_kernel<TF, TS, false>, p.ctas, p.smem_bytes, stream);
        });
        if (ok != p.ctas) continue;
        *legacy = false;
        return p.features_on_chip ? launch_fps<TF, TS, true>(features, scores, B, N, D, a, p, out, stream)
                                  : launch_fps<TF, TS, false>(features, scores, B, N, D, a, p, out, stream);
    }
    *legacy = true;
    return 0;
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
    if (!validate(a).empty() || N < 1 || N >= contract::kMaxKernelTokens || D < 1 || a.num_landmarks > N || B < 0) return kErrBadArgs;
    if (B == 0) return 0;
    if (workspace_bytes < landmarks_workspace_size(B, N)) return kErrWorkspace;
    float* min_dist = static_cast<float*>(align256(workspace));
    int32_t* rank = static_cast<int32_t*>(align256(min_dist + B * N));
    cudaStream_t s = static_cast<cudaStream_t>(stream);
    const bool h = ft == kFloat16;
    const bool sh = scores != nullptr && st == kFloat16;
    if (a.method == Method::kFps) {  // the cluster kernel, unless even its min-distances do not fit on chip
        bool legacy = true;
        int rc = 0;
        if (!h && !sh) rc = launch_fps_planned<float, float>(features, scores, B, N, D, a, out, &legacy, s);
        else if (!h && sh) rc = launch_fps_planned<float, __half>(features, scores, B, N, D, a, out, &legacy, s);
        else if (h && !sh) rc = launch_fps_planned<__half, float>(features, scores, B, N, D, a, out, &legacy, s);
        else rc = launch_fps_planned<__half, __half>(features, scores, B, N, D, a, out, &legacy, s);
        if (!legacy) return rc;
    }
    if (!h && !sh) return launch_typed<float, float>(features, scores, B, N, D, a, out, min_dist, rank, s);
    if (!h && sh) return launch_typed<float, __half>(features, scores, B, N, D, a, out, min_dist, rank, s);
    if (h && !sh) return launch_typed<__half, float>(features, scores, B, N, D, a, out, min_dist, rank, s);
    return launch_typed<__half, __half>(features, scores, B, N, D, a, out, min_dist, rank, s);
}

}  // namespace cuda
}  // namespace fna
