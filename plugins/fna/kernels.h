// CUDA kernels of both fna ops, behind launchers that know nothing of TensorRT or PyTorch.
// Pointers are device pointers; `stream` is a cudaStream_t passed as void* so that this header
// needs no CUDA include. Launchers return 0 on success, else a cudaError_t value or one of the
// kErr* codes below; error_string() turns either into text. No host synchronisation anywhere.
#pragma once

#include <cstddef>
#include <cstdint>

#include "fna_logic.h"

namespace fna {
namespace cuda {

enum DType : int32_t { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2 };

constexpr int kErrNotBuilt = 10001;     // library built without CUDA
constexpr int kErrBadArgs = 10002;      // shapes/attributes rejected (see fna_logic)
constexpr int kErrWorkspace = 10003;    // workspace smaller than *_workspace_size()

bool built_with_cuda();
const char* error_string(int code);

// features [B,N,D] (fp32/fp16), scores [B,N] (fp32/fp16) or nullptr -> out idx [B, m] int32.
// workspace: at least landmarks_workspace_size(B, N) bytes.
int launch_landmarks(const void* features, DType features_type, const void* scores, DType scores_type, int64_t B,
                     int64_t N, int64_t D, const LandmarkAttrs& attrs, int32_t* out, void* workspace,
                     size_t workspace_bytes, void* stream);

// q,k [B,H,N,d], v [B,H,N,dv] (all of `type`: fp32, fp16 or bf16), idx [B,m] int32 -> out
// [B,H,N,dv] of `type`. workspace: at least nystrom_workspace_size(B,H,N,d,dv,m) bytes. `out`
// must not overlap the inputs: it also holds the key-split partials until the last kernel.
int launch_nystrom(const void* q, const void* k, const void* v, DType type, const int32_t* idx, int64_t B, int64_t H,
                   int64_t N, int64_t d, int64_t dv, int64_t m, const NystromAttrs& attrs, void* out, void* workspace,
                   size_t workspace_bytes, void* stream);

}  // namespace cuda
}  // namespace fna
