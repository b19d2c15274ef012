"""`fna-deploy plugin build/path` through click's CliRunner."""

from __future__ import annotations

from click.testing import CliRunner

from fna_deploy.cli import cli


def _run(*args: str, env: "dict[str, str] | None" = None):
    return CliRunner().invoke(cli, list(args), env=env)


def test_build_reports_what_was_built(cpu_build):
    # the session build already configured this directory: this is a quick incremental rebuild
    result = _run("plugin", "build", "--cpu-only", "-q", "-o", str(cpu_build.build_dir))
    assert result.exit_code == 0, result.output
    assert f"native library:  {cpu_build.library}" in result.output
    assert "CUDA kernels:    not built (FNA_CPU_ONLY=ON)" in result.output
    assert "TensorRT plugin: not built: the TensorRT plugin needs the CUDA kernels" in result.output


def test_path_native_and_trt(cpu_build):
    result = _run("plugin", "path", "--native", "-o", str(cpu_build.build_dir))
    assert result.exit_code == 0 and result.output.strip() == str(cpu_build.library)
    result = _run("plugin", "path", "-o", str(cpu_build.build_dir))
    assert result.exit_code == 2
    assert "error: the TensorRT plugin was not built:" in result.output
    assert "Traceback" not in result.output


def test_path_when_nothing_built(tmp_path):
    result = _run("plugin", "path", "-o", str(tmp_path / "empty"))
    assert result.exit_code == 2
    assert "run `fna-deploy plugin build`" in result.output
    result = _run("plugin", "path", "--native", env={"FNA_DEPLOY_PLUGIN_DIR": str(tmp_path / "empty")})
    assert result.exit_code == 2 and "not built" in result.output


def test_bad_cuda_arch_is_one_sentence(tmp_path):
    out = tmp_path / "b"
    result = _run("plugin", "build", "--cuda-arch", "sm_ninety", "-o", str(out))
    assert result.exit_code == 2
    assert result.output.count("\n") == 1 and "--cuda-arch must be" in result.output
    assert not out.exists()  # nothing written for bad input


def test_build_dir_that_is_a_file(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    result = _run("plugin", "build", "--cpu-only", "-o", str(target))
    assert result.exit_code == 2 and "is a file" in result.output and "Traceback" not in result.output


def test_info_reports_the_library(cpu_build):
    result = _run("info", "--json", env={"FNA_DEPLOY_PLUGIN_DIR": str(cpu_build.build_dir)})
    assert result.exit_code == 0, result.output
    assert str(cpu_build.library) in result.output


def test_help_lists_plugin():
    result = _run("--help")
    assert result.exit_code == 0 and "plugin" in result.output


def test_tensorrt_include_needs_a_runtime_and_headers(tmp_path):
    out = tmp_path / "b"
    result = _run("plugin", "build", "--tensorrt-include", str(tmp_path), "-o", str(out))
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "--tensorrt-include needs --runtime tensorrt or --runtime tensorrt-rtx" in result.output
    result = _run("plugin", "build", "--runtime", "tensorrt-rtx", "--tensorrt-include", str(tmp_path), "-o", str(out))
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert f"--tensorrt-include {str(tmp_path)!r} has no NvInferRuntime.h" in result.output
    result = _run("plugin", "build", "--runtime", "tensorrt-rtx", "--cpu-only", "-o", str(out))
    assert result.exit_code == 2 and "drop --cpu-only" in result.output
    assert not out.exists()  # nothing configured for bad input


def test_a_runtime_whose_plugin_did_not_build_exits_2_with_the_reason(tmp_path, monkeypatch):
    """--runtime makes that plugin required: CMake's one-sentence reason (which flag or variable to
    set) becomes the error. The build itself is replaced by its result here."""
    from fna_deploy import native

    reason = "no headers for TensorRT-RTX (give --tensorrt-include DIR with --runtime tensorrt-rtx, or set TensorRT_RTX_INCLUDE_DIR, ...)"
    calls = []

    def fake_build(output, **kwargs):
        calls.append(kwargs)
        return native.BuildResult(build_dir=tmp_path, library=tmp_path / "libfna.so", cuda=True, cuda_reason="",
                                  cuda_architectures="86", trt_plugin=None, trt_reason="no TensorRT headers found",
                                  trt_rtx_plugin=None, trt_rtx_reason=reason)

    monkeypatch.setattr(native, "build", fake_build)
    result = _run("plugin", "build", "--runtime", "tensorrt-rtx", "--cuda-arch", "86", "-q", "-o", str(tmp_path))
    assert result.exit_code == 2
    assert calls[0]["runtime"] == "tensorrt-rtx" and calls[0]["cuda_arch"] == "86"
    assert f"TensorRT-RTX plugin: not built: {reason}" in result.output
    assert result.output.rstrip().splitlines()[-1] == f"error: the TensorRT-RTX plugin was not built: {reason}"
