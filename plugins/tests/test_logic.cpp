// Plain-C++ logic shared with the TensorRT glue: attributes, shapes, workspace, serialisation.
#include "fna_logic.h"
#include "test_util.h"

using namespace fna;

static void test_landmark_attrs() {
    LandmarkAttrs a;
    CHECK(parse_landmark_attrs({}, &a).empty());  // every field has a default
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

int main() {
    test_landmark_attrs();
    test_nystrom_attrs();
    test_shapes();
    test_workspace();
    test_serialisation();
    return finish("test_logic");
}
