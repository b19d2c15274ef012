"""``fna-deploy k8s``: Kubernetes manifests that run a Triton model repository on a cluster."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

from ..cli import CliError, user_errors
from ..triton.k8s import AUTOSCALE, DEFAULT_TRITON_VERSION
from .common import check_output_dir
from .options import quiet_option, report_option, verbose_option


@click.command()
@click.argument("repository", type=click.Path(file_okay=False))
@click.option("-o", "--output", "output", required=True, type=click.Path(file_okay=False), help="Folder for the manifests (one YAML file per object).")
@click.option("--name", help="Name of the Deployment/Service/HPA (default: from the repository folder's name).")
@click.option("--namespace", help="Kubernetes namespace (default: none, kubectl's current one).")
@click.option("--triton-version", default=DEFAULT_TRITON_VERSION, show_default=True, metavar="YY.MM",
              help="Triton server release: the image nvcr.io/nvidia/tritonserver:YY.MM-py3 (pinned, never latest).")
@click.option("--image", help="Full server image instead (a pinned tag or digest), e.g. one with onnxruntime and Pillow for python models.")
@click.option("--gpus", type=click.IntRange(min=0), default=None, help="GPUs per pod (nvidia.com/gpu). Default: 1 when a model runs on the GPU, else 0 (CPU).")
@click.option("--cpu-request", "cpu_request", default="2", show_default=True, help="CPU request per pod (a Kubernetes quantity).")
@click.option("--memory-request", "memory", default="8Gi", show_default=True, help="Memory request and limit per pod.")
@click.option("--replicas", type=click.IntRange(min=1), default=1, show_default=True, help="Replicas (the HPA's minimum when autoscaling).")
@click.option("--max-replicas", type=click.IntRange(min=1), default=4, show_default=True, help="The HPA's maximum replicas.")
@click.option("--autoscale", type=click.Choice(AUTOSCALE), default="cpu", show_default=True,
              help="What the HPA watches: cpu utilisation, gpu utilisation (dcgm-exporter) or Triton's queue time per request (both need --metrics-adapter), or none.")
@click.option("--autoscale-target", "target", type=click.IntRange(min=1), default=None, help="Autoscale target: percent for cpu/gpu (default 80), microseconds of queue per request for queue (default 50000).")
@click.option("--metrics-adapter", metavar="NAME", help="The custom-metrics adapter serving gpu/queue metrics to the HPA (prometheus-adapter: its rules are written too).")
@click.option("--repository-url", metavar="URL", help="Read the repository from object storage (s3://, gs://, as://) instead of a volume.")
@click.option("--pvc", metavar="CLAIM", help="PersistentVolumeClaim holding the repository (default: NAME-models), mounted read-only at /models.")
@click.option("--credentials-secret", metavar="SECRET", help="Secret with the object store's credentials (s3/as: environment variables; gs: key.json).")
@click.option("--kserve", is_flag=True, help="Write a KServe InferenceService (Triton runtime) instead of Deployment, Service and HPA.")
@click.option("--plugin-load", type=click.Choice(["backend-config", "ld-preload"]), default="backend-config", show_default=True,
              help="How tritonserver loads the fna TensorRT plugin library of tensorrt models.")
@click.option("--plugin-path", metavar="PATH", help="The plugin library's path inside the image (needed with --repository-url and tensorrt models).")
@click.option("--force", is_flag=True, help="Replace a manifests folder fna-deploy k8s wrote before.")
@report_option("Write the manifests' summary (files, notes) as JSON to FILE.")
@quiet_option("Print only the manifest files.")
@verbose_option("Also print the manifests' YAML.")
@user_errors
def k8s(repository: str, output: str, name: Optional[str], namespace: Optional[str], triton_version: str, image: Optional[str],
        gpus: Optional[int], cpu_request: str, memory: str, replicas: int, max_replicas: int, autoscale: str, target: Optional[int],
        metrics_adapter: Optional[str], repository_url: Optional[str], pvc: Optional[str], credentials_secret: Optional[str],
        kserve: bool, plugin_load: str, plugin_path: Optional[str], force: bool, report_path: Optional[str], quiet: bool,
        verbose: bool) -> None:
    """Write Kubernetes manifests that run the Triton model REPOSITORY on a cluster.

    REPOSITORY is a local repository from fna-deploy triton: its models decide the GPU requests
    and the TensorRT plugin wiring. The cluster reads it from a PersistentVolumeClaim (default)
    or from object storage (--repository-url). Written: deployment.yaml (the pinned Triton image,
    probes on /v2/health/*), service.yaml (HTTP 8000, gRPC 8001, metrics 8002 with Prometheus
    annotations), hpa.yaml; or inferenceservice.yaml with --kserve. Nothing is applied: review
    the files, then kubectl apply -f OUTPUT.

    \b
    Examples:
      fna-deploy k8s repo -o k8s/
      fna-deploy k8s repo -o k8s/ --repository-url s3://bucket/repo --credentials-secret aws-creds
      fna-deploy k8s repo -o k8s/ --autoscale queue --metrics-adapter prometheus-adapter
    """
    from rich.console import Console

    from ..triton.k8s import K8sOptions, build_manifests, k8s_name, write_manifests

    if not Path(repository).is_dir():
        raise CliError(f"REPOSITORY {repository!r} is not a folder; give a model repository written by fna-deploy triton")
    check_output_dir(output, "-o")
    if report_path:
        from ..export.graph import check_writable

        check_writable(Path(report_path))
    options = K8sOptions(
        name=name if name is not None else k8s_name(Path(repository).resolve().name), triton_version=triton_version, image=image,
        namespace=namespace, gpus=gpus, cpu=cpu_request, memory=memory, replicas=replicas, max_replicas=max_replicas,
        autoscale=autoscale, target=target, metrics_adapter=metrics_adapter, repository_url=repository_url, pvc=pvc,
        credentials_secret=credentials_secret, kserve=kserve, plugin_load=plugin_load, plugin_path=plugin_path,
    )
    manifests = build_manifests(repository, options)
    try:
        paths = write_manifests(manifests, output, force=force)
    except FileExistsError as exc:
        raise CliError(f"{exc.filename} is not empty; pass --force to replace manifests fna-deploy wrote there") from None
    summary = {"repository": str(Path(repository).resolve()), "output": str(Path(output).resolve()), "name": options.name,
               "image": options.image_ref, "gpus_per_pod": manifests.gpus, "kserve": kserve,
               "files": [str(p) for p in paths], "notes": manifests.notes}
    if report_path:
        from ..utils import write_text_atomic

        write_text_atomic(report_path, json.dumps(summary, indent=2) + "\n")
    if quiet:
        for path in paths:
            click.echo(str(path))
        return
    from rich.table import Table

    table = Table(title="fna-deploy k8s", show_header=False)
    table.add_column("item", style="bold")
    table.add_column("value", overflow="fold")
    table.add_row("name", options.name + (f" (namespace {namespace})" if namespace else ""))
    table.add_row("image", options.image_ref)
    table.add_row("per pod", f"{manifests.gpus} GPU(s), {cpu_request} CPU, {memory}" if manifests.gpus else f"CPU only: {cpu_request} CPU, {memory}")
    table.add_row("repository", repository_url or f"PVC {pvc or options.name + '-models'} at /models")
    table.add_row("files", "\n".join(str(p) for p in paths))
    console = Console()
    console.print(table)
    if verbose:
        for path in paths:
            console.print(f"--- {path.name}\n{path.read_text()}", highlight=False, markup=False)
    for note in manifests.notes:
        console.print(f"note: {note}", highlight=False)
    console.print(f"apply (not run here): kubectl apply -f {output}", highlight=False, soft_wrap=True)
