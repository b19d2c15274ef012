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
