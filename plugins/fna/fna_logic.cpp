#include "fna_logic.h"

#include "fna_contract.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <sstream>

namespace fna {
namespace {

std::string dims_str(const std::vector<int64_t>& d) {
    std::ostringstream s;
    s << "[";
    for (size_t i = 0; i < d.size(); ++i) s << (i ? ", " : "") << d[i];
    s << "]";
    return s.str();
}

bool known(int64_t v) { return v >= 0; }

// Read an integer attribute (INT, or a FLOAT holding an integral value).
std::string get_int(const AttrValue& v, const char* name, int32_t* out) {
    if (v.kind == AttrValue::kInt) {
        if (v.i < INT32_MIN || v.i > INT32_MAX) return std::string(name) + " is out of the int32 range";
        *out = static_cast<int32_t>(v.i);
        return "";
    }
    if (v.kind == AttrValue::kFloat && std::isfinite(v.f) && std::floor(v.f) == v.f && std::fabs(v.f) < 2147483647.0) {
        *out = static_cast<int32_t>(v.f);
        return "";
    }
    return std::string(name) + " must be an integer";
}

std::string get_float(const AttrValue& v, const char* name, float* out) {
    if (v.kind == AttrValue::kFloat) { *out = static_cast<float>(v.f); return ""; }
    if (v.kind == AttrValue::kInt) { *out = static_cast<float>(v.i); return ""; }
    return std::string(name) + " must be a number";
}

std::string check_plugin_identity(const AttrMap& attrs) {
    auto ns = attrs.find("plugin_namespace");
    if (ns != attrs.end() && !(ns->second.kind == AttrValue::kString && (ns->second.s == contract::kNamespace || ns->second.s.empty())))
        return std::string("plugin_namespace must be \"") + contract::kNamespace + "\"";
    auto ver = attrs.find("plugin_version");
    if (ver != attrs.end() && !(ver->second.kind == AttrValue::kString && (ver->second.s == contract::kVersion || ver->second.s.empty())))
        return std::string("plugin_version must be \"") + contract::kVersion + "\"";
    return "";
}

// The contract's required fields (fna_contract.h) must all be present.
template <size_t N>
std::string check_required(const AttrMap& attrs, const contract::FieldSpec (&fields)[N]) {
    for (const auto& f : fields)
        if (f.required && attrs.find(f.name) == attrs.end()) return std::string(f.name) + " is required";
    return "";
}

std::string number_str(double x) {
    std::ostringstream s;
    s << x;
    return s.str();
}

// One number against its field's bounds in the contract (fna_contract.h): the same sentences as
// contract.Field.problem on the Python side. "" when the value is in bounds.
template <size_t N>
std::string check_bounds(const contract::FieldSpec (&fields)[N], const char* name, double value) {
    for (const auto& f : fields) {
        if (std::strcmp(f.name, name) != 0) continue;
        if (!std::isfinite(value)) return std::string(name) + " must be a finite number, got " + number_str(value);
        if (!std::isnan(f.minimum) && value < f.minimum)
            return std::string(name) + " must be >= " + number_str(f.minimum) + ", got " + number_str(value);
        if (!std::isnan(f.maximum) && value > f.maximum)
            return std::string(name) + " must be <= " + number_str(f.maximum) + ", got " + number_str(value);
        return "";
    }
    return std::string(name) + " is not a field of the contract";  // a programming error, caught by the C++ tests
}

}  // namespace

const char* method_name(Method m) {
    const int32_t i = static_cast<int32_t>(m);
    return i >= 0 && i < contract::kNumMethods ? contract::kMethodNames[i] : "?";
}

std::string validate(const LandmarkAttrs& a) {
    const auto& f = contract::kLandmarksFields;
    std::string e = check_bounds(f, "num_landmarks", a.num_landmarks);
    if (e.empty()) e = check_bounds(f, "num_prefix", a.num_prefix);
    if (e.empty() && a.num_prefix > a.num_landmarks)  // the cross-field rule (contract.py's rules)
        e = "num_prefix=" + std::to_string(a.num_prefix) + " prefix tokens do not fit in num_landmarks=" +
            std::to_string(a.num_landmarks);
    if (e.empty()) e = check_bounds(f, "massive_ratio", a.massive_ratio);
    if (e.empty()) e = check_bounds(f, "artifact_ratio", a.artifact_ratio);
    if (e.empty() && (static_cast<int32_t>(a.method) < 0 || static_cast<int32_t>(a.method) >= contract::kNumMethods))
        e = "method must be one of the contract's " + std::to_string(contract::kNumMethods) + " methods";
    return e;
}

std::string validate(const NystromAttrs& a) {
    const auto& f = contract::kNystromFields;
    std::string e = check_bounds(f, "scale", a.scale);
    if (e.empty()) e = check_bounds(f, "pinv_iters", a.pinv_iters);
    return e;
}

std::string parse_landmark_attrs(const AttrMap& attrs, LandmarkAttrs* out) {
    LandmarkAttrs a;
    std::string err = check_plugin_identity(attrs);
    if (err.empty()) err = check_required(attrs, contract::kLandmarksFields);
    for (const auto& kv : attrs) {
        if (!err.empty()) break;
        const std::string& name = kv.first;
        const AttrValue& v = kv.second;
        if (name == "num_landmarks") err = get_int(v, "num_landmarks", &a.num_landmarks);
        else if (name == "num_prefix") err = get_int(v, "num_prefix", &a.num_prefix);
        else if (name == "massive_ratio") err = get_float(v, "massive_ratio", &a.massive_ratio);
        else if (name == "artifact_ratio") err = get_float(v, "artifact_ratio", &a.artifact_ratio);
        else if (name == "method") {
            bool found = false;
            for (int32_t i = 0; i < contract::kNumMethods && !found; ++i)
                if ((v.kind == AttrValue::kString && v.s == contract::kMethodNames[i]) || (v.kind == AttrValue::kInt && v.i == i)) {
                    a.method = static_cast<Method>(i);
                    found = true;
                }
            if (!found) {
                err = "method must be one of";
                for (int32_t i = 0; i < contract::kNumMethods; ++i) err += std::string(i ? ", " : " ") + "\"" + contract::kMethodNames[i] + "\"";
                err += ", got \"" + (v.kind == AttrValue::kString ? v.s : std::string("?")) + "\"";
            }
        }
    }
    if (err.empty()) err = validate(a);
    if (!err.empty()) return std::string(contract::kLandmarksName) + ": " + err;
    *out = a;
    return "";
}

std::string parse_nystrom_attrs(const AttrMap& attrs, NystromAttrs* out) {
    NystromAttrs a;
    std::string err = check_plugin_identity(attrs);
    if (err.empty()) err = check_required(attrs, contract::kNystromFields);
    for (const auto& kv : attrs) {
        if (!err.empty()) break;
        if (kv.first == "scale") err = get_float(kv.second, "scale", &a.scale);
        else if (kv.first == "pinv_iters") err = get_int(kv.second, "pinv_iters", &a.pinv_iters);
    }
    if (err.empty()) err = validate(a);
    if (!err.empty()) return std::string(contract::kNystromName) + ": " + err;
    *out = a;
    return "";
}

std::string check_landmark_shapes(const LandmarkAttrs& a, const std::vector<int64_t>& f,
                                  const std::vector<int64_t>* scores) {
    if (f.size() != 3) return "FnaLandmarks: features must have shape [B, N, D], got " + dims_str(f);
    if (known(f[1]) && a.num_landmarks > f[1])
        return "FnaLandmarks: num_landmarks=" + std::to_string(a.num_landmarks) + " is more than the " +
               std::to_string(f[1]) + " tokens";
    if (known(f[2]) && f[2] < 1) return "FnaLandmarks: features have no channels (D = 0)";
    if (scores) {
        const auto& s = *scores;
        if (s.size() != 2) return "FnaLandmarks: scores must have shape [B, N], got " + dims_str(s);
        for (int i = 0; i < 2; ++i)
            if (known(s[i]) && known(f[i]) && s[i] != f[i])
                return "FnaLandmarks: scores " + dims_str(s) + " do not match features " + dims_str(f);
    } else if (a.massive_ratio > 0 || a.artifact_ratio > 0) {
        return "FnaLandmarks: massive_ratio/artifact_ratio need the scores input [B, N]";
    }
    return "";
}

std::string check_nystrom_shapes(const std::vector<int64_t>& q, const std::vector<int64_t>& k,
                                 const std::vector<int64_t>& v, const std::vector<int64_t>& idx) {
    if (q.size() != 4 || k.size() != 4 || v.size() != 4)
        return "NystromAttention: q, k, v must have shape [B, H, N, d], got " + dims_str(q) + ", " + dims_str(k) + ", " + dims_str(v);
    for (int i = 0; i < 4; ++i)
        if (known(q[i]) && known(k[i]) && q[i] != k[i])
            return "NystromAttention: k " + dims_str(k) + " must match q " + dims_str(q);
    for (int i = 0; i < 3; ++i)
        if (known(q[i]) && known(v[i]) && q[i] != v[i])
            return "NystromAttention: v " + dims_str(v) + " must match q " + dims_str(q) + " in [B, H, N]";
    if (idx.size() != 2) return "NystromAttention: idx must have shape [B, m], got " + dims_str(idx);
    if (known(idx[0]) && known(q[0]) && idx[0] != q[0])
        return "NystromAttention: idx " + dims_str(idx) + " must have B = " + std::to_string(q[0]);
    if (known(idx[1]) && idx[1] < 1) return "NystromAttention: idx holds no landmarks (m = 0)";
    if (known(idx[1]) && known(q[2]) && idx[1] > q[2])
        return "NystromAttention: " + std::to_string(idx[1]) + " landmarks is more than the " + std::to_string(q[2]) + " tokens";
    if (known(idx[1]) && idx[1] > contract::kMaxKernelLandmarks)
        return "NystromAttention: at most " + std::to_string(contract::kMaxKernelLandmarks) + " landmarks, got " + std::to_string(idx[1]);
    if ((known(q[3]) && q[3] > contract::kMaxKernelHeadDim) || (known(v[3]) && v[3] > contract::kMaxKernelHeadDim))
        return "NystromAttention: head dims up to " + std::to_string(contract::kMaxKernelHeadDim) + " are supported, got " + dims_str(q);
    return "";
}

int nystrom_num_splits(int64_t BH, int64_t N, int64_t m, int64_t dv, int64_t out_elem_bytes) {
    if (BH < 1 || N < 1 || m < 1 || dv < 1 || out_elem_bytes < 1) return 1;
    const int64_t row_tiles = (m + 63) / 64;
    int64_t want = (kNystromTargetCtas + BH * row_tiles - 1) / (BH * row_tiles);
    const int64_t by_keys = N / 256;
    // partials (BH * s * m * (dv + 2) floats) must fit in the output (BH * N * dv elements)
    const int64_t by_room = (N * dv * out_elem_bytes) / (m * (dv + 2) * 4);
    int64_t s = std::min<int64_t>({want, by_keys, by_room, 64});
    return static_cast<int>(s < 1 ? 1 : s);
}

size_t nystrom_partials_floats(int64_t BH, int64_t splits, int64_t m, int64_t dv) {
    return splits > 1 ? static_cast<size_t>(BH * splits * m * (dv + 2)) : 0;
}

NystromLayout nystrom_layout(int64_t B, int64_t H, int64_t /*N*/, int64_t dv, int64_t m) {
    auto up = [](size_t x) { return (x + 63) / 64 * 64; };  // 256-byte aligned sections
    const size_t bh = static_cast<size_t>(B * H);
    const size_t mm = up(bh * m * m), md = up(bh * m * dv);
    NystromLayout l{};
    l.a = 0; l.z = mm; l.az = 2 * mm; l.y1 = 3 * mm; l.y2 = 4 * mm;
    l.bv = 5 * mm; l.w = 5 * mm + md;
    l.total_floats = l.w + md;
    return l;
}

size_t nystrom_workspace_size(int64_t B, int64_t H, int64_t N, int64_t /*d*/, int64_t dv, int64_t m) {
    return nystrom_layout(B, H, N, dv, m).total_floats * sizeof(float) + 256;
}

namespace {
LandmarkPlan fps_layout(int64_t N, int64_t D, int elem_bytes, int32_t ctas, bool on_chip) {
    auto up16 = [](size_t x) { return (x + 15) & ~size_t(15); };
    LandmarkPlan p;
    p.ctas = ctas;
    p.chunk = (N + ctas - 1) / ctas;
    p.pairs = static_cast<int32_t>((D + 1) / 2);
    p.features_on_chip = on_chip;
    p.point_offset = kFpsFixedSmem;
    p.md_offset = up16(p.point_offset + static_cast<size_t>(p.pairs) * 8);
    p.feat_offset = up16(p.md_offset + static_cast<size_t>(p.chunk) * 4);
    p.smem_bytes = on_chip ? up16(p.feat_offset + static_cast<size_t>(p.pairs) * p.chunk * 2 * elem_bytes) : p.feat_offset;
    return p;
}
}  // namespace

LandmarkPlan plan_landmarks(Method method, int64_t N, int64_t D, int elem_bytes, int max_cluster, int64_t smem_limit) {
    LandmarkPlan legacy;
    legacy.legacy = true;
    if (method != Method::kFps || N < 1 || D < 1) return legacy;
    const int32_t cap = std::max(1, max_cluster);
    const int64_t per_cta = static_cast<int64_t>(kFpsThreads) * kFpsTokensPerThread;
    const int32_t want = static_cast<int32_t>(std::min<int64_t>(cap, (N + per_cta - 1) / per_cta));
    // fewest CTAs that hold the features on chip, then more while a CTA owns more than `per_cta`
    for (int32_t c = 1; c <= cap; ++c) {
        LandmarkPlan p = fps_layout(N, D, elem_bytes, c, true);
        if (static_cast<int64_t>(p.smem_bytes) <= smem_limit) return fps_layout(N, D, elem_bytes, std::max(c, want), true);
    }
    // features too large for the cluster: stream them from L2 each step, min-distances on chip
    LandmarkPlan p = fps_layout(N, D, elem_bytes, std::max<int32_t>(want, 1), false);
    if (static_cast<int64_t>(p.smem_bytes) <= smem_limit) return p;
    p = fps_layout(N, D, elem_bytes, cap, false);
    return static_cast<int64_t>(p.smem_bytes) <= smem_limit ? p : legacy;
}

size_t landmarks_workspace_size(int64_t B, int64_t N) {
    // min_dist (float) and rank (int32) per token, plus one float per image (median).
    return static_cast<size_t>(B * N) * 8 + static_cast<size_t>(B) * 4 + 3 * 256;
}

// ---- serialisation: [u32 count] then per field [u8 kind][u16 name_len][name][payload] ----
namespace {
void put(std::vector<uint8_t>& b, const void* p, size_t n) {
    const uint8_t* c = static_cast<const uint8_t*>(p);
    b.insert(b.end(), c, c + n);
}
std::vector<uint8_t> serialize_map(const AttrMap& m) {
    std::vector<uint8_t> b;
    uint32_t n = static_cast<uint32_t>(m.size());
    put(b, &n, 4);
    for (const auto& kv : m) {
        uint8_t kind = static_cast<uint8_t>(kv.second.kind);
        uint16_t len = static_cast<uint16_t>(kv.first.size());
        put(b, &kind, 1); put(b, &len, 2); put(b, kv.first.data(), len);
        if (kv.second.kind == AttrValue::kInt) { int64_t v = kv.second.i; put(b, &v, 8); }
        else if (kv.second.kind == AttrValue::kFloat) { double v = kv.second.f; put(b, &v, 8); }
        else { uint32_t sl = static_cast<uint32_t>(kv.second.s.size()); put(b, &sl, 4); put(b, kv.second.s.data(), sl); }
    }
    return b;
}
bool deserialize_map(const std::vector<uint8_t>& b, AttrMap* out) {
    size_t pos = 0;
    auto get = [&](void* p, size_t n) {
        if (pos + n > b.size()) return false;
        std::memcpy(p, b.data() + pos, n); pos += n; return true;
    };
    uint32_t n = 0;
    if (!get(&n, 4) || n > 64) return false;
    for (uint32_t i = 0; i < n; ++i) {
        uint8_t kind; uint16_t len;
        if (!get(&kind, 1) || !get(&len, 2) || kind > 2 || pos + len > b.size()) return false;
        std::string name(reinterpret_cast<const char*>(b.data() + pos), len); pos += len;
        AttrValue v;
        if (kind == 0) { int64_t x; if (!get(&x, 8)) return false; v = AttrValue::Int(x); }
        else if (kind == 1) { double x; if (!get(&x, 8)) return false; v = AttrValue::Float(x); }
        else {
            uint32_t sl; if (!get(&sl, 4) || pos + sl > b.size()) return false;
            v = AttrValue::Str(std::string(reinterpret_cast<const char*>(b.data() + pos), sl)); pos += sl;
        }
        (*out)[name] = v;
    }
    return pos == b.size();
}
}  // namespace

AttrMap to_attr_map(const LandmarkAttrs& a) {
    return {{"num_landmarks", AttrValue::Int(a.num_landmarks)},
            {"num_prefix", AttrValue::Int(a.num_prefix)},
            {"massive_ratio", AttrValue::Float(a.massive_ratio)},
            {"artifact_ratio", AttrValue::Float(a.artifact_ratio)},
            {"method", AttrValue::Str(method_name(a.method))}};
}
AttrMap to_attr_map(const NystromAttrs& a) {
    return {{"scale", AttrValue::Float(a.scale)}, {"pinv_iters", AttrValue::Int(a.pinv_iters)}};
}
std::vector<uint8_t> serialize(const LandmarkAttrs& a) { return serialize_map(to_attr_map(a)); }
std::vector<uint8_t> serialize(const NystromAttrs& a) { return serialize_map(to_attr_map(a)); }
std::string deserialize(const std::vector<uint8_t>& blob, LandmarkAttrs* out) {
    AttrMap m;
    if (!deserialize_map(blob, &m)) return "FnaLandmarks: corrupt serialised fields";
    return parse_landmark_attrs(m, out);
}
std::string deserialize(const std::vector<uint8_t>& blob, NystromAttrs* out) {
    AttrMap m;
    if (!deserialize_map(blob, &m)) return "NystromAttention: corrupt serialised fields";
    return parse_nystrom_attrs(m, out);
}

}  // namespace fna
