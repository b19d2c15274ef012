// Stand-in for the CUDA launchers when the library is built without nvcc (FNA_CPU_ONLY).
#include "kernels.h"

namespace fna {
namespace cuda {

bool built_with_cuda() { return false; }

const char* error_string(int code) {
    switch (code) {
        case 0: return "no error";
        case kErrNotBuilt: return "the fna library was built without CUDA (CPU reference only)";
        case kErrBadArgs: return "invalid shapes or attributes";
        case kErrWorkspace: return "workspace too small";
        default: return "CUDA error";
    }
}

int launch_landmarks(const void*, DType, const void*, DType, int64_t, int64_t, int64_t, const LandmarkAttrs&, int32_t*,
                     void*, size_t, void*) {
    return kErrNotBuilt;
}

int launch_nystrom(const void*, const void*, const void*, DType, const int32_t*, int64_t, int64_t, int64_t, int64_t,
                   int64_t, int64_t, const NystromAttrs&, void*, void*, size_t, void*) {
    return kErrNotBuilt;
}

}  // namespace cuda
}  // namespace fna
