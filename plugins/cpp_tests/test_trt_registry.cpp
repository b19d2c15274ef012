// The plugin library as a real runtime loads it, no GPU needed:
//   fna_test_trt_registry PLUGIN.so
// IPluginRegistry::loadLibrary (the getCreators entry point: trtexec --dynamicPlugins) registers
// both creators under namespace "fna"; getCreator(name, "1", "fna") finds them (engine loading looks
// creators up so); a plugin made from fields gives getFieldsToSerialize, and the creator rebuilds an
// equal plugin from those with TensorRTPhase::kRUNTIME (what deserializing an engine does); loading
// the library again (loadLibrary, dlopen) registers nothing twice and does not crash.
#include <NvInferRuntime.h>
#include <dlfcn.h>

#include <cstring>
#include <string>
#include <vector>

#include "test_util.h"

using namespace nvinfer1;

static int count_registered(char const* name) {
    int32_t n = 0;
    IPluginCreatorInterface* const* all = getPluginRegistry()->getAllCreators(&n);
    int found = 0;
    for (int32_t i = 0; i < n; ++i) {
        if (std::strcmp(all[i]->getInterfaceInfo().kind, "PLUGIN CREATOR_V3ONE") != 0) continue;
        auto const* c = static_cast<IPluginCreatorV3One const*>(all[i]);
        if (std::strcmp(c->getPluginName(), name) == 0 && std::strcmp(c->getPluginNamespace(), "fna") == 0) ++found;
    }
    return found;
}

static size_t field_bytes(PluginField const& f) {
    switch (f.type) {
        case PluginFieldType::kCHAR: case PluginFieldType::kINT8: return static_cast<size_t>(f.length);
        case PluginFieldType::kINT64: case PluginFieldType::kFLOAT64: return 8u * static_cast<size_t>(f.length);
        default: return 4u * static_cast<size_t>(f.length);
    }
}

static std::string dump(PluginFieldCollection const* fc) {
    std::string s;
    for (int32_t i = 0; i < fc->nbFields; ++i) {
        PluginField const& f = fc->fields[i];
        s += std::string(f.name) + ":" + std::to_string(static_cast<int>(f.type)) + ":" + std::to_string(f.length) + "=";
        s.append(static_cast<char const*>(f.data), field_bytes(f));
        s += ";";
    }
    return s;
}

// create (kBUILD) from fc, serialise, recreate (kRUNTIME) from the serialised fields, serialise again
static void round_trip(char const* name, PluginFieldCollection const& fc) {
    auto* creator = static_cast<IPluginCreatorV3One*>(getPluginRegistry()->getCreator(name, "1", "fna"));
    CHECK(creator != nullptr);
    if (creator == nullptr) return;
    CHECK(std::string(creator->getPluginNamespace()) == "fna");
    IPluginV3* built = creator->createPlugin(name, &fc, TensorRTPhase::kBUILD);
    CHECK(built != nullptr);
    if (built == nullptr) return;
    auto* rt = static_cast<IPluginV3OneRuntime*>(built->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
    std::string first = dump(rt->getFieldsToSerialize());
    IPluginV3* loaded = creator->createPlugin(name, rt->getFieldsToSerialize(), TensorRTPhase::kRUNTIME);
    CHECK(loaded != nullptr);
    if (loaded != nullptr) {
        auto* rt2 = static_cast<IPluginV3OneRuntime*>(loaded->getCapabilityInterface(PluginCapabilityType::kRUNTIME));
        CHECK(dump(rt2->getFieldsToSerialize()) == first);
        auto* core = static_cast<IPluginV3OneCore*>(loaded->getCapabilityInterface(PluginCapabilityType::kCORE));
        CHECK(std::string(core->getPluginName()) == name && std::string(core->getPluginNamespace()) == "fna");
        delete loaded;
    }
    delete built;
}

int main(int argc, char** argv) {
    if (argc != 2) {
        std::fprintf(stderr, "usage: %s PLUGIN.so\n", argv[0]);
        return 2;
    }
    IPluginRegistry* registry = getPluginRegistry();
    CHECK(registry != nullptr);
    CHECK(registry->loadLibrary(argv[1]) != nullptr);
    CHECK(count_registered("FnaLandmarks") == 1 && count_registered("NystromAttention") == 1);

    int32_t m = 24, prefix = 1;
    float massive = 6.f;
    char const method[] = "grid";
    PluginField lf[4]{{"num_landmarks", &m, PluginFieldType::kINT32, 1}, {"num_prefix", &prefix, PluginFieldType::kINT32, 1},
                      {"massive_ratio", &massive, PluginFieldType::kFLOAT32, 1}, {"method", method, PluginFieldType::kCHAR, 5}};
    round_trip("FnaLandmarks", PluginFieldCollection{4, lf});
    float scale = 0.125f;
    int32_t iters = 9;
    PluginField nf[2]{{"scale", &scale, PluginFieldType::kFLOAT32, 1}, {"pinv_iters", &iters, PluginFieldType::kINT32, 1}};
    round_trip("NystromAttention", PluginFieldCollection{2, nf});

    // again: loadLibrary refuses (its documented answer when the creators are registered), dlopen is a no-op
    CHECK(registry->loadLibrary(argv[1]) == nullptr);
    CHECK(dlopen(argv[1], RTLD_NOW | RTLD_GLOBAL) != nullptr);
    CHECK(count_registered("FnaLandmarks") == 1 && count_registered("NystromAttention") == 1);
    return finish("test_trt_registry");
}
