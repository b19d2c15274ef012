// The CPU reference against facts that hold independently of any implementation.
#include <algorithm>
#include <numeric>

#include "reference.h"
#include "test_util.h"

using namespace fna;

static std::vector<int32_t> select(const std::vector<float>& f, const std::vector<float>* scores, int64_t N, int64_t D,
                                   LandmarkAttrs a, std::string* err = nullptr) {
    std::vector<int32_t> out(a.num_landmarks, -1);
    std::string e = ref::landmarks(f.data(), scores ? scores->data() : nullptr, 1, N, D, a, out.data());
    if (err) *err = e;
    else CHECK_MSG(e.empty(), e);
    return out;
}

static void test_fps_on_a_line() {
    const int64_t N = 9;
    std::vector<float> f(N);
    for (int i = 0; i < N; ++i) f[i] = static_cast<float>(i);  // points 0..8 on a line
    LandmarkAttrs a;
    a.num_landmarks = 3;
    auto idx = select(f, nullptr, N, 1, a);
    CHECK(idx[0] == 0 && idx[1] == 8 && idx[2] == 4);  // first eligible, farthest, then the middle
    a.num_prefix = 2;  // tokens 0,1 guaranteed; FPS starts at token 2
    a.num_landmarks = 4;
    idx = select(f, nullptr, N, 1, a);
    CHECK(idx[0] == 0 && idx[1] == 1 && idx[2] == 2 && idx[3] == 8);
}

static void test_ties_go_to_lowest_index() {
    const int64_t N = 6;
    std::vector<float> f{0, 5, 5, -5, -5, 0};  // 1,2 and 3,4 are equally far from 0
    LandmarkAttrs a;
    a.num_landmarks = 3;
    auto idx = select(f, nullptr, N, 1, a);
    CHECK(idx[0] == 0 && idx[1] == 1 && idx[2] == 3);
}

static void test_all_tokens_is_a_permutation() {
    Rng rng(1);
    for (int64_t N : {1, 5, 33}) {
        auto f = rng.normals(N * 4);
        LandmarkAttrs a;
        a.num_landmarks = static_cast<int32_t>(N);
        a.num_prefix = N > 1 ? 1 : 0;
        auto idx = select(f, nullptr, N, 4, a);
        std::vector<int32_t> sorted(idx);
        std::sort(sorted.begin(), sorted.end());
        for (int64_t i = 0; i < N; ++i) CHECK(sorted[i] == i);
        CHECK(idx[0] == 0);
    }
}

static void test_massive_and_artifact() {
    const int64_t N = 12;
    Rng rng(2);
    auto f = rng.normals(N * 3);
    std::vector<float> s(N, 1.0f);
    s[7] = 100.f;  // massive (>= 10 x median 1)
    s[3] = 5.f;    // artifact (>= 4 x median, below massive)
    LandmarkAttrs a;
    a.num_landmarks = 4;
    a.num_prefix = 1;
    a.massive_ratio = 10.f;
    a.artifact_ratio = 4.f;
    auto idx = select(f, &s, N, 3, a);
    CHECK(idx[0] == 0 && idx[1] == 7);  // prefix, then massive, in index order
    CHECK(std::find(idx.begin(), idx.end(), 3) == idx.end());  // artifact excluded
    a.num_landmarks = static_cast<int32_t>(N);
    idx = select(f, &s, N, 3, a);
    CHECK(idx[N - 1] == 3);  // excluded tokens only fill in last
    // lower median of an even count is the lower middle element
    std::vector<float> v{4, 1, 3, 2};
    CHECK(ref::lower_median(v.data(), 4) == 2.f);
    // ratios without scores are rejected
    std::string err;
    select(f, nullptr, N, 3, a, &err);
    CHECK_MSG(contains(err, "scores"), err);
}

static void test_grid() {
    const int64_t N = 10;
    std::vector<float> f(N, 0.f);
    LandmarkAttrs a;
    a.num_landmarks = 5;
    a.method = Method::kGrid;
    auto idx = select(f, nullptr, N, 1, a);
    for (int j = 0; j < 5; ++j) CHECK(idx[j] == 2 * j);
    a.num_prefix = 1;  // 9 eligible tokens (1..9), 4 picks at positions floor(j*9/4) = 0,2,4,6
    idx = select(f, nullptr, N, 1, a);
    CHECK(idx[0] == 0 && idx[1] == 1 && idx[2] == 3 && idx[3] == 5 && idx[4] == 7);
}

static void test_bad_landmark_args() {
    std::vector<float> f(8, 0.f);
    LandmarkAttrs a;
    a.num_landmarks = 9;
    std::string err;
    select(f, nullptr, 8, 1, a, &err);
    CHECK_MSG(contains(err, "more than the 8 tokens"), err);
    a.num_landmarks = 2;
    a.num_prefix = 3;
    select(f, nullptr, 8, 1, a, &err);
    CHECK_MSG(contains(err, "do not fit"), err);
}

// Dense softmax attention in double, the limit Nystrom reaches with m = N.
static std::vector<double> dense(const std::vector<float>& q, const std::vector<float>& k, const std::vector<float>& v,
                                 int64_t BH, int64_t N, int64_t d, double s) {
    std::vector<double> out(BH * N * d);
    for (int64_t h = 0; h < BH; ++h)
        for (int64_t i = 0; i < N; ++i) {
            std::vector<double> p(N);
            double mx = -1e300, sum = 0;
            for (int64_t j = 0; j < N; ++j) {
                double dot = 0;
                for (int64_t c = 0; c < d; ++c) dot += double(q[(h * N + i) * d + c]) * k[(h * N + j) * d + c];
                p[j] = s * dot;
                mx = std::max(mx, p[j]);
            }
            for (auto& x : p) { x = std::exp(x - mx); sum += x; }
            for (int64_t c = 0; c < d; ++c) {
                double acc = 0;
                for (int64_t j = 0; j < N; ++j) acc += p[j] * v[(h * N + j) * d + c];
                out[(h * N + i) * d + c] = acc / sum;
            }
        }
    return out;
}

static void test_nystrom_equals_dense_when_m_is_n() {
    const int64_t B = 2, H = 2, N = 12, d = 8;
    Rng rng(3);
    auto q = rng.normals(B * H * N * d, 0.5f), k = rng.normals(B * H * N * d, 0.5f), v = rng.normals(B * H * N * d);
    std::vector<int32_t> idx(B * N);
    for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < N; ++i) idx[b * N + i] = static_cast<int32_t>((i * 5 + b) % N);  // a permutation
    NystromAttrs a;
    a.pinv_iters = 30;
    std::vector<float> out(B * H * N * d);
    std::string e = ref::nystrom(q.data(), k.data(), v.data(), idx.data(), B, H, N, d, d, N, a, out.data());
    CHECK_MSG(e.empty(), e);
    auto want = dense(q, k, v, B * H, N, d, 1.0 / std::sqrt(double(d)));
    double err = 0, ref_norm = 0;
    for (size_t i = 0; i < out.size(); ++i) {
        err = std::max(err, std::fabs(out[i] - want[i]));
        ref_norm = std::max(ref_norm, std::fabs(want[i]));
    }
    CHECK_MSG(err <= 1e-3 * ref_norm, std::to_string(err));
}

static void test_bad_nystrom_args() {
    std::vector<float> x(1 * 1 * 4 * 2, 0.f), out(x.size());
    std::vector<int32_t> idx{0, 4};
    NystromAttrs a;
    std::string e = ref::nystrom(x.data(), x.data(), x.data(), idx.data(), 1, 1, 4, 2, 2, 2, a, out.data());
    CHECK_MSG(contains(e, "outside 0..3"), e);
    idx[1] = 1;
    a.pinv_iters = -1;
    e = ref::nystrom(x.data(), x.data(), x.data(), idx.data(), 1, 1, 4, 2, 2, 2, a, out.data());
    CHECK_MSG(contains(e, "pinv_iters"), e);
}

int main() {
    test_fps_on_a_line();
    test_ties_go_to_lowest_index();
    test_all_tokens_is_a_permutation();
    test_massive_and_artifact();
    test_grid();
    test_bad_landmark_args();
    test_nystrom_equals_dense_when_m_is_n();
    test_bad_nystrom_args();
    return finish("test_reference");
}
