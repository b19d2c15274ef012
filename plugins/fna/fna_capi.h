/* C entry points of libfna (the CPU reference and the CUDA launchers) for ctypes and other
 * FFI callers. Every function returns 0 on success; otherwise fna_last_error() holds one
 * sentence describing the problem (thread-local). Tensors are contiguous, row-major. */
#ifndef FNA_CAPI_H
#define FNA_CAPI_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define FNA_ABI_VERSION 1

#if defined(__GNUC__)
#define FNA_API __attribute__((visibility("default")))
#else
#define FNA_API
#endif

FNA_API int fna_abi_version(void);
FNA_API const char* fna_last_error(void);
FNA_API int fna_built_with_cuda(void);

/* method: 0 = "fps", 1 = "grid". features [B,N,D] fp32, scores [B,N] fp32 or NULL, out [B,m]. */
FNA_API int fna_landmarks_cpu(const float* features, const float* scores, int64_t B, int64_t N, int64_t D,
                      int32_t num_landmarks, int32_t num_prefix, float massive_ratio, float artifact_ratio,
                      int32_t method, int32_t* out);

/* q,k [B,H,N,d], v [B,H,N,dv], idx [B,m], out [B,H,N,dv]; fp32. scale <= 0: d^-0.5. */
FNA_API int fna_nystrom_cpu(const float* q, const float* k, const float* v, const int32_t* idx, int64_t B, int64_t H,
                    int64_t N, int64_t d, int64_t dv, int64_t m, float scale, int32_t pinv_iters, float* out);

/* Attribute checks as the TensorRT creators do them (method as text). */
FNA_API int fna_check_landmark_attrs(int32_t num_landmarks, int32_t num_prefix, float massive_ratio, float artifact_ratio,
                             const char* method);
FNA_API int fna_check_nystrom_attrs(float scale, int32_t pinv_iters);

/* The plugin contract compiled into this library (fna_contract.h), as JSON: namespace, version and per op
 * the creator fields (name, type, required, default, minimum, maximum, choices) plus "state_fields", the
 * names and types of the fields the plugin serialises (from fna_logic's to_attr_map). Static storage. */
FNA_API const char* fna_contract_json(void);

FNA_API size_t fna_landmarks_workspace_size(int64_t B, int64_t N);
FNA_API size_t fna_nystrom_workspace_size(int64_t B, int64_t H, int64_t N, int64_t d, int64_t dv, int64_t m);

/* CUDA launchers: device pointers, dtype 0 = fp32, 1 = fp16 (and 2 = bf16 for fna_nystrom_cuda),
 * stream = cudaStream_t (may be NULL). Asynchronous, no host synchronisation and no allocation
 * (CUDA-graph capturable): errors of the kernels themselves surface at the caller's next
 * synchronisation. fna_nystrom_cuda's out must not overlap q, k, v (it holds scratch until the end). */
FNA_API int fna_landmarks_cuda(const void* features, int32_t features_dtype, const void* scores, int32_t scores_dtype, int64_t B,
                       int64_t N, int64_t D, int32_t num_landmarks, int32_t num_prefix, float massive_ratio,
                       float artifact_ratio, int32_t method, int32_t* out, void* workspace, size_t workspace_bytes,
                       void* stream);
FNA_API int fna_nystrom_cuda(const void* q, const void* k, const void* v, int32_t dtype, const int32_t* idx, int64_t B, int64_t H,
                     int64_t N, int64_t d, int64_t dv, int64_t m, float scale, int32_t pinv_iters, void* out,
                     void* workspace, size_t workspace_bytes, void* stream);

#ifdef __cplusplus
}
#endif

#endif /* FNA_CAPI_H */
