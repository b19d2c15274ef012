// Call tracing for the TensorRT glue (fna_plugins.cpp), compiled in with FNA_TRACE_CALLS (CMake
// option FNA_TRACE_PLUGIN_CALLS, on in Debug builds): every plugin method prints one line to stderr
// the first time it runs with a given detail, "fna-trace: OP.method detail", so a test can see which
// build-phase methods the real builder called and with what. Without it FNA_TRACE is a no-op.
#pragma once

#include <NvInferRuntime.h>

#include <cstdio>
#include <mutex>
#include <set>
#include <string>

namespace fna {
namespace trt {

#ifdef FNA_TRACE_CALLS
inline void trace_once(char const* op, char const* method, std::string const& detail = "") noexcept {
    try {
        static std::mutex mu;
        static std::set<std::string> seen;
        std::lock_guard<std::mutex> lock(mu);
        std::string key = std::string(op) + "." + method + " " + detail;
        if (seen.insert(key).second) std::fprintf(stderr, "fna-trace: %s\n", key.c_str());
    } catch (...) {
    }
}
#define FNA_TRACE(...) trace_once(__VA_ARGS__)
#else
#define FNA_TRACE(...) ((void)0)
#endif

inline char const* type_name(nvinfer1::DataType t) {
    switch (t) {
        case nvinfer1::DataType::kFLOAT: return "fp32";
        case nvinfer1::DataType::kHALF: return "fp16";
        case nvinfer1::DataType::kBF16: return "bf16";
        case nvinfer1::DataType::kINT32: return "int32";
        case nvinfer1::DataType::kINT64: return "int64";
        default: return "other";
    }
}

// "?x3x17x64" style: '?' for a symbolic (build-time unknown) dimension, else its value.
[[maybe_unused]] inline std::string expr_str(nvinfer1::DimsExprs const& d) {
    std::string s;
    for (int32_t i = 0; i < d.nbDims; ++i) {
        if (i) s += "x";
        s += d.d[i]->isConstant() ? std::to_string(d.d[i]->getConstantValue()) : std::string("?");
    }
    return s;
}

}  // namespace trt
}  // namespace fna
