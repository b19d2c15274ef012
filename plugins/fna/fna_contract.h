// GENERATED from fna_deploy/contract.py by scripts/gen_contract_header.py -- do not edit by hand.
// The fna plugin contract: op names, version, namespace and the typed fields of each creator.
// tests/test_contract.py regenerates this file and fails when the committed copy differs.
#pragma once

#include <cstdint>
#include <limits>

namespace fna {
namespace contract {

enum class FieldType : int32_t { kInt32 = 0, kFloat32 = 1, kString = 2 };

// One creator field == one ONNX attribute of the same name. Numbers are held as double;
// minimum/maximum are inclusive, NaN when unbounded; choices is '|'-separated, "" when any.
struct FieldSpec {
    char const* name;
    FieldType type;
    bool required;
    double default_number;
    char const* default_string;
    double minimum;
    double maximum;
    char const* choices;
};

struct OpSpec {
    char const* name;
    FieldSpec const* fields;
    int32_t num_fields;
};

constexpr char const* kDomain = "fna";
constexpr char const* kNamespace = "fna";
constexpr char const* kVersion = "1";
constexpr char const* kLandmarksName = "FnaLandmarks";
constexpr char const* kNystromName = "NystromAttention";
constexpr double kUnbounded = std::numeric_limits<double>::quiet_NaN();

constexpr FieldSpec kLandmarksFields[] = {
    {"num_landmarks", FieldType::kInt32, true, 0.0, "", 1.0, kUnbounded, ""},
    {"num_prefix", FieldType::kInt32, false, 0.0, "", 0.0, kUnbounded, ""},
    {"massive_ratio", FieldType::kFloat32, false, 0.0, "", 0.0, kUnbounded, ""},
    {"artifact_ratio", FieldType::kFloat32, false, 0.0, "", 0.0, kUnbounded, ""},
    {"method", FieldType::kString, false, 0.0, "fps", kUnbounded, kUnbounded, "fps|grid"},
};
constexpr int32_t kNumLandmarksFields = 5;

constexpr FieldSpec kNystromFields[] = {
    {"scale", FieldType::kFloat32, false, 0.0, "", 0.0, kUnbounded, ""},
    {"pinv_iters", FieldType::kInt32, false, 6.0, "", 0.0, 100.0, ""},
};
constexpr int32_t kNumNystromFields = 2;

// Choice fields as enums, in the order of their choices (the C API's codes).
enum class Method : int32_t { kFps = 0, kGrid = 1 };
constexpr char const* kMethodNames[] = {"fps", "grid"};
constexpr int32_t kNumMethods = 2;

// Typed defaults of the optional fields (required fields have none).
constexpr int32_t kLandmarksNumPrefixDefault = 0;
constexpr float kLandmarksMassiveRatioDefault = 0.0f;
constexpr float kLandmarksArtifactRatioDefault = 0.0f;
constexpr Method kLandmarksMethodDefault = Method::kFps;
constexpr float kNystromScaleDefault = 0.0f;
constexpr int32_t kNystromPinvItersDefault = 6;

// Limits of the CUDA kernels; larger inputs run the reference (tokens: exclusive, others inclusive).
constexpr int64_t kMaxKernelTokens = 1048576;
constexpr int64_t kMaxKernelHeadDim = 256;
constexpr int64_t kMaxKernelLandmarks = 4096;

constexpr OpSpec kOps[] = {
    {kLandmarksName, kLandmarksFields, kNumLandmarksFields},
    {kNystromName, kNystromFields, kNumNystromFields},
};
constexpr int32_t kNumOps = 2;

}  // namespace contract
}  // namespace fna
