// CUDA kernels against the CPU reference. Exits 77 (ctest: skipped) with the reason printed
// when the library was built without CUDA or no GPU is visible.
#include <cstdio>
#include <cstring>
#include <functional>

#include "kernels.h"
#include "reference.h"
#include "test_util.h"

#ifdef FNA_WITH_CUDA
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

using namespace fna;

template <typename T>
static T* to_device(const std::vector<T>& h) {
    T* d = nullptr;
    cudaMalloc(reinterpret_cast<void**>(&d), h.size() * sizeof(T) + 1);
    cudaMemcpy(d, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
    return d;
}

// fp32 -> 16-bit bits of `type` (fp16 or bf16), and the rounded values the reference then gets.
static std::vector<uint16_t> to_bits16(const std::vector<float>& x, cuda::DType type, std::vector<float>* rounded) {
    std::vector<uint16_t> out(x.size());
    rounded->resize(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
        if (type == cuda::kFloat16) {
            __half h = __float2half_rn(x[i]);
            std::memcpy(&out[i], &h, 2);
            (*rounded)[i] = __half2float(h);
        } else {
            __nv_bfloat16 h = __float2bfloat16_rn(x[i]);
            std::memcpy(&out[i], &h, 2);
            (*rounded)[i] = __bfloat162float(h);
        }
    }
    return out;
}

static float from_bits16(uint16_t b, cuda::DType type) {
    if (type == cuda::kFloat16) { __half h; std::memcpy(&h, &b, 2); return __half2float(h); }
    __nv_bfloat16 h; std::memcpy(&h, &b, 2); return __bfloat162float(h);
}

static const char* type_name(cuda::DType t) { return t == cuda::kFloat32 ? "fp32" : t == cuda::kFloat16 ? "fp16" : "bf16"; }

// Feature patterns of a landmark case.
enum class Feat { kNormal, kTies };  // kTies: every token is one of 3 vectors, so distances tie exactly

static void landmark_case(int64_t B, int64_t N, int64_t D, LandmarkAttrs a, bool with_scores, unsigned seed,
                          bool half = false, Feat pattern = Feat::kNormal) {
    Rng rng(seed);
    auto f = rng.normals(B * N * D);
    if (pattern == Feat::kTies)
        for (int64_t t = 0; t < B * N; ++t)
            for (int64_t c = 0; c < D; ++c) f[t * D + c] = static_cast<float>((t * 7 + (t / 5)) % 3) + 0.25f * static_cast<float>(c % 2);
    std::vector<float> s(B * N);
    for (auto& x : s) x = 1.f + rng.uniform();
    for (int64_t b = 0; b < B; ++b) {  // massive and artifact tokens spread over the image (and its CTAs)
        s[b * N + (b + 3) % N] = 50.f; s[b * N + (b + 5) % N] = 3.f;
        s[b * N + N / 2 + 1 - b] = 60.f; s[b * N + N - 2] = 45.f; s[b * N + N / 3] = 3.5f; s[b * N + N - 1] = 2.5f;
    }
    std::vector<float> fr = f;  // what the reference sees: fp16 features rounded first
    std::vector<uint16_t> fh;
    if (half) fh = to_bits16(f, cuda::kFloat16, &fr);
    std::vector<int32_t> want(B * a.num_landmarks), got(B * a.num_landmarks, -1);
    std::string e = ref::landmarks(fr.data(), with_scores ? s.data() : nullptr, B, N, D, a, want.data());
    CHECK_MSG(e.empty(), e);
    void* df = half ? static_cast<void*>(to_device(fh)) : static_cast<void*>(to_device(f));
    float* ds = to_device(s);
    int32_t* dout = to_device(got);
    size_t ws_bytes = landmarks_workspace_size(B, N);
    void* ws = nullptr;
    cudaMalloc(&ws, ws_bytes);
    int rc = cuda::launch_landmarks(df, half ? cuda::kFloat16 : cuda::kFloat32, with_scores ? ds : nullptr, cuda::kFloat32, B,
                                    N, D, a, dout, ws, ws_bytes, nullptr);
    CHECK_MSG(rc == 0, cuda::error_string(rc));
    CHECK(cudaDeviceSynchronize() == cudaSuccess);
    cudaMemcpy(got.data(), dout, got.size() * 4, cudaMemcpyDeviceToHost);
    CHECK_MSG(got == want, std::string("landmarks ") + (half ? "fp16" : "fp32") + " B=" + std::to_string(B) + " N=" +
                               std::to_string(N) + " D=" + std::to_string(D) + " m=" + std::to_string(a.num_landmarks));
    cudaFree(df); cudaFree(ds); cudaFree(dout); cudaFree(ws);
}

// NystromAttention kernels vs the C++ reference (fed the same rounded inputs): fp32 rel err <= 1e-4,
// fp16/bf16 <= 1e-2. misalign shifts q/k/v/out by one element off their 16-byte alignment (the
// kernels must fall back to element-wise tile loads, and to one key split for an fp16 output
// that cannot hold fp32 partials).
static void nystrom_case(int64_t B, int64_t H, int64_t N, int64_t d, int64_t dv, int64_t m, cuda::DType type, unsigned seed,
                         bool misalign = false) {
    Rng rng(seed);
    const int64_t nqk = B * H * N * d, nv = B * H * N * dv;
    auto q = rng.normals(nqk, 0.7f), k = rng.normals(nqk, 0.7f), v = rng.normals(nv);
    std::vector<int32_t> idx(B * m);
    for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < m; ++i) idx[b * m + i] = static_cast<int32_t>((i * N / m + b) % N);
    std::vector<float> qr = q, kr = k, vr = v;
    std::vector<uint16_t> qh, kh, vh;
    const bool half = type != cuda::kFloat32;
    if (half) { qh = to_bits16(q, type, &qr); kh = to_bits16(k, type, &kr); vh = to_bits16(v, type, &vr); }
    NystromAttrs a;
    std::vector<float> want(nv);
    std::string e = ref::nystrom(qr.data(), kr.data(), vr.data(), idx.data(), B, H, N, d, dv, m, a, want.data());
    CHECK_MSG(e.empty(), e);
    const size_t es = half ? 2 : 4, shift = misalign ? es : 0;
    auto upload = [&](const void* host, size_t bytes) {
        char* p = nullptr;
        cudaMalloc(reinterpret_cast<void**>(&p), bytes + 16);
        cudaMemcpy(p + shift, host, bytes, cudaMemcpyHostToDevice);
        return p;
    };
    char* dq = half ? upload(qh.data(), nqk * 2) : upload(q.data(), nqk * 4);
    char* dk = half ? upload(kh.data(), nqk * 2) : upload(k.data(), nqk * 4);
    char* dvv = half ? upload(vh.data(), nv * 2) : upload(v.data(), nv * 4);
    int32_t* didx = to_device(idx);
    char* dout = nullptr;
    void* ws = nullptr;
    cudaMalloc(reinterpret_cast<void**>(&dout), nv * es + 16);
    size_t ws_bytes = nystrom_workspace_size(B, H, N, d, dv, m);
    cudaMalloc(&ws, ws_bytes);
    int rc = cuda::launch_nystrom(dq + shift, dk + shift, dvv + shift, type, didx, B, H, N, d, dv, m, a, dout + shift, ws, ws_bytes, nullptr);
    CHECK_MSG(rc == 0, cuda::error_string(rc));
    CHECK(cudaDeviceSynchronize() == cudaSuccess);
    std::vector<float> got(nv);
    if (half) {
        std::vector<uint16_t> hb(nv);
        cudaMemcpy(hb.data(), dout + shift, nv * 2, cudaMemcpyDeviceToHost);
        for (int64_t i = 0; i < nv; ++i) got[i] = from_bits16(hb[i], type);
    } else {
        cudaMemcpy(got.data(), dout + shift, nv * 4, cudaMemcpyDeviceToHost);
    }
    double num = 0, den = 0;
    for (int64_t i = 0; i < nv; ++i) { num += double(got[i] - want[i]) * (got[i] - want[i]); den += double(want[i]) * want[i]; }
    const double rel = std::sqrt(num / std::max(den, 1e-30));  // NaN fails the check below
    char msg[200];
    std::snprintf(msg, sizeof msg, "nystrom %s B=%lld H=%lld N=%lld d=%lld dv=%lld m=%lld%s splits=%d rel=%.3g", type_name(type),
                  (long long)B, (long long)H, (long long)N, (long long)d, (long long)dv, (long long)m, misalign ? " misaligned" : "",
                  nystrom_num_splits(B * H, N, m, dv, es), rel);
    CHECK_MSG(rel <= (half ? 1e-2 : 1e-4), msg);
    std::printf("%s\n", msg);
    cudaFree(dq); cudaFree(dk); cudaFree(dvv); cudaFree(didx); cudaFree(dout); cudaFree(ws);
}

#ifdef FNA_EMULATED
// The FPS kernel's paths, each against the C++ reference (identical indices). The emulated device
// (emu::g_device) steers the launcher: Hopper-like by default; smaller shared memory or cluster
// limits force more CTAs, the L2-streaming path or the 16 -> 8 cluster fallback; an Ampere-like
// device gets one CTA per image.
static long cluster_launches_of(const std::function<void()>& run) {
    const long before = emu::g_cluster_launches;
    run();
    return emu::g_cluster_launches - before;
}

static void emulated_landmark_cases() {
    const emu::Device hopper = emu::g_device;
    LandmarkAttrs a;
    // single CTA (N <= 512 tokens): fp32, B = 2
    a.num_landmarks = 12;
    CHECK(cluster_launches_of([&] { landmark_case(2, 100, 8, a, false, 1); }) == 0);
    // multi-CTA cluster, N not a multiple of the split (1501 = 3 CTAs of 501, 501, 499), prefix
    a.num_landmarks = 24; a.num_prefix = 1;
    CHECK(cluster_launches_of([&] { landmark_case(1, 1501, 6, a, false, 2); }) == 1);
    // fp16 features, odd D (padded channel pair), B = 2, 3 CTAs per image
    a.num_landmarks = 20;
    CHECK(cluster_launches_of([&] { landmark_case(2, 1100, 5, a, false, 3, true); }) == 1);
    // prefix + massive + artifact tokens across CTAs, B = 2, fp32 and fp16
    a.num_landmarks = 30; a.num_prefix = 2; a.massive_ratio = 10.f; a.artifact_ratio = 2.f;
    CHECK(cluster_launches_of([&] { landmark_case(2, 1300, 8, a, true, 4); }) == 1);
    CHECK(cluster_launches_of([&] { landmark_case(1, 1300, 7, a, true, 5, true); }) == 1);
    // m larger than the eligible tokens left: artifacts fill the last slots
    a.num_landmarks = 120; a.num_prefix = 0; a.massive_ratio = 10.f; a.artifact_ratio = 1.05f;
    landmark_case(1, 130, 4, a, true, 6);
    // exact ties everywhere (3 distinct vectors): the lowest index wins, across CTA boundaries too
    a.num_landmarks = 16; a.num_prefix = 1; a.massive_ratio = 0.f; a.artifact_ratio = 0.f;
    CHECK(cluster_launches_of([&] { landmark_case(2, 1201, 4, a, false, 7, false, Feat::kTies); }) == 1);
    landmark_case(1, 77, 3, a, false, 8, true, Feat::kTies);
    // m = N over a cluster: a small shared-memory limit splits 200 tokens over 4 CTAs
    emu::g_device.smem_optin = 6 * 1024;
    a.num_landmarks = 200; a.num_prefix = 0;
    CHECK(cluster_launches_of([&] { landmark_case(1, 200, 8, a, false, 9); }) == 1);
    // 15 CTAs (a non-portable cluster, > 8) with features on chip ...
    a.num_landmarks = 16; a.num_prefix = 1;
    CHECK(cluster_launches_of([&] { landmark_case(1, 800, 8, a, false, 10); }) == 1);
    // ... and where the device takes at most 8: 2 CTAs streaming the features from L2
    emu::g_device.max_cluster = 8;
    CHECK(cluster_launches_of([&] { landmark_case(1, 800, 8, a, false, 11); }) == 1);
    CHECK(plan_landmarks(Method::kFps, 800, 8, 4, 8, 6 * 1024).features_on_chip == false);
    // Ampere-like device (no clusters): one CTA per image, features on chip
    emu::g_device = hopper;
    emu::g_device.cc_major = 8; emu::g_device.max_cluster = 0; emu::g_device.cluster_launch = false;
    a.num_landmarks = 24; a.massive_ratio = 10.f; a.artifact_ratio = 2.f;
    CHECK(cluster_launches_of([&] { landmark_case(2, 1300, 8, a, true, 12, true); }) == 0);
    // ... and when even one CTA cannot hold the features: streamed from L2, min-distances on chip
    emu::g_device.smem_optin = 16 * 1024;
    CHECK(cluster_launches_of([&] { landmark_case(1, 1500, 16, a, true, 13); }) == 0);
    // ... and when not even the min-distances fit: the one-CTA kernel with them in global memory
    emu::g_device.smem_optin = 8 * 1024;
    landmark_case(1, 2100, 4, a, true, 14);
    emu::g_device = hopper;
    // grid method (the one-CTA kernel), prefix + massive + artifact
    a.method = Method::kGrid; a.num_landmarks = 30; a.num_prefix = 2;
    landmark_case(2, 1300, 4, a, true, 15);
}
#endif

int main() {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
        std::printf("test_kernels: SKIPPED: no CUDA device visible\n");
        return 77;
    }
    LandmarkAttrs a;
    const cuda::DType f32 = cuda::kFloat32, f16 = cuda::kFloat16, b16 = cuda::kBFloat16;
#ifdef FNA_EMULATED  // CPU emulation (emulate_kernels.py): small shapes, same code paths
    std::printf("test_kernels: running on the CPU emulator\n");
    emulated_landmark_cases();
    // CUDA cores (fp32): split over N + merge in the output tensor, generic head dims, m = N, d > 128
    nystrom_case(1, 2, 70, 32, 32, 16, f32, 6);
    nystrom_case(1, 1, 600, 80, 80, 33, f32, 7);     // 2 key splits, d = 80
    nystrom_case(1, 1, 40, 64, 64, 40, f32, 9);      // m = N
    nystrom_case(1, 1, 50, 136, 136, 10, f32, 11);   // head dim > 128 (8 accumulators per lane)
    nystrom_case(1, 1, 300, 16, 16, 260, f32, 12);   // m > 256: the multi-launch m x m path
    // tensor cores (fp16, bf16): m not a multiple of 16, N not a multiple of the 64-key tile
    nystrom_case(1, 2, 75, 32, 32, 20, f16, 10);
    nystrom_case(1, 1, 37, 32, 32, 1, f16, 13);      // m = 1
    nystrom_case(2, 1, 150, 80, 80, 7, b16, 14);     // d = 80, B = 2
    nystrom_case(1, 1, 600, 32, 32, 16, f16, 15);    // 2 key splits, partials in the output
    nystrom_case(1, 1, 600, 64, 64, 33, b16, 16);    // 2 key splits, bf16
    nystrom_case(1, 1, 130, 128, 128, 64, f16, 17);  // d = 128
    nystrom_case(1, 1, 140, 64, 64, 128, b16, 18);   // m = 128: two 64-row query tiles
    nystrom_case(1, 1, 210, 32, 32, 200, f16, 19);   // m = 200 (fused m x m system up to 256)
    nystrom_case(1, 2, 90, 64, 40, 33, f16, 20);     // dv != d
    nystrom_case(3, 2, 70, 32, 32, 12, b16, 21);     // B*H = 6
    nystrom_case(1, 1, 100, 36, 36, 24, b16, 22);    // d % 8 != 0: element-wise tile loads
    nystrom_case(1, 1, 600, 64, 64, 24, f16, 23, true);  // misaligned q/k/v/out pointers
    nystrom_case(1, 1, 50, 136, 136, 10, f16, 24);   // fp16 with d > 128: CUDA-core kernels
    nystrom_case(1, 1, 300, 32, 32, 260, b16, 25);   // bf16, m > 256: multi-launch system, fp32 W
    return finish("test_kernels");
#endif
    a.num_landmarks = 16;
    landmark_case(2, 200, 24, a, false, 1);
    a.num_prefix = 1;
    landmark_case(3, 1500, 64, a, false, 2);
    a.num_landmarks = 97; a.massive_ratio = 10.f; a.artifact_ratio = 2.f;
    landmark_case(2, 2500, 32, a, true, 3);
    a.num_landmarks = 300; a.num_prefix = 0; a.massive_ratio = 0.f; a.artifact_ratio = 0.f;
    landmark_case(1, 300, 8, a, false, 4);  // m = N
    a.method = Method::kGrid; a.num_landmarks = 50; a.num_prefix = 2; a.massive_ratio = 10.f; a.artifact_ratio = 2.f;
    landmark_case(2, 777, 16, a, true, 5);
    nystrom_case(1, 2, 100, 32, 32, 16, f32, 6);
    nystrom_case(2, 3, 1500, 64, 64, 64, f32, 7);       // split over N
    nystrom_case(1, 2, 333, 40, 40, 33, f32, 8);        // odd sizes, generic head dim
    nystrom_case(1, 1, 64, 128, 128, 64, f32, 9);       // m = N
    nystrom_case(2, 2, 2100, 64, 64, 128, f16, 10);     // fp16, tensor cores
    nystrom_case(1, 16, 4096, 64, 64, 128, f16, 11);    // the benchmark shape (15 key splits)
    nystrom_case(1, 16, 4096, 64, 64, 256, b16, 12);    // bf16, m = 256
    for (int64_t dd : {32, 64, 80, 128})
        for (cuda::DType t : {f32, f16, b16}) nystrom_case(2, 3, 1111, dd, dd, 77, t, 13 + static_cast<unsigned>(dd));
    nystrom_case(1, 2, 700, 64, 64, 300, f16, 14);      // m > 256: multi-launch m x m path
    nystrom_case(1, 1, 777, 64, 64, 200, b16, 15, true);  // misaligned inputs
    nystrom_case(40000, 2, 64, 32, 32, 8, f16, 16);     // B*H = 80000 > 65535
    return finish("test_kernels");
}
#else
int main() {
    std::printf("test_kernels: SKIPPED: library built without CUDA (%s)\n", fna::cuda::error_string(fna::cuda::kErrNotBuilt));
    return 77;
}
#endif
