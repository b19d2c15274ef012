// TensorRT IPluginV3 glue for the two fna ops: FnaLandmarks and NystromAttention, version "1",
// namespace "fna". Boilerplate only: attribute parsing/validation, shape rules, workspace sizing
// and the fields that make up the serialised state live in fna_logic.cpp (unit tested without
// TensorRT); the math lives in the CUDA kernels (kernels.h).
//
// Creator field names equal the ONNX attribute names, so the ONNX parser's fallback plugin
// importer (op type == plugin name, attributes plugin_version / plugin_namespace) builds them
// directly from FnaLandmarks / NystromAttention nodes. Registered under namespace "fna" when the
// library is loaded (dlopen) or through the getCreators entry point (IPluginRegistry::loadLibrary):
// see "registration" at the end. Compiles against the TensorRT 10.x and 11.x headers (TensorRT-RTX
// 1.7 has TensorRT 11's interfaces); the plugin-side interfaces (IPluginV3One*) are the same in both.
#include <NvInferRuntime.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "fna_contract.h"
#include "fna_logic.h"
#include "fna_trace.h"
#include "kernels.h"

namespace fna {
namespace trt {
namespace {

using namespace nvinfer1;

// Names, version, namespace and creator fields come from the generated contract (fna_contract.h).
using contract::kLandmarksName;
using contract::kNamespace;
using contract::kNystromName;
using contract::kVersion;

// The logger of the runtime that loaded us: the one IPluginRegistry::loadLibrary hands over through
// setLoggerFinder (below), else the library's global getLogger().
ILoggerFinder* g_logger_finder = nullptr;

void log_error(std::string const& msg) noexcept {
    try {
        ILogger* logger = g_logger_finder ? g_logger_finder->findLogger() : nullptr;
        if (logger == nullptr) logger = getLogger();
        if (logger) logger->log(ILogger::Severity::kERROR, msg.c_str());
        else std::fprintf(stderr, "[fna] %s\n", msg.c_str());
    } catch (...) {
    }
}

std::vector<int64_t> dims_of(Dims const& d) {
    std::vector<int64_t> v(d.nbDims);
    for (int32_t i = 0; i < d.nbDims; ++i) v[i] = d.d[i];
    return v;
}

// PluginFieldCollection -> AttrMap (INT as kINT32/kINT64, FLOAT as kFLOAT32/kFLOAT64, STRING as kCHAR).
std::string to_attr_map(PluginFieldCollection const* fc, AttrMap* out) {
    if (fc == nullptr) return "";
    for (int32_t i = 0; i < fc->nbFields; ++i) {
        PluginField const& f = fc->fields[i];
        if (f.name == nullptr) continue;
        std::string name(f.name);
        if (f.data == nullptr || f.length < 1) return name + " has no value";
        switch (f.type) {
            case PluginFieldType::kINT32: (*out)[name] = AttrValue::Int(*static_cast<int32_t const*>(f.data)); break;
            case PluginFieldType::kINT64: (*out)[name] = AttrValue::Int(*static_cast<int64_t const*>(f.data)); break;
            case PluginFieldType::kINT8: (*out)[name] = AttrValue::Int(*static_cast<int8_t const*>(f.data)); break;
            case PluginFieldType::kINT16: (*out)[name] = AttrValue::Int(*static_cast<int16_t const*>(f.data)); break;
            case PluginFieldType::kFLOAT32: (*out)[name] = AttrValue::Float(*static_cast<float const*>(f.data)); break;
            case PluginFieldType::kFLOAT64: (*out)[name] = AttrValue::Float(*static_cast<double const*>(f.data)); break;
            case PluginFieldType::kCHAR: {
                std::string s(static_cast<char const*>(f.data), static_cast<size_t>(f.length));
                s = s.substr(0, s.find('\0'));
                (*out)[name] = AttrValue::Str(s);
                break;
            }
            default: return name + " has an unsupported field type";
        }
    }
    return "";
}

bool is_float_linear(PluginTensorDesc const& d) {
    return (d.type == DataType::kFLOAT || d.type == DataType::kHALF) && d.format == TensorFormat::kLINEAR;
}

cuda::DType dtype_of(DataType t) {
    return t == DataType::kHALF ? cuda::kFloat16 : t == DataType::kBF16 ? cuda::kBFloat16 : cuda::kFloat32;
}

// Common IPluginV3 plumbing: one object is core, build and runtime capability at once.
template <typename Derived>
class PluginBase : public IPluginV3, public IPluginV3OneCore, public IPluginV3OneBuild, public IPluginV3OneRuntime {
public:
    IPluginCapability* getCapabilityInterface(PluginCapabilityType type) noexcept override {
        switch (type) {
            case PluginCapabilityType::kCORE: return static_cast<IPluginV3OneCore*>(this);
            case PluginCapabilityType::kBUILD: return static_cast<IPluginV3OneBuild*>(this);
            case PluginCapabilityType::kRUNTIME: return static_cast<IPluginV3OneRuntime*>(this);
        }
        return nullptr;
    }
    IPluginV3* clone() noexcept override {
        try {
            return new Derived(static_cast<Derived const&>(*this));
        } catch (...) {
            return nullptr;
        }
    }
    char const* getPluginVersion() const noexcept override { return kVersion; }
    char const* getPluginNamespace() const noexcept override { return kNamespace; }
    int32_t getNbOutputs() const noexcept override { return 1; }
    IPluginV3* attachToContext(IPluginResourceContext* /*context*/) noexcept override { return clone(); }
};

// ------------------------------------------------------------------------------ FnaLandmarks
class LandmarksPlugin final : public PluginBase<LandmarksPlugin> {
public:
    explicit LandmarksPlugin(LandmarkAttrs const& a) : attrs_(a) { sync_fields(); }
    LandmarksPlugin(LandmarksPlugin const& o) : attrs_(o.attrs_), nb_inputs_(o.nb_inputs_) { sync_fields(); }

    char const* getPluginName() const noexcept override { return kLandmarksName; }

    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const*,
                            int32_t nbOutputs) noexcept override {
        FNA_TRACE(kLandmarksName, "configurePlugin", type_name(in[0].desc.type));
        if ((nbInputs != 1 && nbInputs != 2) || nbOutputs != 1) return fail("FnaLandmarks takes features [, scores] and gives idx");
        nb_inputs_ = nbInputs;  // enqueue is not told whether scores are connected
        std::vector<int64_t> f = dims_of(in[0].desc.dims), s;
        if (nbInputs == 2) s = dims_of(in[1].desc.dims);
        return fail(check_landmark_shapes(attrs_, f, nbInputs == 2 ? &s : nullptr));
    }
    int32_t getOutputDataTypes(DataType* out, int32_t nbOutputs, DataType const*, int32_t) const noexcept override {
        FNA_TRACE(kLandmarksName, "getOutputDataTypes");
        if (nbOutputs != 1) return -1;
        out[0] = DataType::kINT32;
        return 0;
    }
    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*, int32_t, DimsExprs* outputs,
                            int32_t nbOutputs, IExprBuilder& eb) noexcept override {
        if (nbInputs < 1 || nbOutputs != 1 || inputs[0].nbDims != 3)
            return fail("FnaLandmarks: features must have shape [B, N, D]");
        FNA_TRACE(kLandmarksName, "getOutputShapes", "features=" + expr_str(inputs[0]));
        outputs[0].nbDims = 2;
        outputs[0].d[0] = inputs[0].d[0];
        outputs[0].d[1] = eb.constant(attrs_.num_landmarks);
        return 0;
    }
    bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* io, int32_t nbInputs,
                                   int32_t) noexcept override {
        PluginTensorDesc const& d = io[pos].desc;
        bool ok = pos < nbInputs ? is_float_linear(d) : d.type == DataType::kINT32 && d.format == TensorFormat::kLINEAR;
        if (d.format == TensorFormat::kLINEAR)
            FNA_TRACE(kLandmarksName, "supportsFormatCombination", "pos=" + std::to_string(pos) + " " + type_name(d.type) + (ok ? " yes" : " no"));
        return ok;
    }
    size_t getWorkspaceSize(DynamicPluginTensorDesc const* in, int32_t, DynamicPluginTensorDesc const*,
                            int32_t) const noexcept override {
        FNA_TRACE(kLandmarksName, "getWorkspaceSize", "max_batch=" + std::to_string(in[0].max.d[0]));
        return landmarks_workspace_size(in[0].max.d[0], in[0].max.d[1]);
    }
    int32_t onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const*, int32_t) noexcept override {
        nb_inputs_ = nbInputs;
        std::vector<int64_t> f = dims_of(in[0].dims), s;
        if (nbInputs == 2) s = dims_of(in[1].dims);
        return fail(check_landmark_shapes(attrs_, f, nbInputs == 2 ? &s : nullptr));
    }
    int32_t enqueue(PluginTensorDesc const* inDesc, PluginTensorDesc const*, void const* const* inputs, void* const* outputs,
                    void* workspace, cudaStream_t stream) noexcept override {
        Dims const& f = inDesc[0].dims;
        const bool has_scores = nb_inputs_ == 2;
        int rc = cuda::launch_landmarks(inputs[0], dtype_of(inDesc[0].type), has_scores ? inputs[1] : nullptr,
                                        has_scores ? dtype_of(inDesc[1].type) : cuda::kFloat32, f.d[0], f.d[1], f.d[2],
                                        attrs_, static_cast<int32_t*>(outputs[0]), workspace,
                                        landmarks_workspace_size(f.d[0], f.d[1]), stream);
        if (rc != 0) log_error(std::string("FnaLandmarks: ") + cuda::error_string(rc));
        return rc == 0 ? 0 : -1;
    }
    PluginFieldCollection const* getFieldsToSerialize() noexcept override {
        FNA_TRACE(kLandmarksName, "getFieldsToSerialize");
        sync_fields();
        return &fc_;
    }

private:
    int32_t fail(std::string const& msg) noexcept {
        if (msg.empty()) return 0;
        log_error(msg);
        return -1;
    }
    void sync_fields() {
        method_ = method_name(attrs_.method);
        fields_.clear();
        fields_.emplace_back("num_landmarks", &attrs_.num_landmarks, PluginFieldType::kINT32, 1);
        fields_.emplace_back("num_prefix", &attrs_.num_prefix, PluginFieldType::kINT32, 1);
        fields_.emplace_back("massive_ratio", &attrs_.massive_ratio, PluginFieldType::kFLOAT32, 1);
        fields_.emplace_back("artifact_ratio", &attrs_.artifact_ratio, PluginFieldType::kFLOAT32, 1);
        fields_.emplace_back("method", method_.c_str(), PluginFieldType::kCHAR, static_cast<int32_t>(method_.size() + 1));
        fc_.nbFields = static_cast<int32_t>(fields_.size());
        fc_.fields = fields_.data();
    }

    LandmarkAttrs attrs_;
    std::string method_;
    std::vector<PluginField> fields_;
    PluginFieldCollection fc_{};
    int32_t nb_inputs_ = 1;
};

// --------------------------------------------------------------------------- NystromAttention
class NystromPlugin final : public PluginBase<NystromPlugin> {
public:
    explicit NystromPlugin(NystromAttrs const& a) : attrs_(a) { sync_fields(); }
    NystromPlugin(NystromPlugin const& o) : attrs_(o.attrs_) { sync_fields(); }

    char const* getPluginName() const noexcept override { return kNystromName; }

    int32_t configurePlugin(DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const*,
                            int32_t nbOutputs) noexcept override {
        FNA_TRACE(kNystromName, "configurePlugin", type_name(in[0].desc.type));
        if (nbInputs != 4 || nbOutputs != 1) return fail("NystromAttention takes q, k, v, idx and gives out");
        return fail(check_nystrom_shapes(dims_of(in[0].desc.dims), dims_of(in[1].desc.dims), dims_of(in[2].desc.dims),
                                         dims_of(in[3].desc.dims)));
    }
    int32_t getOutputDataTypes(DataType* out, int32_t nbOutputs, DataType const* in, int32_t nbInputs) const noexcept override {
        FNA_TRACE(kNystromName, "getOutputDataTypes");
        if (nbOutputs != 1 || nbInputs < 1) return -1;
        out[0] = in[0];
        return 0;
    }
    int32_t getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const*, int32_t, DimsExprs* outputs,
                            int32_t nbOutputs, IExprBuilder&) noexcept override {
        if (nbInputs != 4 || nbOutputs != 1 || inputs[0].nbDims != 4 || inputs[2].nbDims != 4)
            return fail("NystromAttention: q, k, v must have shape [B, H, N, d]");
        FNA_TRACE(kNystromName, "getOutputShapes", "q=" + expr_str(inputs[0]));
        outputs[0].nbDims = 4;
        for (int i = 0; i < 3; ++i) outputs[0].d[i] = inputs[0].d[i];
        outputs[0].d[3] = inputs[2].d[3];
        return 0;
    }
    bool supportsFormatCombination(int32_t pos, DynamicPluginTensorDesc const* io, int32_t, int32_t) noexcept override {
        PluginTensorDesc const& d = io[pos].desc;
        bool ok = false;
        switch (pos) {
            case 0: ok = is_float_linear(d) || (d.type == DataType::kBF16 && d.format == TensorFormat::kLINEAR); break;  // q
            case 1: case 2: case 4: ok = d.type == io[0].desc.type && d.format == TensorFormat::kLINEAR; break;  // k, v, out
            case 3: ok = d.type == DataType::kINT32 && d.format == TensorFormat::kLINEAR; break;  // idx
            default: ok = false;
        }
        if (d.format == TensorFormat::kLINEAR)
            FNA_TRACE(kNystromName, "supportsFormatCombination", "pos=" + std::to_string(pos) + " " + type_name(d.type) + (ok ? " yes" : " no"));
        return ok;
    }
    size_t getWorkspaceSize(DynamicPluginTensorDesc const* in, int32_t, DynamicPluginTensorDesc const*,
                            int32_t) const noexcept override {
        Dims const& q = in[0].max;
        FNA_TRACE(kNystromName, "getWorkspaceSize", "max_batch=" + std::to_string(q.d[0]));
        return nystrom_workspace_size(q.d[0], q.d[1], q.d[2], q.d[3], in[2].max.d[3], in[3].max.d[1]);
    }
    int32_t onShapeChange(PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const*, int32_t) noexcept override {
        if (nbInputs != 4) return -1;
        return fail(check_nystrom_shapes(dims_of(in[0].dims), dims_of(in[1].dims), dims_of(in[2].dims), dims_of(in[3].dims)));
    }
    int32_t enqueue(PluginTensorDesc const* inDesc, PluginTensorDesc const*, void const* const* inputs, void* const* outputs,
                    void* workspace, cudaStream_t stream) noexcept override {
        Dims const& q = inDesc[0].dims;
        const int64_t dv = inDesc[2].dims.d[3], m = inDesc[3].dims.d[1];
        int rc = cuda::launch_nystrom(inputs[0], inputs[1], inputs[2], dtype_of(inDesc[0].type),
                                      static_cast<int32_t const*>(inputs[3]), q.d[0], q.d[1], q.d[2], q.d[3], dv, m, attrs_,
                                      outputs[0], workspace, nystrom_workspace_size(q.d[0], q.d[1], q.d[2], q.d[3], dv, m),
                                      stream);
        if (rc != 0) log_error(std::string("NystromAttention: ") + cuda::error_string(rc));
        return rc == 0 ? 0 : -1;
    }
    PluginFieldCollection const* getFieldsToSerialize() noexcept override {
        FNA_TRACE(kNystromName, "getFieldsToSerialize");
        sync_fields();
        return &fc_;
    }

private:
    int32_t fail(std::string const& msg) noexcept {
        if (msg.empty()) return 0;
        log_error(msg);
        return -1;
    }
    void sync_fields() {
        fields_.clear();
        fields_.emplace_back("scale", &attrs_.scale, PluginFieldType::kFLOAT32, 1);
        fields_.emplace_back("pinv_iters", &attrs_.pinv_iters, PluginFieldType::kINT32, 1);
        fc_.nbFields = static_cast<int32_t>(fields_.size());
        fc_.fields = fields_.data();
    }

    NystromAttrs attrs_;
    std::vector<PluginField> fields_;
    PluginFieldCollection fc_{};
};

// ------------------------------------------------------------------------------- creators
// The fields a creator declares (getFieldNames), straight from the contract table. The ONNX parser passes
// exactly these names, converted from the node's attributes.
template <size_t N>
std::vector<PluginField> contract_fields(contract::FieldSpec const (&spec)[N]) {
    std::vector<PluginField> fields;
    for (auto const& f : spec) {
        PluginFieldType type = f.type == contract::FieldType::kInt32     ? PluginFieldType::kINT32
                               : f.type == contract::FieldType::kFloat32 ? PluginFieldType::kFLOAT32
                                                                         : PluginFieldType::kCHAR;
        fields.emplace_back(f.name, nullptr, type, type == PluginFieldType::kCHAR ? 0 : 1);
    }
    return fields;
}

template <typename Plugin, typename Attrs>
class CreatorBase : public IPluginCreatorV3One {
public:
    CreatorBase(char const* name, std::vector<PluginField> fields) : name_(name), fields_(std::move(fields)) {
        fc_.nbFields = static_cast<int32_t>(fields_.size());
        fc_.fields = fields_.data();
    }
    PluginFieldCollection const* getFieldNames() noexcept override { return &fc_; }
    char const* getPluginName() const noexcept override { return name_; }
    char const* getPluginVersion() const noexcept override { return kVersion; }
    char const* getPluginNamespace() const noexcept override { return kNamespace; }

protected:
    IPluginV3* create(PluginFieldCollection const* fc,
                      std::string (*parse)(AttrMap const&, Attrs*)) noexcept {
        try {
            AttrMap attrs;
            std::string err = to_attr_map(fc, &attrs);
            if (!err.empty()) err = std::string(name_) + ": " + err;
            Attrs a;
            if (err.empty()) err = parse(attrs, &a);
            if (!err.empty()) {
                log_error(err);
                return nullptr;
            }
            return new Plugin(a);
        } catch (std::exception const& e) {
            log_error(std::string(name_) + ": " + e.what());
            return nullptr;
        }
    }

private:
    char const* name_;
    std::vector<PluginField> fields_;
    PluginFieldCollection fc_{};
};

class LandmarksCreator final : public CreatorBase<LandmarksPlugin, LandmarkAttrs> {
public:
    LandmarksCreator()
        : CreatorBase(kLandmarksName, contract_fields(contract::kLandmarksFields)) {}
    IPluginV3* createPlugin(char const*, PluginFieldCollection const* fc, [[maybe_unused]] TensorRTPhase phase) noexcept override {
        FNA_TRACE(kLandmarksName, "createPlugin", phase == TensorRTPhase::kBUILD ? "kBUILD" : "kRUNTIME");
        return create(fc, &parse_landmark_attrs);
    }
};

class NystromCreator final : public CreatorBase<NystromPlugin, NystromAttrs> {
public:
    NystromCreator()
        : CreatorBase(kNystromName, contract_fields(contract::kNystromFields)) {}
    IPluginV3* createPlugin(char const*, PluginFieldCollection const* fc, [[maybe_unused]] TensorRTPhase phase) noexcept override {
        FNA_TRACE(kNystromName, "createPlugin", phase == TensorRTPhase::kBUILD ? "kBUILD" : "kRUNTIME");
        return create(fc, &parse_nystrom_attrs);
    }
};

}  // namespace
}  // namespace trt
}  // namespace fna

// ---------------------------------------------------------------------------- registration
// Two ways in, one registration under namespace "fna" (getCreator(name, "1", "fna") finds it):
// - dlopen (ctypes, polygraphy --plugins, trtexec --staticPlugins, Triton LD_PRELOAD): the static
//   registrar below registers each creator unless one of that name/version/namespace is already
//   there (a second copy of the library registers nothing);
// - IPluginRegistry::loadLibrary (trtexec --dynamicPlugins, registry.load_library): the registry
//   calls getCreators() and registers what it returns; getCreators first takes back what the
//   static registrar registered, since loadLibrary fails when a creator is already registered.
// REGISTER_TENSORRT_PLUGIN is not used: it registers under namespace "".
// FNA_TRT_NO_REGISTRATION (the glue unit test) leaves the global registry alone.
#ifndef FNA_TRT_NO_REGISTRATION
namespace fna {
namespace trt {
namespace {

struct Registration {
    LandmarksCreator landmarks;
    NystromCreator nystrom;
    nvinfer1::IPluginCreatorInterface* creators[2] = {&landmarks, &nystrom};
    bool registered[2] = {false, false};

    Registration() noexcept {
        nvinfer1::IPluginRegistry* registry = getPluginRegistry();
        if (registry == nullptr) return;
        nvinfer1::IPluginCreatorV3One* typed[2] = {&landmarks, &nystrom};
        for (int i = 0; i < 2; ++i) {
            if (!is_registered(*registry, typed[i]->getPluginName()))
                registered[i] = registry->registerCreator(*creators[i], kNamespace);
        }
    }
    // getAllCreators rather than getCreator, which logs an error for a creator it does not find
    static bool is_registered(nvinfer1::IPluginRegistry& registry, char const* name) noexcept {
        int32_t n = 0;
        nvinfer1::IPluginCreatorInterface* const* all = registry.getAllCreators(&n);
        for (int32_t i = 0; all != nullptr && i < n; ++i) {
            if (all[i] == nullptr || std::strcmp(all[i]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") != 0) continue;
            auto const* c = static_cast<nvinfer1::IPluginCreatorV3One const*>(all[i]);
            if (std::strcmp(c->getPluginName(), name) == 0 && std::strcmp(c->getPluginVersion(), kVersion) == 0 &&
                std::strcmp(c->getPluginNamespace(), kNamespace) == 0)
                return true;
        }
        return false;
    }
    void take_back() noexcept {
        nvinfer1::IPluginRegistry* registry = getPluginRegistry();
        for (int i = 0; i < 2; ++i) {
            if (registered[i] && registry != nullptr) registry->deregisterCreator(*creators[i]);
            registered[i] = false;
        }
    }
};

Registration& registration() {
    static Registration r;
    return r;
}
[[maybe_unused]] Registration& g_static_registration = registration();

}  // namespace
}  // namespace trt
}  // namespace fna

// The entry point IPluginRegistry::loadLibrary looks up (TensorRT 10 and 11, TensorRT-RTX).
extern "C" __attribute__((visibility("default"))) nvinfer1::IPluginCreatorInterface* const* getCreators(
    int32_t& nbCreators) {
    fna::trt::Registration& r = fna::trt::registration();
    r.take_back();
    nbCreators = 2;
    return r.creators;
}

// loadLibrary requires it next to getCreators: the loading runtime's logger for our error sentences.
extern "C" __attribute__((visibility("default"))) void setLoggerFinder(nvinfer1::ILoggerFinder* finder) {
    fna::trt::g_logger_finder = finder;
}
#endif  // FNA_TRT_NO_REGISTRATION
