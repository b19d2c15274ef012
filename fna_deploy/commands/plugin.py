"""``fna-deploy plugin``: build the native library / TensorRT plugin and print where it is.

    fna-deploy plugin build [-o DIR] [--cuda-arch 90] [--cpu-only] [--tensorrt-root PATH]
    fna-deploy plugin path [--native]

The default build directory is ``build/plugins`` in a source checkout, else
``~/.cache/fna-deploy/plugins``; ``$FNA_DEPLOY_PLUGIN_DIR`` overrides both (see fna_deploy.native).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from ..cli import CliError, user_errors
from .options import quiet_option, verbose_option


@click.group()
def plugin() -> None:
    """Build the FNA CUDA kernels, C++ reference and TensorRT plugin (CMake), or locate them."""


@plugin.command("build")
@click.option("-o", "--output", "output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Build directory (default: build/plugins in a source checkout, else ~/.cache/fna-deploy/plugins).")
@click.option("--cuda-arch", default=None, metavar="LIST",
              help='CUDA architectures, e.g. 90 or "80,86,89,90" (default 80;86;89;90).')
@click.option("--cpu-only", is_flag=True, help="Build only the C++ CPU reference (no nvcc needed).")
@click.option("--tensorrt-root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="TensorRT prefix with include/ and lib/ (default: $TensorRT_ROOT or the usual paths).")
@click.option("-j", "--jobs", type=click.IntRange(1, 1024), default=None, help="Parallel compile jobs (default: all cores).")
@quiet_option("Print only the summary.")
@verbose_option("Show every compiler command (CMake's verbose build).")
@user_errors
def build_cmd(output: Optional[Path], cuda_arch: Optional[str], cpu_only: bool, tensorrt_root: Optional[Path],
              jobs: Optional[int], quiet: bool, verbose: bool) -> None:
    """Configure and build plugins/ with CMake; print what was built and where."""
    from .. import native
    from .common import check_output_dir

    check_output_dir(None if output is None else str(output), "--output")
    log = None if quiet else (lambda line: click.echo(f"  {line}", err=True))
    try:
        result = native.build(output, cuda_arch=cuda_arch, cpu_only=cpu_only, tensorrt_root=tensorrt_root,
                              jobs=jobs, log=log, verbose=verbose)
    except native.NativeLibraryError as exc:
        raise CliError(str(exc)) from None  # a failed build is not a parity verdict: exit 2
    click.echo(f"build directory: {result.build_dir}")
    click.echo(f"native library:  {result.library}")
    if result.cuda:
        click.echo(f"CUDA kernels:    built for architectures {result.cuda_architectures}")
    else:
        click.echo(f"CUDA kernels:    not built ({result.cuda_reason}); the C++ CPU reference is available")
    if result.trt_plugin:
        click.echo(f"TensorRT plugin: {result.trt_plugin}")
    else:
        click.echo(f"TensorRT plugin: not built: {result.trt_reason}")


@plugin.command("path")
@click.option("--native", "native_lib", is_flag=True, help="Print the C API library (libfna.so) instead.")
@click.option("-o", "--output", "output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Build directory to look in (default as for `plugin build`).")
@user_errors
def path_cmd(native_lib: bool, output: Optional[Path]) -> None:
    """Print the TensorRT plugin library path (for polygraphy --plugins, trtexec --staticPlugins)."""
    from .. import native

    if native_lib:
        found = native.find_library(output)
        if found is None:
            raise CliError(f"the native library is not built in {output or native.default_build_dir()}; "
                           "run `fna-deploy plugin build`")
        click.echo(str(found))
        return
    found = native.find_trt_plugin(output)
    if found is None:
        info = native.read_build_info(output)
        if info is None:
            raise CliError(f"nothing is built in {output or native.default_build_dir()}; run `fna-deploy plugin build`")
        reason = info.get("trt_reason") or "it is missing from the build directory"
        raise CliError(f"the TensorRT plugin was not built: {reason}")
    click.echo(str(found))
