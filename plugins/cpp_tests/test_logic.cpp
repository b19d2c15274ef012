// Plain-C++ logic shared with the TensorRT glue: attributes, shapes, workspace, serialisation.
#include "fna_contract.h"
#include "fna_logic.h"
#include "test_util.h"

using namespace fna;

// The serialised state (to_attr_map) holds exactly the contract's fields, with their types.
static void test_contract_fields() {
    auto same = [](AttrMap const& state, contract::FieldSpec const* fields, int32_t n) {
        CHECK(static_cast<int32_t>(state.size()) == n);
        for (int32_t i = 0; i < n; ++i) {
            auto it = state.find(fields[i].name);
            CHECK_MSG(it != state.end(), fields[i].name);
            if (it == state.end()) continue;
            AttrValue::Kind kind = fields[i].type == contract::FieldType::kInt32     ? AttrValue::kInt
                                   : fields[i].type == contract::FieldType::kFloat32 ? AttrValue::kFloat
                                                                                     : AttrValue::kString;
            CHECK_MSG(it->second.kind == kind, fields[i].name);
        }
    };
    same(to_attr_map(LandmarkAttrs{}), contract::kLandmarksFields, contract::kNumLandmarksFields);
    same(to_attr_map(NystromAttrs{}), contract::kNystromFields, contract::kNumNystromFields);
}

static void test_landmark_attrs() {
    LandmarkAttrs a;
    // num_landmarks is required (fna_contract.h, as the ONNX schema); the other fields have defaults
    CHECK_MSG(contains(parse_landmark_attrs({}, &a), "num_landmarks is required"), parse_landmark_attrs({}, &a));
    CHECK(parse_landmark_attrs({{"num_landmarks", AttrValue::Int(64)}}, &a).empty());
    CHECK(a.num_landmarks == 64 && a.num_prefix == 0 && a.method == Method::kFps);
    CHECK(a.massive_ratio == 0.f && a.artifact_ratio == 0.f);

    AttrMap m{{"num_landmarks", AttrValue::Int(128)}, {"num_prefix", AttrValue::Int(5)},
              {"method", AttrValue::Str("grid")}, {"massive_ratio", AttrValue::Float(4.0)},
              {"artifact_ratio", AttrValue::Float(2.5)}, {"plugin_namespace", AttrValue::Str("fna")},
              {"plugin_version", AttrValue::Str("1")}};
    CHECK(parse_landmark_attrs(m, &a).empty());
    CHECK(a.num_landmarks == 128 && a.num_prefix == 5 && a.method == Method::kGrid);
    CHECK(a.massive_ratio == 4.0f && a.artifact_ratio == 2.5f);

    auto bad = [](AttrMap mm, const char* expect) {
        LandmarkAttrs x;
        x.num_landmarks = 7;
        mm.emplace("num_landmarks", AttrValue::Int(64));  // the required field, unless the case sets it
        std::string e = parse_landmark_attrs(mm, &x);
        CHECK_MSG(contains(e, expect), e);
        CHECK_MSG(contains(e, "FnaLandmarks"), e);
        CHECK(x.num_landmarks == 7);  // untouched on error
        CHECK(e.find('\n') == std::string::npos);
    };
    bad({{"num_landmarks", AttrValue::Int(0)}}, "num_landmarks must be >= 1");
    bad({{"num_prefix", AttrValue::Int(-1)}}, "num_prefix must be >= 0");
    bad({{"num_landmarks", AttrValue::Int(4)}, {"num_prefix", AttrValue::Int(5)}}, "do not fit");
    bad({{"method", AttrValue::Str("random")}}, "method must be");
    bad({{"massive_ratio", AttrValue::Float(-1.0)}}, "massive_ratio");
    bad({{"artifact_ratio", AttrValue::Float(INFINITY)}}, "artifact_ratio");
    bad({{"num_landmarks", AttrValue::Float(3.5)}}, "must be an integer");
    bad({{"num_landmarks", AttrValue::Str("64")}}, "must be an integer");
    bad({{"num_landmarks", AttrValue::Int(1ll << 40)}}, "int32");
    bad({{"plugin_namespace", AttrValue::Str("other")}}, "plugin_namespace");
    bad({{"plugin_version", AttrValue::Str("2")}}, "plugin_version");
}

static void test_nystrom_attrs() {
    NystromAttrs a;
    CHECK(parse_nystrom_attrs({}, &a).empty());
    CHECK(a.scale == 0.f && a.pinv_iters == 6);
    CHECK(parse_nystrom_attrs({{"scale", AttrValue::Float(0.125)}, {"pinv_iters", AttrValue::Int(10)}}, &a).empty());
    CHECK(a.scale == 0.125f && a.pinv_iters == 10);
    std::string e = parse_nystrom_attrs({{"pinv_iters", AttrValue::Int(-2)}}, &a);
    CHECK_MSG(contains(e, "pinv_iters") && contains(e, "NystromAttention"), e);
    e = parse_nystrom_attrs({{"scale", AttrValue::Float(NAN)}}, &a);
    CHECK_MSG(contains(e, "scale"), e);
    e = parse_nystrom_attrs({{"scale", AttrValue::Float(-1.0)}}, &a);
    CHECK_MSG(contains(e, "scale"), e);
    CHECK(a.scale == 0.125f);
    // the bounds are the generated contract's (fna_contract.h), not literals in validate()
    e = parse_nystrom_attrs({{"pinv_iters", AttrValue::Int(101)}}, &a);
    CHECK_MSG(contains(e, "pinv_iters must be <= 100, got 101"), e);
    CHECK(contract::kNystromFields[1].maximum == 100.0);
    CHECK(NystromAttrs{}.pinv_iters == contract::kNystromPinvItersDefault);
    // num_landmarks is required: a default-built LandmarkAttrs is not valid until it is set
    CHECK_MSG(contains(validate(LandmarkAttrs{}), "num_landmarks must be >= 1"), validate(LandmarkAttrs{}));
    CHECK(std::string(method_name(Method::kGrid)) == contract::kMethodNames[1]);
}

static void test_shapes() {
    LandmarkAttrs a;
    a.num_landmarks = 16;
    CHECK(check_landmark_shapes(a, {2, 64, 32}, nullptr).empty());
    CHECK(check_landmark_shapes(a, {-1, -1, 32}, nullptr).empty());  // dynamic dims pass
    CHECK(contains(check_landmark_shapes(a, {2, 8, 32}, nullptr), "more than the 8 tokens"));
    CHECK(contains(check_landmark_shapes(a, {2, 64}, nullptr), "[B, N, D]"));
    std::vector<int64_t> s_ok{2, 64}, s_bad{2, 63}, s_rank{2, 64, 1};
    CHECK(check_landmark_shapes(a, {2, 64, 32}, &s_ok).empty());
    CHECK(contains(check_landmark_shapes(a, {2, 64, 32}, &s_bad), "do not match"));
    CHECK(contains(check_landmark_shapes(a, {2, 64, 32}, &s_rank), "[B, N]"));
    a.massive_ratio = 3.f;
    CHECK(contains(check_landmark_shapes(a, {2, 64, 32}, nullptr), "need the scores"));

    CHECK(check_nystrom_shapes({2, 4, 64, 32}, {2, 4, 64, 32}, {2, 4, 64, 16}, {2, 8}).empty());
    CHECK(check_nystrom_shapes({-1, 4, -1, 32}, {-1, 4, -1, 32}, {-1, 4, -1, 32}, {-1, 8}).empty());
    CHECK(contains(check_nystrom_shapes({2, 4, 64, 32}, {2, 4, 64, 16}, {2, 4, 64, 32}, {2, 8}), "k "));
    CHECK(contains(check_nystrom_shapes({2, 4, 64, 32}, {2, 4, 64, 32}, {2, 4, 63, 32}, {2, 8}), "v "));
    CHECK(contains(check_nystrom_shapes({2, 4, 64, 32}, {2, 4, 64, 32}, {2, 4, 64, 32}, {3, 8}), "idx"));
    CHECK(contains(check_nystrom_shapes({2, 4, 64, 32}, {2, 4, 64, 32}, {2, 4, 64, 32}, {2, 65}), "more than"));
    CHECK(contains(check_nystrom_shapes({2, 4, 64, 32}, {2, 4, 64, 32}, {2, 4, 64, 32}, {2, 0}), "no landmarks"));
    CHECK(contains(check_nystrom_shapes({2, 4, 64, 512}, {2, 4, 64, 512}, {2, 4, 64, 512}, {2, 8}), "head dims"));
    CHECK(contains(check_nystrom_shapes({2, 64, 32}, {2, 64, 32}, {2, 64, 32}, {2, 8}), "[B, H, N, d]"));
}

static void test_workspace() {
    // sections of the layout do not overlap and the size covers them
    for (int64_t n : {17, 1024, 1025, 16384, 100000}) {
        NystromLayout l = nystrom_layout(2, 3, n, 40, 33);
        const size_t mm = 2 * 3 * 33 * 33, md = 2 * 3 * 33 * 40;
        CHECK(l.z >= l.a + mm && l.az >= l.z + mm && l.y1 >= l.az + mm && l.y2 >= l.y1 + mm);
        CHECK(l.bv >= l.y2 + mm && l.w >= l.bv + md && l.total_floats >= l.w + md);
        CHECK(l.a % 64 == 0 && l.z % 64 == 0 && l.bv % 64 == 0 && l.w % 64 == 0);  // 256-byte aligned
        CHECK(nystrom_workspace_size(2, 3, n, 40, 40, 33) >= l.total_floats * 4 + 255);
    }
    // key splits: the partials always fit in the output tensor (they live there), every split
    // has >= 256 keys, and the GPU is filled at B=1 where there is room
    for (int64_t bh : {1, 16, 128, 70000})
        for (int64_t n : {1, 100, 255, 256, 1000, 1024, 4096, 16384, 100000})
            for (int64_t m : {1, 33, 128, 256, 1000})
                for (int64_t dv : {1, 40, 64, 128})
                    for (int64_t eb : {2, 4}) {
                        if (m > n) continue;
                        const int s = nystrom_num_splits(bh, n, m, dv, eb);
                        CHECK(s >= 1 && s <= 64);
                        CHECK(s == 1 || s * 256 <= n);
                        CHECK(nystrom_partials_floats(bh, s, m, dv) * 4 <= static_cast<size_t>(bh * n * dv * eb));
                    }
    CHECK(nystrom_num_splits(16, 4096, 128, 64, 2) >= 8);     // B=1, H=16: >= 256 CTAs for 132 SMs
    CHECK(nystrom_num_splits(16, 16384, 128, 64, 2) >= 16);
    CHECK(nystrom_num_splits(128, 16384, 128, 64, 2) == 3);   // B=8: 768 CTAs already at 3 splits
    CHECK(nystrom_num_splits(16, 300, 128, 64, 2) == 1);      // too few keys to split
    CHECK(nystrom_partials_floats(16, 1, 128, 64) == 0);
    CHECK(nystrom_workspace_size(8, 16, 4096, 64, 64, 256) > nystrom_workspace_size(1, 16, 4096, 64, 64, 256));
    CHECK(landmarks_workspace_size(4, 1000) >= 4 * 1000 * 8 + 2 * 256);
}

static void test_serialisation() {
    LandmarkAttrs a;
    a.num_landmarks = 96; a.num_prefix = 2; a.massive_ratio = 3.5f; a.artifact_ratio = 1.25f; a.method = Method::kGrid;
    LandmarkAttrs b;
    CHECK(deserialize(serialize(a), &b).empty());
    CHECK(b.num_landmarks == 96 && b.num_prefix == 2 && b.massive_ratio == 3.5f && b.artifact_ratio == 1.25f &&
          b.method == Method::kGrid);
    NystromAttrs n;
    n.scale = 0.2f; n.pinv_iters = 9;
    NystromAttrs n2;
    CHECK(deserialize(serialize(n), &n2).empty());
    CHECK(n2.scale == 0.2f && n2.pinv_iters == 9);
    // truncated or trailing bytes are rejected with a sentence
    std::vector<uint8_t> blob = serialize(a);
    std::vector<uint8_t> cut(blob.begin(), blob.end() - 3);
    CHECK(contains(deserialize(cut, &b), "corrupt"));
    blob.push_back(0);
    CHECK(contains(deserialize(blob, &b), "corrupt"));
    CHECK(contains(deserialize(std::vector<uint8_t>{}, &n2), "corrupt"));
    // values are validated on the way in, too
    a.num_prefix = 200;
    CHECK(contains(deserialize(serialize(a), &b), "do not fit"));
}

static void test_landmark_plan() {
    const int64_t hopper = 227 * 1024, ampere = 163 * 1024;
    // small images: one CTA, features on chip
    LandmarkPlan p = plan_landmarks(Method::kFps, 197, 64, 2, 16, hopper);
    CHECK(!p.legacy && p.ctas == 1 && p.chunk == 197 && p.features_on_chip && p.pairs == 32);
    // N = 4096 fp16 D = 64: 8 CTAs of 512 tokens (one per thread), 64 KiB of features each
    p = plan_landmarks(Method::kFps, 4096, 64, 2, 16, hopper);
    CHECK(p.ctas == 8 && p.chunk == 512 && p.features_on_chip);
    CHECK(p.smem_bytes >= p.feat_offset + 32 * 512 * 4 && p.smem_bytes <= static_cast<size_t>(hopper));
    // ViT-L/16 @ 1024 px: 4097 tokens -> 9 CTAs of 456 (the last one 449)
    p = plan_landmarks(Method::kFps, 4097, 64, 2, 16, hopper);
    CHECK(p.ctas == 9 && p.chunk == 456 && p.features_on_chip);
    // N = 16384: 16 CTAs hold 2 MiB of fp16 features; with clusters of 8 they stream from L2
    p = plan_landmarks(Method::kFps, 16384, 64, 2, 16, hopper);
    CHECK(p.ctas == 16 && p.chunk == 1024 && p.features_on_chip);
    p = plan_landmarks(Method::kFps, 16384, 64, 2, 8, hopper);
    CHECK(p.ctas == 8 && p.chunk == 2048 && !p.features_on_chip && p.smem_bytes <= static_cast<size_t>(hopper));
    // fp32 features at N = 16384 do not fit even 16 CTAs
    p = plan_landmarks(Method::kFps, 16384, 64, 4, 16, hopper);
    CHECK(p.ctas == 16 && !p.features_on_chip);
    // no clusters (Ampere): one CTA, on chip while it fits, then streamed, then the legacy kernel
    p = plan_landmarks(Method::kFps, 1200, 64, 2, 1, ampere);
    CHECK(p.ctas == 1 && p.features_on_chip && p.smem_bytes <= static_cast<size_t>(ampere));
    p = plan_landmarks(Method::kFps, 4096, 64, 2, 1, ampere);
    CHECK(p.ctas == 1 && !p.features_on_chip);
    p = plan_landmarks(Method::kFps, 65536, 64, 2, 1, ampere);
    CHECK(p.legacy);
    // odd D: a padded channel pair; the grid method always uses the one-CTA kernel
    p = plan_landmarks(Method::kFps, 100, 5, 4, 16, hopper);
    CHECK(p.pairs == 3 && p.smem_bytes >= p.feat_offset + 3 * 100 * 8);
    CHECK(plan_landmarks(Method::kGrid, 4096, 64, 2, 16, hopper).legacy);
    // the regions never overlap and stay 16-byte aligned
    for (int64_t n : {1, 31, 513, 4097, 16384})
        for (int64_t d : {1, 3, 64, 256}) {
            p = plan_landmarks(Method::kFps, n, d, 2, 16, hopper);
            if (p.legacy) continue;
            CHECK(p.point_offset >= kFpsFixedSmem && p.md_offset >= p.point_offset + p.pairs * 8);
            CHECK(p.feat_offset >= p.md_offset + p.chunk * 4 && p.feat_offset % 16 == 0 && p.md_offset % 16 == 0);
            CHECK(p.chunk * p.ctas >= n && (p.chunk - 1) * p.ctas < n);
        }
}

int main() {
    test_contract_fields();
    test_landmark_attrs();
    test_nystrom_attrs();
    test_shapes();
    test_workspace();
    test_serialisation();
    test_landmark_plan();
    return finish("test_logic");
}
