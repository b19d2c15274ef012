"""``fna-deploy plugin``: build the native library / TensorRT plugin and print where it is.

    fna-deploy plugin build [-o DIR] [--cuda-arch 86] [--cpu-only]
                            [--runtime tensorrt|tensorrt-rtx] [--tensorrt-include DIR] [--tensorrt-root PATH]
    fna-deploy plugin path [--native | --runtime tensorrt-rtx]

The default build directory is ``build/plugins`` in a source checkout, else
``~/.cache/fna-deploy/plugins``; ``$FNA_DEPLOY_PLUGIN_DIR`` overrides both (see fna_deploy.native).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from ..cli import CliError, user_errors
from .options import quiet_option, verbose_option

RUNTIME_LABELS = {"tensorrt": "TensorRT", "tensorrt-rtx": "TensorRT-RTX"}


@click.group()
def plugin() -> None:
    """Build the FNA CUDA kernels, C++ reference and TensorRT plugin (CMake), or locate them."""


@plugin.command("build")
@click.option("-o", "--output", "output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Build directory (default: build/plugins in a source checkout, else ~/.cache/fna-deploy/plugins).")
@click.option("--cuda-arch", default=None, metavar="LIST",
              help='CUDA architectures, e.g. 86 or "80,86,89,90" (default 80;86;89;90). One architecture builds fastest.')
@click.option("--cpu-only", is_flag=True, help="Build only the C++ CPU reference (no nvcc needed).")
@click.option("--runtime", type=click.Choice(["tensorrt", "tensorrt-rtx"]), default=None,
              help="The plugin library to build and require: tensorrt (libfna_trt_plugin.so, links libnvinfer) or "
                   "tensorrt-rtx (libfna_trt_rtx_plugin.so, links the tensorrt-rtx wheel's library; needs TensorRT 11.x "
                   "headers). Default: whichever the headers found allow, neither required.")
@click.option("--tensorrt-include", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder holding the TensorRT headers (NvInferRuntime.h) for --runtime (default: $TensorRT_INCLUDE_DIR "
                   "/ $TensorRT_RTX_INCLUDE_DIR, else <root>/include, else the system paths).")
@click.option("--tensorrt-root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="TensorRT (or, with --runtime tensorrt-rtx, TensorRT-RTX SDK) prefix with include/ and lib/ "
                   "(default: $TensorRT_ROOT / $TensorRT_RTX_ROOT or the usual paths).")
@click.option("-j", "--jobs", type=click.IntRange(1, 1024), default=None, help="Parallel compile jobs (default: all cores).")
@quiet_option("Print only the summary.")
@verbose_option("Show every compiler command (CMake's verbose build).")
@user_errors
def build_cmd(output: Optional[Path], cuda_arch: Optional[str], cpu_only: bool, runtime: Optional[str],
              tensorrt_include: Optional[Path], tensorrt_root: Optional[Path], jobs: Optional[int], quiet: bool,
              verbose: bool) -> None:
    """Configure and build plugins/ with CMake; print what was built and where.

    With --runtime the plugin library for that runtime must build: without its headers (or
    library) the command names the flag or variable to set and exits 2. TensorRT-RTX needs only
    headers besides its pip wheel: the TensorRT 11.x public headers fit it, e.g.
    --runtime tensorrt-rtx --tensorrt-include TensorRT/include (github.com/NVIDIA/TensorRT at v11.1).
    """
    from .. import native
    from .common import check_output_dir

    check_output_dir(None if output is None else str(output), "--output")
    if (tensorrt_include or tensorrt_root) and runtime is None:
        flag = "--tensorrt-include" if tensorrt_include else "--tensorrt-root"
        raise CliError(f"{flag} needs --runtime tensorrt or --runtime tensorrt-rtx to say which plugin the headers are for")
    if runtime and cpu_only:
        raise CliError(f"--runtime {runtime} builds a plugin with the CUDA kernels; drop --cpu-only")
    if tensorrt_include:
        native.check_tensorrt_include(tensorrt_include)
    log = None if quiet else (lambda line: click.echo(f"  {line}", err=True))
    try:
        result = native.build(output, cuda_arch=cuda_arch, cpu_only=cpu_only, tensorrt_root=tensorrt_root,
                              tensorrt_include=tensorrt_include, runtime=runtime, jobs=jobs, log=log, verbose=verbose)
    except native.NativeLibraryError as exc:
        raise CliError(str(exc)) from None  # a failed build is not a parity verdict: exit 2
    click.echo(f"build directory: {result.build_dir}")
    click.echo(f"native library:  {result.library}")
    if result.cuda:
        click.echo(f"CUDA kernels:    built for architectures {result.cuda_architectures}")
    else:
        click.echo(f"CUDA kernels:    not built ({result.cuda_reason}); the C++ CPU reference is available")
    for name in ("tensorrt", "tensorrt-rtx"):
        library, reason = result.plugin(name)
        click.echo(f"{RUNTIME_LABELS[name]} plugin: {library if library else 'not built: ' + reason}")
    if runtime:
        library, reason = result.plugin(runtime)
        if library is None:
            raise CliError(f"the {RUNTIME_LABELS[runtime]} plugin was not built: {reason}")


@plugin.command("path")
@click.option("--native", "native_lib", is_flag=True, help="Print the C API library (libfna.so) instead.")
@click.option("--runtime", type=click.Choice(["tensorrt", "tensorrt-rtx"]), default="tensorrt", show_default=True,
              help="Which plugin library: tensorrt (libfna_trt_plugin.so) or tensorrt-rtx (libfna_trt_rtx_plugin.so).")
@click.option("-o", "--output", "output", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Build directory to look in (default as for `plugin build`).")
@user_errors
def path_cmd(native_lib: bool, runtime: str, output: Optional[Path]) -> None:
    """Print the TensorRT plugin library path (for polygraphy --plugins, trtexec --staticPlugins or
    --dynamicPlugins)."""
    from .. import native

    if native_lib:
        found = native.find_library(output)
        if found is None:
            raise CliError(f"the native library is not built in {output or native.default_build_dir()}; "
                           "run `fna-deploy plugin build`")
        click.echo(str(found))
        return
    found = native.find_trt_plugin(output, runtime=runtime)
    if found is None:
        info = native.read_build_info(output)
        if info is None:
            raise CliError(f"nothing is built in {output or native.default_build_dir()}; run `fna-deploy plugin build`")
        reason = info.get("trt_rtx_reason" if runtime == "tensorrt-rtx" else "trt_reason") or "it is missing from the build directory"
        raise CliError(f"the {RUNTIME_LABELS[runtime]} plugin was not built: {reason}")
    click.echo(str(found))
