// Plain C++ logic shared by every front door (TensorRT glue, C API, tests): attributes with
// their defaults and validation, shape rules, workspace sizing, serialisation of fields.
// No TensorRT and no CUDA in here, so all of it is unit tested on any machine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "fna_contract.h"

namespace fna {

// The landmark methods, in the contract's order (generated in fna_contract.h).
using Method = contract::Method;

// Attributes of FnaLandmarks; field names equal the ONNX attribute names, defaults are the
// contract's (fna_contract.h). num_landmarks is required: it has no default, and the 0 it starts
// with fails validate() until the caller sets it.
struct LandmarkAttrs {
    int32_t num_landmarks = 0;
    int32_t num_prefix = contract::kLandmarksNumPrefixDefault;
    float massive_ratio = contract::kLandmarksMassiveRatioDefault;
    float artifact_ratio = contract::kLandmarksArtifactRatioDefault;
    Method method = contract::kLandmarksMethodDefault;
};

// Attributes of NystromAttention. scale <= 0 means head_dim^-0.5 (as the ONNX attribute).
struct NystromAttrs {
    float scale = contract::kNystromScaleDefault;
    int32_t pinv_iters = contract::kNystromPinvItersDefault;
};

// A loosely typed attribute value, as the ONNX parser hands them over (INT as int32, FLOAT as
// float32, STRING as chars). Used by parse_*; the TensorRT glue converts PluginFields into these.
struct AttrValue {
    enum Kind { kInt, kFloat, kString } kind = kInt;
    int64_t i = 0;
    double f = 0.0;
    std::string s;
    static AttrValue Int(int64_t v) { AttrValue a; a.kind = kInt; a.i = v; return a; }
    static AttrValue Float(double v) { AttrValue a; a.kind = kFloat; a.f = v; return a; }
    static AttrValue Str(std::string v) { AttrValue a; a.kind = kString; a.s = std::move(v); return a; }
};
using AttrMap = std::map<std::string, AttrValue>;

// Parse + validate. Return "" on success, else one sentence naming the bad value.
// Unknown names are ignored except that plugin_namespace/plugin_version must be "fna"/"1" when given.
std::string parse_landmark_attrs(const AttrMap& attrs, LandmarkAttrs* out);
std::string parse_nystrom_attrs(const AttrMap& attrs, NystromAttrs* out);
std::string validate(const LandmarkAttrs& a);
std::string validate(const NystromAttrs& a);
const char* method_name(Method m);

// Shape rules (static dims; -1 = unknown). Return "" if the inputs are acceptable.
// features [B,N,D], scores [B,N] or absent; out idx [B, num_landmarks].
std::string check_landmark_shapes(const LandmarkAttrs& a, const std::vector<int64_t>& features,
                                  const std::vector<int64_t>* scores);
// q,k [B,H,N,d], v [B,H,N,dv], idx [B,m]; out [B,H,N,dv].
std::string check_nystrom_shapes(const std::vector<int64_t>& q, const std::vector<int64_t>& k,
                                 const std::vector<int64_t>& v, const std::vector<int64_t>& idx);

// The kernels' limits (max head dim, landmarks, tokens) are contract::kMaxKernel* (fna_contract.h).

// How the FPS landmark kernel (landmarks.cu) splits one image: pure policy, unit tested here and
// used by the CUDA launcher, so the split is the same on every machine that reports the same
// limits. One image = `ctas` CTAs of kFpsThreads threads (a thread-block cluster when > 1), each
// owning `chunk` consecutive tokens (the last CTA fewer). Shared memory per CTA, in bytes:
//   [0, kFpsFixedSmem)   scratch (histograms, scans, per-warp and per-CTA argmax keys, counts)
//   point_offset         the last pick's features, float2[pairs]          (pairs = ceil(D / 2))
//   md_offset            min-distances of the CTA's tokens, float[chunk]
//   feat_offset          features, channel-pair major: pair p of local token t at [p * chunk + t],
//                        2 elements of the input type each (only when features_on_chip)
// legacy: the one-CTA kernel with min-distances in global memory (the grid method, or an image
// whose min-distances alone do not fit on chip).
constexpr int kFpsThreads = 512;
constexpr int kFpsTokensPerThread = 1;  // split an image until each thread owns about this many tokens
constexpr size_t kFpsFixedSmem = 4096;
struct LandmarkPlan {
    bool legacy = false;
    int32_t ctas = 1;
    int64_t chunk = 0;
    int32_t pairs = 0;
    bool features_on_chip = false;
    size_t point_offset = 0, md_offset = 0, feat_offset = 0, smem_bytes = 0;
};
// elem_bytes: 2 (fp16) or 4 (fp32) features; max_cluster: the largest cluster the device and the
// compiled kernel accept (1 without clusters); smem_limit: dynamic shared memory per CTA (opt-in).
LandmarkPlan plan_landmarks(Method method, int64_t N, int64_t D, int elem_bytes, int max_cluster, int64_t smem_limit);

// Workspace (bytes) the CUDA kernels need; both include alignment slack.
size_t landmarks_workspace_size(int64_t B, int64_t N);
size_t nystrom_workspace_size(int64_t B, int64_t H, int64_t N, int64_t d, int64_t dv, int64_t m);

// Largest m that the fused m x m kernel (softmax, Newton-Schulz and W = Z Bv in one launch per
// (b, h)) takes; larger m runs the multi-launch path.
constexpr int kNystromFusedMaxLandmarks = 256;
// CTAs the key-split landmark product aims at (enough to fill 132 SMs a few times over).
constexpr int kNystromTargetCtas = 528;

// Number of key splits of the landmark product Bv = softmax(s qp k^T) v (>= 1). Its partials
// (max, sum, acc[dv] in fp32 per landmark row and split) live in the OUTPUT tensor, which is
// written only by the last kernel, so no workspace holds them: the count is bounded by what fits
// there (out_elem_bytes: 4 fp32, 2 fp16/bf16), by >= 256 keys per split and by 64; within that,
// enough splits that BH * ceil(m / 64) * splits reaches kNystromTargetCtas.
int nystrom_num_splits(int64_t BH, int64_t N, int64_t m, int64_t dv, int64_t out_elem_bytes);
// Floats the partials of `splits` splits take (must be <= the output tensor's bytes / 4).
size_t nystrom_partials_floats(int64_t BH, int64_t splits, int64_t m, int64_t dv);

// Workspace layout (offsets in floats from the 256-byte aligned base), shared by the sizing
// function above and the CUDA launcher so the two cannot drift apart. A, Z, AZ, Y1, Y2 are the
// m x m fp32 matrices of the pseudo-inverse ([BH, m, m] each), Bv the merged landmark product
// ([BH, m, dv] fp32), W = Z Bv ([BH, m, dv], fp32 or the I/O type).
struct NystromLayout {
    size_t a, z, az, y1, y2, bv, w;  // offsets (floats)
    size_t total_floats;
};
NystromLayout nystrom_layout(int64_t B, int64_t H, int64_t N, int64_t dv, int64_t m);

// Serialisation of fields into a flat byte blob (name, kind, value), and back. The TensorRT
// glue uses PluginFieldCollection instead; this blob is for the C API / tests and documents
// exactly which fields make up the state of each plugin.
std::vector<uint8_t> serialize(const LandmarkAttrs& a);
std::vector<uint8_t> serialize(const NystromAttrs& a);
std::string deserialize(const std::vector<uint8_t>& blob, LandmarkAttrs* out);
std::string deserialize(const std::vector<uint8_t>& blob, NystromAttrs* out);
AttrMap to_attr_map(const LandmarkAttrs& a);
AttrMap to_attr_map(const NystromAttrs& a);

}  // namespace fna
