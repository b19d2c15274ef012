"""``fna-deploy triton``: a Triton model repository for an engine or a portable ONNX export."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import click

from ..cli import CliError, user_errors
from .options import MAX_MODEL_VERSION, count, deprecated, device_option, quiet_option, verbose_option


def _preferred(value: Optional[str]) -> list[int]:
    if not value:
        return []
    try:
        sizes = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise CliError(f"--preferred-batch {value!r}: expected comma-separated batch sizes such as 4,8") from None
    if not sizes:
        raise CliError(f"--preferred-batch {value!r}: expected comma-separated batch sizes such as 4,8")
    return sizes


def _instance_device(device: str) -> str:
    """Where the instances run: --device cpu/cuda as given (the server may be another machine);
    auto: cuda when a GPU is here, else cpu (the repository fits the machine it is written on)."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _default_backend(artifact: Path, device: str) -> str:
    if artifact.suffix in (".plan", ".engine"):
        return "tensorrt"
    if artifact.suffix == ".onnx":  # onnxruntime for a GPU server; python (bundled with fna-deploy serve) on CPU
        return "onnxruntime" if device == "cuda" else "python"
    raise CliError(f"cannot tell the backend from {artifact.name!r}: give --backend (a .plan for tensorrt, a portable .onnx otherwise)")


@click.command()
@click.argument("artifact", type=click.Path(dir_okay=False))
@click.option("-o", "--output", "repository", required=True, type=click.Path(file_okay=False), help="Model repository folder (created if missing; other models in it are kept).")
@click.option("--name", help="Model name in the repository (default: the artifact's file name).")
@click.option("--version", "model_version", type=count(1, MAX_MODEL_VERSION), default=1, show_default=True, help="Model version folder.")
@click.option("--backend", type=click.Choice(["tensorrt", "onnxruntime", "python"]), default=None,
              help="tensorrt: a .plan engine; onnxruntime: a portable .onnx (optional TensorRT accelerator); python: a portable .onnx run by ONNX Runtime in a Python-backend model.py (CPU; the backend 'fna-deploy serve' bundles). Default: tensorrt for a .plan; for a .onnx onnxruntime with --device cuda, python with --device cpu.")
@click.option("--max-batch-size", type=count(0, 2**31 - 1), default=None, help="Triton max_batch_size (default: the engine profile's max batch, or 8 for ONNX; 0 for a static batch).")
@click.option("--instances", type=count(1, 1024), default=1, show_default=True, help="Model instances (instance_group count).")
@click.option("--plugin", type=click.Path(dir_okay=False), help="fna plugin library to copy into the repository (tensorrt; onnxruntime adds the TensorRT accelerator with it).")
@click.option("--dynamic-batching/--no-dynamic-batching", default=None, help="Triton's dynamic batcher (default: on when the model batches).")
@click.option("--preferred-batch", metavar="4,8", help="Preferred batch sizes for the dynamic batcher.")
@click.option("--queue-delay-us", type=count(0, 3_600_000_000), default=0, show_default=True, help="Max queue delay of the dynamic batcher, microseconds.")
@device_option("Where the instances run: cuda (KIND_GPU) or cpu (KIND_CPU); auto: cuda when a GPU is here, else cpu. An engine always runs on a GPU.")
@click.option("--cpu", is_flag=True, hidden=True)
@click.option("--image-ensemble", "images", is_flag=True, help="Also take encoded images: a python-backend preprocessing model NAME_preprocess (the resize, crop and normalisation recorded at export) and an ensemble NAME_images (JPEG/PNG/WebP bytes in, the model's outputs out).")
@click.option("--force", is_flag=True, help="Replace a model of the same name in the repository.")
@quiet_option("Print only the model folder.")
@verbose_option("Also print the config.pbtxt written.")
@user_errors
def triton(artifact: str, repository: str, name: Optional[str], model_version: int, backend: Optional[str],
           max_batch_size: Optional[int], instances: int, plugin: Optional[str], dynamic_batching: Optional[bool],
           preferred_batch: Optional[str], queue_delay_us: int, device: str, cpu: bool, images: bool, force: bool, quiet: bool,
           verbose: bool) -> None:
    """Write a Triton Inference Server model repository for ARTIFACT.

    ARTIFACT is an engine (.plan, from fna-deploy build; tensors and batch profile read from its
    ENGINE.plan.json sidecar) or a portable ONNX export (fna-deploy export --target portable).
    The config.pbtxt is parsed back with Triton's own ModelConfig protobuf before anything is
    written; the model folder appears all at once or not at all.

    \b
    Examples:
      fna-deploy triton vit_fna.onnx -o repo --backend python
      fna-deploy triton vit_fna.plan -o repo --plugin libfna_trt_plugin.so --preferred-batch 4,8
      fna-deploy triton vit_fna.onnx -o repo --image-ensemble
    """
    from rich.console import Console
    from rich.table import Table

    from ..triton import RepositoryOptions, default_name, write_repository

    path = Path(artifact)
    if cpu:
        deprecated("--cpu", "--device cpu")
        device = "cpu"
    where = _instance_device(device)
    backend = backend or _default_backend(path, where)
    # auto keeps each backend's own kind where this machine does not decide it: an engine runs on a
    # GPU, the python backend's model.py on CPU; onnxruntime follows this machine
    gpu = None if device == "auto" and backend != "onnxruntime" else where == "cuda"
    options = RepositoryOptions(
        name=name if name is not None else default_name(path),
        backend=backend,
        version=model_version,
        max_batch_size=max_batch_size,
        instances=instances,
        dynamic_batching=dynamic_batching,
        preferred_batch_sizes=_preferred(preferred_batch),
        queue_delay_us=queue_delay_us,
        plugin=plugin,
        gpu=gpu,
    )
    images_report = None
    try:
        if images:  # everything the image models need is checked before the first folder is written
            from ..triton.ensemble import artifact_recipe, check_targets

            if not path.is_file():
                raise FileNotFoundError(2, "artifact not found", str(path))
            recipe = artifact_recipe(path)
            if Path(repository).is_dir():
                check_targets(repository, options.name, force=force)
        model_existed = (Path(repository) / options.name).exists()
        report = write_repository(path, repository, options, force=force)
        if images:
            from ..triton.ensemble import write_image_models

            try:
                images_report = write_image_models(repository, options.name, recipe, force=force)
            except BaseException:
                if not model_existed:  # all or nothing: the model written for this call goes too
                    import shutil

                    shutil.rmtree(report.model_dir, ignore_errors=True)
                raise
    except FileExistsError as exc:
        raise CliError(f"{exc.filename} already exists; pass --force to replace it") from None
    except NotADirectoryError as exc:
        raise CliError(f"{exc.filename} is not a folder; give a model repository folder with -o") from None
    console = Console()
    if quiet:
        click.echo(report.model_dir)
        return
    table = Table(title="fna-deploy triton", show_header=False)
    table.add_column("item", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("model", f"{report.name} (version {report.version}, {report.backend} backend)")
    table.add_row("folder", report.model_dir)
    table.add_row("max_batch_size", str(report.max_batch_size))
    for label, tensors in (("input", report.inputs), ("output", report.outputs)):
        for t in tensors:
            table.add_row(label, f"{t['name']} {t['dtype']} {t['shape']}")
    if report.plugin:
        table.add_row("plugin", report.plugin)
    if images_report is not None:
        recipe = images_report.recipe
        resize = recipe["resize"]
        steps = [f"resize {resize['mode']} {resize['size']} ({recipe['interpolation']})", f"crop {recipe['crop']}" if recipe["crop"] else "",
                 f"mean {recipe['mean']} std {recipe['std']} (from {recipe['source']})"]
        table.add_row("images in", f"{images_report.ensemble}: {images_report.input} (JPEG/PNG/WebP bytes) -> {images_report.preprocess} -> {report.name}")
        table.add_row("preprocessing", ", ".join(s for s in steps if s))
    table.add_row("files", "\n".join(report.files))
    console.print(table)
    if verbose:
        console.print(Path(report.config_path).read_text(), highlight=False, markup=False)
    for note in report.notes:
        console.print(f"note: {note}")
    if backend == "python":
        console.print("serve it (CPU is enough):")
        console.print(f"  fna-deploy serve {report.repository} --model {report.name}", soft_wrap=True)
    else:
        console.print("serve it (Triton container or a tritonserver with the tensorrt/onnxruntime backends):")
        console.print(f"  {report.server_command}", soft_wrap=True)
    if images_report is not None:
        console.print("send it an image (after the server is up):")
        console.print(f"  fna-deploy infer 127.0.0.1:8000 {images_report.ensemble} --image photo.png", soft_wrap=True)
    console.print("measure it (concurrency sweep, after the server is up):")
    console.print(f"  {report.perf_analyzer_command}", soft_wrap=True)
