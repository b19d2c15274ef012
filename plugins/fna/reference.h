// The C++ CPU reference of both fna ops: plain loops, written to be read. It is the oracle of
// the C++ tests and of the CUDA kernels, and matches fna_deploy/ops (the PyTorch reference).
#pragma once

#include <cstdint>
#include <string>

#include "fna_logic.h"

namespace fna {
namespace ref {

// features [B,N,D] fp32 (contiguous), scores [B,N] or nullptr; out: idx [B, num_landmarks].
// Returns "" on success, else one sentence.
std::string landmarks(const float* features, const float* scores, int64_t B, int64_t N, int64_t D,
                      const LandmarkAttrs& attrs, int32_t* out);

// q,k [B,H,N,d], v [B,H,N,dv], idx [B,m] (contiguous); out [B,H,N,dv]. All fp32.
std::string nystrom(const float* q, const float* k, const float* v, const int32_t* idx, int64_t B, int64_t H,
                    int64_t N, int64_t d, int64_t dv, int64_t m, const NystromAttrs& attrs, float* out);

// Lower median (sorted element at (n-1)/2), as torch.median.
float lower_median(const float* x, int64_t n);

}  // namespace ref
}  // namespace fna
