// The TensorRT glue without a GPU: creators, fields, serialisation round trip, formats, output
// types/shapes and workspace. Built when a plugin library is (TensorRT or TensorRT-RTX headers).
// The glue's translation unit is included with registration switched off, so nothing touches the
// global registry.
#define FNA_TRT_NO_REGISTRATION 1
#include "../fna/trt/fna_plugins.cpp"

#include <set>

#include "test_util.h"

using namespace nvinfer1;
using fna::trt::LandmarksCreator;
using fna::trt::NystromCreator;

static std::set<std::string> names(PluginFieldCollection const* fc) {
    std::set<std::string> s;
    for (int32_t i = 0; i < fc->nbFields; ++i) s.insert(fc->fields[i].name);
    return s;
}

static DynamicPluginTensorDesc desc(std::vector<int64_t> dims, DataType t) {
    DynamicPluginTensorDesc d{};
    d.desc.dims.nbDims = static_cast<int32_t>(dims.size());
    for (size_t i = 0; i < dims.size(); ++i) d.desc.dims.d[i] = d.min.d[i] = d.opt.d[i] = d.max.d[i] = dims[i];
    d.min.nbDims = d.opt.nbDims = d.max.nbDims = d.desc.dims.nbDims;
    d.desc.type = t;
    d.desc.format = TensorFormat::kLINEAR;
    return d;
}

static void test_landmarks() {
    LandmarksCreator c;
    CHECK(std::string(c.getPluginName()) == "FnaLandmarks" && std::string(c.getPluginVersion()) == "1" &&
          std::string(c.getPluginNamespace()) == "fna");
    CHECK((names(c.getFieldNames()) ==
           std::set<std::string>{"num_landmarks", "num_prefix", "massive_ratio", "artifact_ratio", "method"}));
    // num_landmarks is required (fna_contract.h, as the ONNX schema); every other field has a default
    CHECK(c.createPlugin("lm", nullptr, TensorRTPhase::kBUILD) == nullptr);
    int32_t m0 = 16;
    PluginField only_m{"num_landmarks", &m0, PluginFieldType::kINT32, 1};
    PluginFieldCollection only_m_fc{1, &only_m};
    IPluginV3* p0 = c.createPlugin("lm", &only_m_fc, TensorRTPhase::kBUILD);
    CHECK(p0 != nullptr);
    delete p0;
    int32_t m = 32, prefix = 1;
    float massive = 4.f;
    char const method[] = "grid";
    std::vector<PluginField> f{{"num_landmarks", &m, PluginFieldType::kINT32, 1},
                               {"num_prefix", &prefix, PluginFieldType::kINT32, 1},
                               {"massive_ratio", &massive, PluginFieldType::kFLOAT32, 1},
                               {"method", method, PluginFieldType::kCHAR, 4},
                               {"plugin_namespace", "fna", PluginFieldType::kCHAR, 3}};
    PluginFieldCollection fc{static_cast<int32_t>(f.size()), f.data()};
    IPluginV3* p = c.createPlugin("lm", &fc, TensorRTPhase::kBUILD);
    CHECK(p != nullptr);
    auto* core = static_cast<IPluginV3OneCore*>(p->getCapabilityInterface(PluginCapabilityType::kCORE));
    auto* build = static_cast<IPluginV3OneBuild*>(p->getCapabilityInterface(PluginCapabilityType::kBUILD));
    auto* rt = static_cast<IPluginV3OneRuntime*>(p->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    CHECK(std::string(core->getPluginName()) == "FnaLandmarks");
    DataType in_t[2] = {DataType::kHALF, DataType::kFLOAT}, out_t;
    CHECK(build->getOutputDataTypes(&out_t, 1, in_t, 2) == 0 && out_t == DataType::kINT32);
    DynamicPluginTensorDesc io[3] = {desc({2, 100, 64}, DataType::kHALF), desc({2, 100}, DataType::kFLOAT),
                                     desc({2, 32}, DataType::kINT32)};
    CHECK(build->supportsFormatCombination(0, io, 2, 1) && build->supportsFormatCombination(1, io, 2, 1) &&
          build->supportsFormatCombination(2, io, 2, 1));
    io[2].desc.type = DataType::kFLOAT;
    CHECK(!build->supportsFormatCombination(2, io, 2, 1));
    io[2].desc.type = DataType::kINT32;
    io[0].desc.type = DataType::kINT8;
    CHECK(!build->supportsFormatCombination(0, io, 2, 1));
    io[0].desc.type = DataType::kHALF;
    CHECK(build->configurePlugin(io, 2, io + 2, 1) == 0);
    CHECK(build->getWorkspaceSize(io, 2, io + 2, 1) == fna::landmarks_workspace_size(2, 100));
    DynamicPluginTensorDesc few = desc({2, 16, 64}, DataType::kHALF);  // fewer tokens than landmarks
    CHECK(build->configurePlugin(&few, 1, io + 2, 1) != 0);
    // serialised fields recreate the same plugin (runtime phase)
    PluginFieldCollection const* ser = rt->getFieldsToSerialize();
    CHECK((names(ser) == std::set<std::string>{"num_landmarks", "num_prefix", "massive_ratio", "artifact_ratio", "method"}));
    IPluginV3* q = c.createPlugin("lm", ser, TensorRTPhase::kRUNTIME);
    CHECK(q != nullptr);
    auto* rt2 = static_cast<IPluginV3OneRuntime*>(q->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    PluginFieldCollection const* ser2 = rt2->getFieldsToSerialize();
    for (int32_t i = 0; i < ser2->nbFields; ++i) {
        PluginField const& a = ser->fields[i];
        PluginField const& b = ser2->fields[i];
        CHECK(std::string(a.name) == b.name && a.type == b.type && a.length == b.length);
        size_t bytes = a.type == PluginFieldType::kCHAR ? static_cast<size_t>(a.length) : 4;
        CHECK(std::memcmp(a.data, b.data, bytes) == 0);
    }
    IPluginV3* cl = p->clone();
    CHECK(cl != nullptr && cl != p);
    delete cl; delete q; delete p;
    // bad values: no plugin, one logged sentence
    int32_t zero = 0;
    PluginField bad{"num_landmarks", &zero, PluginFieldType::kINT32, 1};
    PluginFieldCollection bfc{1, &bad};
    CHECK(c.createPlugin("lm", &bfc, TensorRTPhase::kBUILD) == nullptr);
    char const bad_method[] = "kmeans";
    PluginField badm[2]{{"num_landmarks", &m0, PluginFieldType::kINT32, 1}, {"method", bad_method, PluginFieldType::kCHAR, 6}};
    PluginFieldCollection bmc{2, badm};
    CHECK(c.createPlugin("lm", &bmc, TensorRTPhase::kBUILD) == nullptr);
}

static void test_nystrom() {
    NystromCreator c;
    CHECK(std::string(c.getPluginName()) == "NystromAttention");
    CHECK((names(c.getFieldNames()) == std::set<std::string>{"scale", "pinv_iters"}));
    int32_t iters = 8;
    float scale = 0.125f;
    std::vector<PluginField> f{{"scale", &scale, PluginFieldType::kFLOAT32, 1},
                               {"pinv_iters", &iters, PluginFieldType::kINT32, 1},
                               {"plugin_version", "1", PluginFieldType::kCHAR, 2}};
    PluginFieldCollection fc{static_cast<int32_t>(f.size()), f.data()};
    IPluginV3* p = c.createPlugin("ny", &fc, TensorRTPhase::kBUILD);
    CHECK(p != nullptr);
    auto* build = static_cast<IPluginV3OneBuild*>(p->getCapabilityInterface(PluginCapabilityType::kBUILD));
    DataType in_t[4] = {DataType::kHALF, DataType::kHALF, DataType::kHALF, DataType::kINT32}, out_t;
    CHECK(build->getOutputDataTypes(&out_t, 1, in_t, 4) == 0 && out_t == DataType::kHALF);
    DynamicPluginTensorDesc io[5] = {desc({2, 4, 256, 64}, DataType::kHALF), desc({2, 4, 256, 64}, DataType::kHALF),
                                     desc({2, 4, 256, 64}, DataType::kHALF), desc({2, 32}, DataType::kINT32),
                                     desc({2, 4, 256, 64}, DataType::kHALF)};
    for (int pos = 0; pos < 5; ++pos) CHECK(build->supportsFormatCombination(pos, io, 4, 1));
    io[1].desc.type = DataType::kFLOAT;  // k must share q's type
    CHECK(!build->supportsFormatCombination(1, io, 4, 1));
    io[1].desc.type = DataType::kHALF;
    io[3].desc.type = DataType::kINT64;
    CHECK(!build->supportsFormatCombination(3, io, 4, 1));
    io[3].desc.type = DataType::kINT32;
    for (int pos : {0, 1, 2, 4}) io[pos].desc.type = DataType::kBF16;  // bf16 I/O (tensor-core kernels)
    for (int pos = 0; pos < 5; ++pos) CHECK(build->supportsFormatCombination(pos, io, 4, 1));
    for (int pos : {0, 1, 2, 4}) io[pos].desc.type = DataType::kHALF;
    CHECK(build->configurePlugin(io, 4, io + 4, 1) == 0);
    CHECK(build->getWorkspaceSize(io, 4, io + 4, 1) == fna::nystrom_workspace_size(2, 4, 256, 64, 64, 32));
    DynamicPluginTensorDesc badk[4] = {io[0], desc({2, 4, 256, 32}, DataType::kHALF), io[2], io[3]};
    CHECK(build->configurePlugin(badk, 4, io + 4, 1) != 0);
    // output shape: [B, H, N] of q and dv of v (expressions passed through)
    DimsExprs in[4]{}, out{};
    IDimensionExpr const* tag[8];
    for (int i = 0; i < 8; ++i) tag[i] = reinterpret_cast<IDimensionExpr const*>(static_cast<uintptr_t>(0x1000 + 16 * i));
    for (int t = 0; t < 3; ++t) {
        in[t].nbDims = 4;
        for (int i = 0; i < 4; ++i) in[t].d[i] = tag[i];
    }
    in[2].d[3] = tag[7];
    in[3].nbDims = 2;
    struct NoExprBuilder : IExprBuilder {  // NystromAttention only passes expressions through
        NoExprBuilder() { mImpl = nullptr; }
    } eb;
    CHECK(build->getOutputShapes(in, 4, nullptr, 0, &out, 1, eb) == 0);
    CHECK(out.nbDims == 4 && out.d[0] == tag[0] && out.d[1] == tag[1] && out.d[2] == tag[2] && out.d[3] == tag[7]);
    delete p;
    int32_t neg = -1;
    PluginField bad{"pinv_iters", &neg, PluginFieldType::kINT32, 1};
    PluginFieldCollection bfc{1, &bad};
    CHECK(c.createPlugin("ny", &bfc, TensorRTPhase::kBUILD) == nullptr);
}

int main() {
    test_landmarks();
    test_nystrom();
    return finish("test_trt_glue");
}
