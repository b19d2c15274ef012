"""An fna engine from a real TensorRT builder, no GPU: the plugin library built against the TensorRT
11.1 headers (session fixture, sm_86 only) loads into TensorRT-RTX, registers both creators under
namespace "fna", and `fna-deploy build --runtime tensorrt-rtx` builds ViT-Tiny engines (fp32 and
fp16, dynamic batch 1:2:4) whose layers are the plugins. The traced build proves which build-phase
methods the real builder called. What does not run here: enqueue (the kernels; GPU tests do that)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner

from fna_deploy.cli import cli
from fna_deploy.trt import EngineSidecar

# the plugin build (one CUDA architecture) takes 25-80 s on two cores: slow, and it runs in CI
pytestmark = pytest.mark.slow
ARCH = 86


def _cli(*args: str):
    result = CliRunner().invoke(cli, list(args))
    return result


def test_plugin_built_for_one_arch_and_linked_to_the_wheel(rtx_plugin_build):
    info = rtx_plugin_build.info
    print(f"TensorRT-RTX plugin build (sm_{ARCH}): {info['seconds']} s")
    assert info["cuda_architectures"] == str(ARCH) and info["trace_plugin_calls"] is True
    assert Path(info["trt_rtx_library"]).name.startswith("libtensorrt_rtx.so")  # from the pip wheel, no SDK
    if shutil.which("readelf") is None or shutil.which("nm") is None:
        pytest.skip("readelf/nm (binutils) are needed to read the library's dependencies and symbols")
    needed = subprocess.run(["readelf", "-d", str(rtx_plugin_build.trt_rtx_plugin)], capture_output=True, text=True).stdout
    assert "libtensorrt_rtx.so.1" in needed
    symbols = subprocess.run(["nm", "-D", "--defined-only", str(rtx_plugin_build.trt_rtx_plugin)],
                             capture_output=True, text=True).stdout
    assert re.search(r" T getCreators$", symbols, re.M) and re.search(r" T setLoggerFinder$", symbols, re.M)


@pytest.mark.parametrize("program", ["fna_test_trt_rtx_glue", "fna_test_trt_rtx_registry"])
def test_cpp_glue_and_registry(rtx_plugin_build, program):
    """C++: the glue against TensorRT 11.1 (creators, formats, kRUNTIME round trip), and the library
    through the real registry (loadLibrary, getCreator(.., "fna"), kRUNTIME round trip, loading twice)."""
    exe = rtx_plugin_build.build_dir / "bin" / program
    args = [str(exe)] + ([str(rtx_plugin_build.trt_rtx_plugin)] if "registry" in program else [])
    proc = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert ", 0 failures" in proc.stdout
    if "registry" in program:
        for op in ("FnaLandmarks", "NystromAttention"):
            assert f"fna-trace: {op}.createPlugin kRUNTIME" in proc.stderr
            assert f"fna-trace: {op}.getFieldsToSerialize" in proc.stderr


def test_python_registry_finds_creators_in_namespace_fna(rtx_plugin_build):
    """In a fresh Python process: get_creator(name, "1", "fna") after loading the library (dlopen,
    then load_library); no creator is registered twice."""
    code = f"""
import ctypes, tensorrt_rtx as trt
lib = {str(rtx_plugin_build.trt_rtx_plugin)!r}
reg = trt.get_plugin_registry()
def count():
    return sorted(c.name for c in reg.all_creators if c.plugin_namespace == "fna")
ctypes.CDLL(lib, mode=ctypes.RTLD_GLOBAL)
print("dlopen", count(), all(reg.get_creator(n, "1", "fna") is not None for n in ("FnaLandmarks", "NystromAttention")))
handle = reg.load_library(lib)
print("load_library", handle is not None, count(), reg.get_creator("NystromAttention", "1", "fna") is not None)
print("again", reg.load_library(lib) is None, count())
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "dlopen ['FnaLandmarks', 'NystromAttention'] True",
        "load_library True ['FnaLandmarks', 'NystromAttention'] True",
        "again True ['FnaLandmarks', 'NystromAttention']",
    ]


@pytest.fixture(scope="module")
def vit_exports(tmp_path_factory):
    """ViT-Tiny (random weights), 64 px (17 tokens), FNA in blocks 6-11, 8 landmarks: --target trt fp32 and fp16."""
    out = tmp_path_factory.mktemp("vit_trt")
    paths = {}
    for precision, extra in (("fp32", []), ("fp16", ["--fp16"])):
        paths[precision] = out / f"vit_trt_{precision}.onnx"
        result = _cli("export", "timm:vit_tiny_patch16_224", "--resolution", "64", "--landmarks", "8", "--layers", "6-11",
                      "--target", "trt", "--no-check", "-q", "-o", str(paths[precision]), *extra)
        assert result.exit_code == 0, result.output
    return paths


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_fna_engine_built_by_tensorrt_rtx(rtx_plugin_build, vit_exports, precision, tmp_path):
    source = vit_exports[precision]
    nodes = [n for n in onnx.load(str(source), load_external_data=False).graph.node if n.domain == "fna"]
    fna_nodes = Counter(n.op_type for n in nodes)
    assert fna_nodes == {"FnaLandmarks": 1, "NystromAttention": 6}
    # features, plus the optional scores input when massive/artifact tokens are on (the default massive ratio)
    landmark_inputs = len([i for i in next(n for n in nodes if n.op_type == "FnaLandmarks").input if i])
    plan = tmp_path / f"vit_{precision}.plan"
    args = ["build", str(source), "-o", str(plan), "--runtime", "tensorrt-rtx", "--compute-capabilities", str(ARCH),
            "--batch", "1:2:4", "--plugin", str(rtx_plugin_build.trt_rtx_plugin)]
    result = _cli(*args, *(["--fp16"] if precision == "fp16" else []))
    assert result.exit_code == 0, result.output
    assert "plugin layers: 1 FnaLandmarks, 6 NystromAttention" in result.output

    # the plan and its sidecar: written, reopened; the builder's network held one plugin layer per fna node
    sidecar = EngineSidecar.from_json(EngineSidecar.path_for(plan).read_text())
    assert sidecar.runtime == "tensorrt-rtx" and sidecar.compute_capabilities == [ARCH] and sidecar.fp16 == (precision == "fp16")
    assert sidecar.extra["plugin_layers"] == dict(fna_nodes)
    assert sidecar.profile[sidecar.inputs[0].name]["min"][0] == 1 and sidecar.profile[sidecar.inputs[0].name]["max"][0] == 4
    assert sidecar.inputs[0].shape[0] == -1  # dynamic batch
    data = plan.read_bytes()
    assert len(data) > 1 << 20
    assert b"FnaLandmarks" in data and b"NystromAttention" in data  # the serialized plugin layers name their creators

    # the build-phase methods the real builder called (fna-trace lines of the traced plugin library)
    io = "fp16" if precision == "fp16" else "fp32"
    trace = set(line for line in result.output.splitlines() if line.startswith("fna-trace:"))
    for op in ("FnaLandmarks", "NystromAttention"):
        assert f"fna-trace: {op}.createPlugin kBUILD" in trace
        assert f"fna-trace: {op}.getOutputDataTypes " in trace
        assert f"fna-trace: {op}.configurePlugin {io}" in trace
        assert f"fna-trace: {op}.getWorkspaceSize max_batch=4" in trace
        assert f"fna-trace: {op}.getFieldsToSerialize " in trace
    # output shapes asked with a symbolic batch ("?"), the rest of the shape known
    assert "fna-trace: FnaLandmarks.getOutputShapes features=?x17x64" in trace
    assert "fna-trace: NystromAttention.getOutputShapes q=?x3x17x64" in trace
    assert f"fna-trace: FnaLandmarks.supportsFormatCombination pos=0 {io} yes" in trace  # features
    if landmark_inputs == 2:  # the token norms, kept fp32 in an fp16 export too
        assert "fna-trace: FnaLandmarks.supportsFormatCombination pos=1 fp32 yes" in trace
    assert f"fna-trace: FnaLandmarks.supportsFormatCombination pos={landmark_inputs} int32 yes" in trace
    for pos, kind in ((0, io), (1, io), (2, io), (3, "int32"), (4, io)):
        assert f"fna-trace: NystromAttention.supportsFormatCombination pos={pos} {kind} yes" in trace
    assert not [line for line in trace if line.endswith(" no")]  # the builder proposed nothing the plugins refuse


def test_cmake_without_headers_names_the_flag_and_variable(tmp_path):
    """Configure only (no compile): with no headers for TensorRT-RTX, the build info carries one
    sentence naming --tensorrt-include and TensorRT_RTX_INCLUDE_DIR; the rest still builds."""
    if shutil.which("cmake") is None or shutil.which("nvcc") is None:
        pytest.skip("needs cmake and nvcc")
    from .conftest import REPO

    env = {k: v for k, v in os.environ.items() if k not in ("TensorRT_RTX_INCLUDE_DIR", "TensorRT_RTX_ROOT")}
    out = tmp_path / "cfg"
    proc = subprocess.run(["cmake", "-S", str(REPO), "-B", str(out), "-DCMAKE_CUDA_ARCHITECTURES=86", "-DFNA_BUILD_TESTS=OFF",
                           f"-DPython3_EXECUTABLE={sys.executable}"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    info = json.loads((out / "fna_build_info.json").read_text())
    assert info["trt_rtx_plugin"] is None
    assert "--tensorrt-include DIR with --runtime tensorrt-rtx" in info["trt_rtx_reason"]
    assert "TensorRT_RTX_INCLUDE_DIR" in info["trt_rtx_reason"]
    assert "fna: no headers for TensorRT-RTX" in proc.stdout
