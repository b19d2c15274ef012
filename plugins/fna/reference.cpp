#include "reference.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace fna {
namespace ref {

float lower_median(const float* x, int64_t n) {
    std::vector<float> v(x, x + n);
    std::nth_element(v.begin(), v.begin() + (n - 1) / 2, v.end());
    return v[(n - 1) / 2];
}

// ------------------------------------------------------------------ landmarks
//
// Every token gets a rank; the landmarks are the m lowest ranks, in rank order.
//   guaranteed (prefix, then massive): 0 .. G-1 in index order
//   picked by FPS at step t: G + t        (grid: G + position among eligible tokens)
//   artifact: G + E + position among artifact tokens
//   eligible, never picked: 2N + index
std::string landmarks(const float* features, const float* scores, int64_t B, int64_t N, int64_t D,
                      const LandmarkAttrs& a, int32_t* out) {
    std::string err = validate(a);
    if (err.empty() && (a.massive_ratio > 0 || a.artifact_ratio > 0) && !scores)
        err = "massive_ratio/artifact_ratio need per-token scores [B, N]";
    if (err.empty() && (B < 0 || N < 1 || D < 1)) err = "features must have B >= 0, N >= 1, D >= 1";
    if (err.empty() && a.num_landmarks > N)
        err = "num_landmarks=" + std::to_string(a.num_landmarks) + " is more than the " + std::to_string(N) + " tokens";
    if (!err.empty()) return "FnaLandmarks: " + err;

    const int64_t m = a.num_landmarks, P = a.num_prefix;
    const float inf = std::numeric_limits<float>::infinity();
    std::vector<char> guaranteed(N), artifact(N), eligible(N);
    std::vector<int64_t> rank(N);
    std::vector<float> min_dist(N);

    for (int64_t b = 0; b < B; ++b) {
        const float* f = features + b * N * D;
        // 1. masks
        const bool use_scores = scores && (a.massive_ratio > 0 || a.artifact_ratio > 0) && P < N;
        float med = 0.0f;
        if (use_scores) med = lower_median(scores + b * N + P, N - P);
        for (int64_t i = 0; i < N; ++i) {
            const float s = use_scores ? scores[b * N + i] : 0.0f;
            guaranteed[i] = i < P || (use_scores && a.massive_ratio > 0 && s >= a.massive_ratio * med);
            artifact[i] = !guaranteed[i] && use_scores && a.artifact_ratio > 0 && s >= a.artifact_ratio * med;
            eligible[i] = !guaranteed[i] && !artifact[i];
        }
        int64_t G = 0, E = 0;
        for (int64_t i = 0; i < N; ++i) { G += guaranteed[i]; E += eligible[i]; }

        // 2. ranks of guaranteed, artifact and (for now) unpicked eligible tokens
        int64_t pg = 0, pa = 0;
        for (int64_t i = 0; i < N; ++i) {
            if (guaranteed[i]) rank[i] = pg++;
            else if (artifact[i]) rank[i] = G + E + pa++;
            else rank[i] = 2 * N + i;
        }

        // 3. picks among eligible tokens
        if (a.method == Method::kGrid) {
            const int64_t k = std::max<int64_t>(m - G, 0), e = std::max<int64_t>(E, 1);
            int64_t p = 0;
            for (int64_t i = 0; i < N; ++i) {
                if (!eligible[i]) continue;
                const int64_t j = (p * k + e - 1) / e;  // smallest j with floor(j*E/k) >= p
                if (j < k && (j * E) / std::max<int64_t>(k, 1) == p) rank[i] = G + p;
                ++p;
            }
        } else {
            for (int64_t i = 0; i < N; ++i) min_dist[i] = eligible[i] ? inf : -inf;
            const int64_t steps = std::min<int64_t>(m - P, E);  // later steps change nothing
            for (int64_t t = 0; t < steps; ++t) {
                int64_t pick = 0;  // argmax, ties to the lowest index
                for (int64_t i = 1; i < N; ++i)
                    if (min_dist[i] > min_dist[pick]) pick = i;
                rank[pick] = G + t;
                const float* fp = f + pick * D;
                for (int64_t i = 0; i < N; ++i) {
                    float dist = 0.0f;
                    for (int64_t c = 0; c < D; ++c) {
                        const float diff = f[i * D + c] - fp[c];
                        dist += diff * diff;
                    }
                    min_dist[i] = std::min(min_dist[i], dist);
                }
                min_dist[pick] = -inf;
            }
        }

        // 4. the m lowest ranks in rank order (ranks are distinct)
        std::vector<int64_t> order(N);
        for (int64_t i = 0; i < N; ++i) order[i] = i;
        std::partial_sort(order.begin(), order.begin() + m, order.end(),
                          [&](int64_t x, int64_t y) { return rank[x] < rank[y]; });
        for (int64_t j = 0; j < m; ++j) out[b * m + j] = static_cast<int32_t>(order[j]);
    }
    return "";
}

// ------------------------------------------------------------------ Nystrom
namespace {

using Mat = std::vector<float>;  // row-major

// C[r x c] = A[r x n] * B[n x c]
Mat matmul(const Mat& A, const Mat& B, int64_t r, int64_t n, int64_t c) {
    Mat C(r * c, 0.0f);
    for (int64_t i = 0; i < r; ++i)
        for (int64_t j = 0; j < c; ++j) {
            float acc = 0.0f;
            for (int64_t t = 0; t < n; ++t) acc += A[i * n + t] * B[t * c + j];
            C[i * c + j] = acc;
        }
    return C;
}

// c*I - X for a square X
Mat diag_minus(float c, const Mat& X, int64_t n) {
    Mat R(n * n);
    for (int64_t i = 0; i < n; ++i)
        for (int64_t j = 0; j < n; ++j) R[i * n + j] = (i == j ? c : 0.0f) - X[i * n + j];
    return R;
}

// out[i] = softmax_j(s * Q[qrows[i]] . K[krows[j]]) V[vrows[j]]. V may be null: then the
// probability rows themselves are written (out is [rows x keys]).
void attention(const float* Q, const std::vector<int64_t>& qrows, const float* K, const std::vector<int64_t>& krows,
               const float* V, const std::vector<int64_t>& vrows, int64_t d, int64_t dv, float s, float* out) {
    const int64_t nk = static_cast<int64_t>(krows.size());
    std::vector<float> p(nk);
    for (size_t i = 0; i < qrows.size(); ++i) {
        const float* qi = Q + qrows[i] * d;
        float mx = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j < nk; ++j) {
            const float* kj = K + krows[j] * d;
            float dot = 0.0f;
            for (int64_t c = 0; c < d; ++c) dot += qi[c] * kj[c];
            p[j] = s * dot;
            mx = std::max(mx, p[j]);
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < nk; ++j) { p[j] = std::exp(p[j] - mx); sum += p[j]; }
        for (int64_t j = 0; j < nk; ++j) p[j] /= sum;
        if (!V) {
            for (int64_t j = 0; j < nk; ++j) out[i * nk + j] = p[j];
            continue;
        }
        for (int64_t c = 0; c < dv; ++c) {
            float acc = 0.0f;
            for (int64_t j = 0; j < nk; ++j) acc += p[j] * V[vrows[j] * dv + c];
            out[i * dv + c] = acc;
        }
    }
}

}  // namespace

std::string nystrom(const float* q, const float* k, const float* v, const int32_t* idx, int64_t B, int64_t H,
                    int64_t N, int64_t d, int64_t dv, int64_t m, const NystromAttrs& a, float* out) {
    std::string err = validate(a);
    if (err.empty()) err = check_nystrom_shapes({B, H, N, d}, {B, H, N, d}, {B, H, N, dv}, {B, m});
    if (!err.empty()) return err.rfind("NystromAttention", 0) == 0 ? err : "NystromAttention: " + err;
    for (int64_t i = 0; i < B * m; ++i)
        if (idx[i] < 0 || idx[i] >= N)
            return "NystromAttention: landmark index " + std::to_string(idx[i]) + " is outside 0.." + std::to_string(N - 1);

    const float s = a.scale > 0 ? a.scale : 1.0f / std::sqrt(static_cast<float>(d));
    std::vector<int64_t> all(N), lm(m), rows(m);
    for (int64_t i = 0; i < N; ++i) all[i] = i;
    for (int64_t i = 0; i < m; ++i) rows[i] = i;

    for (int64_t b = 0; b < B; ++b) {
        for (int64_t i = 0; i < m; ++i) lm[i] = idx[b * m + i];
        for (int64_t h = 0; h < H; ++h) {
            const float* qh = q + (b * H + h) * N * d;
            const float* kh = k + (b * H + h) * N * d;
            const float* vh = v + (b * H + h) * N * dv;
            // A = softmax(s qp kp^T), Bv = softmax(s qp k^T) v
            Mat A(m * m), Bv(m * dv);
            attention(qh, lm, kh, lm, nullptr, lm, d, dv, s, A.data());
            attention(qh, lm, kh, all, vh, all, d, dv, s, Bv.data());
            // Z = pinv(A) by Newton-Schulz, Z0 = A^T / max_j sum_i A_ij
            float colmax = -std::numeric_limits<float>::infinity();
            for (int64_t j = 0; j < m; ++j) {
                float cs = 0.0f;
                for (int64_t i = 0; i < m; ++i) cs += A[i * m + j];
                colmax = std::max(colmax, cs);
            }
            Mat Z(m * m);
            for (int64_t i = 0; i < m; ++i)
                for (int64_t j = 0; j < m; ++j) Z[i * m + j] = A[j * m + i] / colmax;
            for (int32_t it = 0; it < a.pinv_iters; ++it) {
                Mat AZ = matmul(A, Z, m, m, m);
                Mat T = matmul(AZ, diag_minus(7.0f, AZ, m), m, m, m);
                T = matmul(AZ, diag_minus(15.0f, T, m), m, m, m);
                Z = matmul(Z, diag_minus(13.0f, T, m), m, m, m);
                for (auto& z : Z) z *= 0.25f;
            }
            // out = softmax(s q kp^T) (Z Bv)
            Mat W = matmul(Z, Bv, m, m, dv);
            // keys are the landmark rows of k, values the rows 0..m-1 of W
            attention(qh, all, kh, lm, W.data(), rows, d, dv, s, out + (b * H + h) * N * dv);
        }
    }
    return "";
}

}  // namespace ref
}  // namespace fna
