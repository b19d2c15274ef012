#include "fna_capi.h"

#include <cmath>
#include <cstdio>
#include <exception>
#include <string>
#include <vector>

#include "fna_contract.h"
#include "fna_logic.h"
#include "kernels.h"
#include "reference.h"

namespace {

thread_local std::string g_error;

int fail(const std::string& msg) {
    g_error = msg;
    return 1;
}

int done(const std::string& err) { return err.empty() ? (g_error.clear(), 0) : fail(err); }

fna::LandmarkAttrs landmark_attrs(int32_t num_landmarks, int32_t num_prefix, float massive_ratio, float artifact_ratio,
                                  int32_t method) {
    fna::LandmarkAttrs a;
    a.num_landmarks = num_landmarks;
    a.num_prefix = num_prefix;
    a.massive_ratio = massive_ratio;
    a.artifact_ratio = artifact_ratio;
    a.method = static_cast<fna::Method>(method);
    return a;
}

int cuda_result(int code, const char* op) {
    if (code == 0) return done("");
    return fail(std::string(op) + ": " + fna::cuda::error_string(code));
}

std::string json_number(double x) {
    if (std::isnan(x)) return "null";
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.17g", x);
    return buf;
}

const char* type_name(fna::contract::FieldType t) {
    switch (t) {
        case fna::contract::FieldType::kInt32: return "int32";
        case fna::contract::FieldType::kFloat32: return "float32";
        case fna::contract::FieldType::kString: return "string";
    }
    return "?";
}

const char* kind_name(fna::AttrValue::Kind k) {
    return k == fna::AttrValue::kInt ? "int32" : k == fna::AttrValue::kFloat ? "float32" : "string";
}

std::string contract_json() {
    using namespace fna::contract;
    std::string j = std::string("{\"plugin_namespace\": \"") + kNamespace + "\", \"plugin_version\": \"" + kVersion + "\", \"ops\": [";
    for (int32_t o = 0; o < kNumOps; ++o) {
        const OpSpec& op = kOps[o];
        j += std::string(o ? ", " : "") + "{\"name\": \"" + op.name + "\", \"fields\": [";
        for (int32_t i = 0; i < op.num_fields; ++i) {
            const FieldSpec& f = op.fields[i];
            std::string def = f.required ? "null"
                              : f.type == FieldType::kString ? std::string("\"") + f.default_string + "\""
                                                             : json_number(f.default_number);
            j += std::string(i ? ", " : "") + "{\"name\": \"" + f.name + "\", \"type\": \"" + type_name(f.type) +
                 "\", \"required\": " + (f.required ? "true" : "false") + ", \"default\": " + def +
                 ", \"minimum\": " + json_number(f.minimum) + ", \"maximum\": " + json_number(f.maximum) +
                 ", \"choices\": \"" + f.choices + "\"}";
        }
        fna::AttrMap state = std::string(op.name) == kLandmarksName ? fna::to_attr_map(fna::LandmarkAttrs{})
                                                                    : fna::to_attr_map(fna::NystromAttrs{});
        j += "], \"state_fields\": [";
        bool first = true;
        for (const auto& kv : state) {
            j += std::string(first ? "" : ", ") + "{\"name\": \"" + kv.first + "\", \"type\": \"" + kind_name(kv.second.kind) + "\"}";
            first = false;
        }
        j += "]}";
    }
    return j + "]}";
}

}  // namespace

extern "C" {

const char* fna_contract_json(void) {
    static const std::string json = contract_json();
    return json.c_str();
}


int fna_abi_version(void) { return FNA_ABI_VERSION; }
const char* fna_last_error(void) { return g_error.c_str(); }
int fna_built_with_cuda(void) { return fna::cuda::built_with_cuda() ? 1 : 0; }

int fna_landmarks_cpu(const float* features, const float* scores, int64_t B, int64_t N, int64_t D,
                      int32_t num_landmarks, int32_t num_prefix, float massive_ratio, float artifact_ratio,
                      int32_t method, int32_t* out) {
    if (!features || !out) return fail("FnaLandmarks: null features or output pointer");
    if (method != 0 && method != 1) return fail("FnaLandmarks: method must be 0 (fps) or 1 (grid)");
    try {
        return done(fna::ref::landmarks(features, scores, B, N, D,
                                        landmark_attrs(num_landmarks, num_prefix, massive_ratio, artifact_ratio, method), out));
    } catch (const std::exception& e) {
        return fail(std::string("FnaLandmarks: ") + e.what());
    }
}

int fna_nystrom_cpu(const float* q, const float* k, const float* v, const int32_t* idx, int64_t B, int64_t H,
                    int64_t N, int64_t d, int64_t dv, int64_t m, float scale, int32_t pinv_iters, float* out) {
    if (!q || !k || !v || !idx || !out) return fail("NystromAttention: null tensor pointer");
    fna::NystromAttrs a;
    a.scale = scale > 0.f ? scale : 0.f;
    a.pinv_iters = pinv_iters;
    try {
        return done(fna::ref::nystrom(q, k, v, idx, B, H, N, d, dv, m, a, out));
    } catch (const std::exception& e) {
        return fail(std::string("NystromAttention: ") + e.what());
    }
}

int fna_check_landmark_attrs(int32_t num_landmarks, int32_t num_prefix, float massive_ratio, float artifact_ratio,
                             const char* method) {
    fna::AttrMap m{{"num_landmarks", fna::AttrValue::Int(num_landmarks)},
                   {"num_prefix", fna::AttrValue::Int(num_prefix)},
                   {"massive_ratio", fna::AttrValue::Float(massive_ratio)},
                   {"artifact_ratio", fna::AttrValue::Float(artifact_ratio)},
                   {"method", fna::AttrValue::Str(method ? method : "")}};
    fna::LandmarkAttrs a;
    return done(fna::parse_landmark_attrs(m, &a));
}

int fna_check_nystrom_attrs(float scale, int32_t pinv_iters) {
    fna::AttrMap m{{"scale", fna::AttrValue::Float(scale)}, {"pinv_iters", fna::AttrValue::Int(pinv_iters)}};
    fna::NystromAttrs a;
    return done(fna::parse_nystrom_attrs(m, &a));
}

size_t fna_landmarks_workspace_size(int64_t B, int64_t N) { return fna::landmarks_workspace_size(B, N); }
size_t fna_nystrom_workspace_size(int64_t B, int64_t H, int64_t N, int64_t d, int64_t dv, int64_t m) {
    return fna::nystrom_workspace_size(B, H, N, d, dv, m);
}

int fna_landmarks_cuda(const void* features, int32_t features_dtype, const void* scores, int32_t scores_dtype, int64_t B,
                       int64_t N, int64_t D, int32_t num_landmarks, int32_t num_prefix, float massive_ratio,
                       float artifact_ratio, int32_t method, int32_t* out, void* workspace, size_t workspace_bytes,
                       void* stream) {
    if (method != 0 && method != 1) return fail("FnaLandmarks: method must be 0 (fps) or 1 (grid)");
    fna::LandmarkAttrs a = landmark_attrs(num_landmarks, num_prefix, massive_ratio, artifact_ratio, method);
    std::string err = fna::validate(a);
    if (err.empty()) {
        std::vector<int64_t> sdims{B, N};
        err = fna::check_landmark_shapes(a, {B, N, D}, scores ? &sdims : nullptr);
    }
    if (!err.empty()) return fail(err.rfind("FnaLandmarks", 0) == 0 ? err : "FnaLandmarks: " + err);
    return cuda_result(fna::cuda::launch_landmarks(features, static_cast<fna::cuda::DType>(features_dtype), scores,
                                                   static_cast<fna::cuda::DType>(scores_dtype), B, N, D, a, out, workspace,
                                                   workspace_bytes, stream),
                       "FnaLandmarks");
}

int fna_nystrom_cuda(const void* q, const void* k, const void* v, int32_t dtype, const int32_t* idx, int64_t B, int64_t H,
                     int64_t N, int64_t d, int64_t dv, int64_t m, float scale, int32_t pinv_iters, void* out,
                     void* workspace, size_t workspace_bytes, void* stream) {
    fna::NystromAttrs a;
    a.scale = scale > 0.f ? scale : 0.f;
    a.pinv_iters = pinv_iters;
    if (dtype != fna::cuda::kFloat32 && dtype != fna::cuda::kFloat16 && dtype != fna::cuda::kBFloat16)
        return fail("NystromAttention: dtype must be 0 (fp32), 1 (fp16) or 2 (bf16), got " + std::to_string(dtype));
    std::string err = fna::validate(a);
    if (err.empty()) err = fna::check_nystrom_shapes({B, H, N, d}, {B, H, N, d}, {B, H, N, dv}, {B, m});
    if (!err.empty()) return fail(err.rfind("NystromAttention", 0) == 0 ? err : "NystromAttention: " + err);
    return cuda_result(fna::cuda::launch_nystrom(q, k, v, static_cast<fna::cuda::DType>(dtype), idx, B, H, N, d, dv, m, a,
                                                 out, workspace, workspace_bytes, stream),
                       "NystromAttention");
}

}  // extern "C"
