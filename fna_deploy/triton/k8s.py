"""Kubernetes manifests for a Triton model repository: a Deployment of the pinned Triton server
image, a Service (HTTP 8000, gRPC 8001, metrics 8002 with Prometheus scrape annotations) and a
HorizontalPodAutoscaler, or a KServe InferenceService instead. Plain dicts, rendered as YAML; the
tests validate them against the Kubernetes JSON schemas (kubernetes-validate).

The local repository is read (model names, backends, instance kinds, TensorRT plugin libraries)
to decide GPU requests and the plugin wiring; the cluster reads the repository from a volume
(a PersistentVolumeClaim) or from object storage (s3://, gs://, as:// as Triton accepts them).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .config import parse_config
from .repository import check_repository

DEFAULT_TRITON_VERSION = "25.01"  # the NGC container tag YY.MM; pinned, never "latest"
TRITON_IMAGE = "nvcr.io/nvidia/tritonserver"
MODEL_MOUNT = "/models"
PORTS = (("http", 8000), ("grpc", 8001), ("metrics", 8002))
AUTOSCALE = ("cpu", "gpu", "queue", "none")
DEFAULT_TARGETS = {"cpu": 80, "gpu": 80, "queue": 50000}  # percent, percent, microseconds of queue per request
# the metric names a metrics adapter serves for the HPA (the prometheus-adapter rules below define them)
GPU_METRIC = "DCGM_FI_DEV_GPU_UTIL"  # from NVIDIA's dcgm-exporter
QUEUE_METRIC = "triton_queue_us_per_request"  # from Triton's nv_inference_queue_duration_us / nv_inference_request_success

_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_QUANTITY = re.compile(r"[0-9]+(\.[0-9]+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?")
_URL = {
    "s3": re.compile(r"s3://([A-Za-z0-9.-]+(:\d+)?/)?[a-z0-9][a-z0-9.-]{1,62}(/[^\s]*)?"),
    "gs": re.compile(r"gs://[a-z0-9][a-z0-9._-]{1,221}(/[^\s]*)?"),
    "as": re.compile(r"as://[a-z0-9]{3,24}/[a-z0-9][a-z0-9-]{2,62}(/[^\s]*)?"),
}


def k8s_name(text: str) -> str:
    """A DNS-1035 label from any text (lower case, '-' for the rest, starting with a letter)."""
    name = re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")
    if not name or not name[0].isalpha():
        name = f"triton-{name}".rstrip("-")
    return name[:63].rstrip("-")


@dataclass
class K8sOptions:
    """What the manifests say; ``check`` refuses anything Kubernetes or Triton would refuse later."""

    name: str
    triton_version: str = DEFAULT_TRITON_VERSION
    image: Optional[str] = None  # default: TRITON_IMAGE:VERSION-py3
    namespace: Optional[str] = None
    gpus: Optional[int] = None  # per pod; None: 1 when a model runs on the GPU, else 0
    cpu: str = "2"
    memory: str = "8Gi"
    replicas: int = 1  # min replicas with an HPA
    max_replicas: int = 4
    autoscale: str = "cpu"
    target: Optional[int] = None  # DEFAULT_TARGETS[autoscale] when None
    metrics_adapter: Optional[str] = None  # e.g. prometheus-adapter: needed for gpu/queue
    repository_url: Optional[str] = None  # s3:// gs:// as://; None: the PVC
    pvc: Optional[str] = None  # default NAME-models
    credentials_secret: Optional[str] = None  # object-store credentials (env from this Secret)
    kserve: bool = False
    plugin_load: str = "backend-config"  # or ld-preload
    plugin_path: Optional[str] = None  # the plugin library inside the image (object-store repositories)

    def check(self) -> None:
        if not _LABEL.fullmatch(self.name):
            raise ValueError(f"name {self.name!r} is not a Kubernetes name: 1-63 of a-z 0-9 '-', starting with a letter")
        if self.namespace is not None and not _LABEL.fullmatch(self.namespace):
            raise ValueError(f"namespace {self.namespace!r} is not a Kubernetes name: 1-63 of a-z 0-9 '-', starting with a letter")
        if not re.fullmatch(r"\d\d\.\d\d", self.triton_version or ""):
            raise ValueError(f"Triton version {self.triton_version!r}: give the NGC release as YY.MM (e.g. {DEFAULT_TRITON_VERSION}), never latest")
        if self.image is not None:
            tag = self.image.rsplit("/", 1)[-1]
            if "@sha256:" not in self.image and (":" not in tag or tag.endswith(":latest")):
                raise ValueError(f"image {self.image!r} must name a pinned tag or digest (not latest), e.g. {TRITON_IMAGE}:{DEFAULT_TRITON_VERSION}-py3")
        for flag, value in (("CPU request", self.cpu), ("memory request", self.memory)):
            if not _QUANTITY.fullmatch(str(value)):
                raise ValueError(f"{flag} {value!r} is not a Kubernetes quantity (e.g. 2, 500m, 8Gi)")
        for flag, value, low in (("gpus", self.gpus, 0), ("replicas", self.replicas, 1), ("max replicas", self.max_replicas, 1)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ValueError(f"{flag} must be an int >= {low}, got {value!r}")
        if self.max_replicas < self.replicas:
            raise ValueError(f"max replicas {self.max_replicas} is below the replicas {self.replicas}")
        if self.autoscale not in AUTOSCALE:
            raise ValueError(f"autoscale must be one of {', '.join(AUTOSCALE)}, got {self.autoscale!r}")
        if self.autoscale in ("gpu", "queue") and not self.metrics_adapter:
            raise ValueError(f"autoscaling on {self.autoscale} needs a metrics adapter that serves the metric to the HPA; "
                             "name it (e.g. prometheus-adapter) or autoscale on cpu")
        if self.target is not None and (isinstance(self.target, bool) or not isinstance(self.target, int) or self.target < 1):
            raise ValueError(f"autoscale target must be an int >= 1, got {self.target!r}")
        if self.repository_url is not None:
            scheme = self.repository_url.split("://", 1)[0]
            if scheme not in _URL or not _URL[scheme].fullmatch(self.repository_url):
                raise ValueError(f"repository URL {self.repository_url!r}: expected s3://[host:port/]bucket/path, "
                                 "gs://bucket/path or as://account/container/path")
            if self.pvc:
                raise ValueError("give the repository as a volume (PVC) or as an object-store URL, not both")
        elif self.credentials_secret:
            raise ValueError("credentials are for an object-store repository URL; the PVC needs none")
        if self.credentials_secret is not None and not _LABEL.fullmatch(self.credentials_secret):
            raise ValueError(f"secret name {self.credentials_secret!r} is not a Kubernetes name")
        if self.pvc is not None and not _LABEL.fullmatch(self.pvc):
            raise ValueError(f"PVC name {self.pvc!r} is not a Kubernetes name")
        if self.plugin_load not in ("backend-config", "ld-preload"):
            raise ValueError(f"plugin load must be backend-config or ld-preload, got {self.plugin_load!r}")
        if self.plugin_path is not None and not self.plugin_path.startswith("/"):
            raise ValueError(f"plugin path {self.plugin_path!r} must be an absolute path inside the image")
        if self.kserve and self.autoscale in ("gpu", "queue"):
            raise ValueError("KServe scales on cpu, memory, concurrency or rps; use --autoscale cpu with --kserve, "
                             "or the Deployment with an HPA for gpu/queue")

    @property
    def image_ref(self) -> str:
        return self.image or f"{TRITON_IMAGE}:{self.triton_version}-py3"


@dataclass
class RepositoryFacts:
    """What the manifests need from the local repository."""

    models: dict[str, str]  # name -> backend
    gpu_models: list[str]
    plugins: list[str]  # plugin libraries of tensorrt models, relative to the repository root
    python_models: list[str]
    local_paths: list[str] = field(default_factory=list)  # configs that name absolute local paths


def read_repository(repository: "str | Path") -> RepositoryFacts:
    repository = Path(repository)
    names = check_repository(repository)
    platforms = {"tensorrt_plan": "tensorrt", "onnxruntime_onnx": "onnxruntime"}
    models, gpu, plugins, python, local = {}, [], [], [], []
    for name in names:
        text = (repository / name / "config.pbtxt").read_text()
        config = parse_config(text)
        backend = config.backend or platforms.get(config.platform, config.platform)
        models[name] = backend
        kinds = {group.kind for group in config.instance_group}
        # KIND_AUTO (0) and KIND_GPU (1) place instances on GPUs when there are any; tensorrt always does
        if backend == "tensorrt" or not kinds or kinds & {0, 1}:
            gpu.append(name)
        if backend == "tensorrt":
            plugins += [f"{name}/plugins/{p.name}" for p in sorted((repository / name / "plugins").glob("*.so*")) if p.is_file()]
        if backend == "python":
            python.append(name)
        if "trt_extra_plugin_lib_paths" in text:
            local.append(name)
    return RepositoryFacts(models, gpu, plugins, python, local)


def _metadata(options: K8sOptions, **extra: Any) -> dict:
    meta: dict[str, Any] = {"name": options.name, "labels": _labels(options)}
    if options.namespace:
        meta["namespace"] = options.namespace
    meta.update(extra)
    return meta


def _labels(options: K8sOptions) -> dict:
    return {"app.kubernetes.io/name": options.name, "app.kubernetes.io/component": "triton-server",
            "app.kubernetes.io/managed-by": "fna-deploy"}


SCRAPE = {"prometheus.io/scrape": "true", "prometheus.io/port": "8002", "prometheus.io/path": "/metrics"}


def _server_args(options: K8sOptions, facts: RepositoryFacts) -> tuple[list[str], list[dict]]:
    """tritonserver's arguments and environment: repository, ports, plugin libraries, credentials."""
    repo = options.repository_url or MODEL_MOUNT
    args = [f"--model-repository={repo}", "--http-port=8000", "--grpc-port=8001", "--metrics-port=8002",
            "--strict-readiness=true", "--allow-metrics=true"]
    env: list[dict] = []
    libraries = _plugin_libraries(options, facts)
    if libraries and options.plugin_load == "backend-config":
        args.append(f"--backend-config=tensorrt,plugins={';'.join(libraries)}")
    elif libraries:
        env.append({"name": "LD_PRELOAD", "value": ":".join(libraries)})
    if options.repository_url and options.repository_url.startswith("gs://") and options.credentials_secret:
        env.append({"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/var/secrets/gcs/key.json"})
    return args, env


def _plugin_libraries(options: K8sOptions, facts: RepositoryFacts) -> list[str]:
    if not facts.plugins:
        return []
    if options.plugin_path:
        return [options.plugin_path]
    if options.repository_url:
        raise ValueError("the repository's TensorRT engines need their plugin library, and Triton copies an object-store "
                         "repository to a folder it does not name: put the library into the image and pass --plugin-path, "
                         "or serve the repository from a volume (--pvc)")
    return [f"{MODEL_MOUNT}/{p}" for p in facts.plugins]


def _resources(options: K8sOptions, gpus: int) -> dict:
    requests: dict[str, Any] = {"cpu": options.cpu, "memory": options.memory}
    limits: dict[str, Any] = {"memory": options.memory}
    if gpus:
        limits["nvidia.com/gpu"] = gpus  # extended resources: the limit is the request
    return {"requests": requests, "limits": limits}


def _probe(path: str, period: int, failures: int) -> dict:
    return {"httpGet": {"path": path, "port": "http"}, "periodSeconds": period, "failureThreshold": failures, "timeoutSeconds": 5}


def deployment(options: K8sOptions, facts: RepositoryFacts, gpus: int) -> dict:
    args, env = _server_args(options, facts)
    container: dict[str, Any] = {
        "name": "tritonserver",
        "image": options.image_ref,
        "imagePullPolicy": "IfNotPresent",
        "command": ["tritonserver"],
        "args": args,
        "ports": [{"name": name, "containerPort": port, "protocol": "TCP"} for name, port in PORTS],
        "resources": _resources(options, gpus),
        # models can take minutes to load: the startup probe allows 10 minutes before liveness counts
        "startupProbe": _probe("/v2/health/ready", 10, 60),
        "readinessProbe": _probe("/v2/health/ready", 5, 3),
        "livenessProbe": _probe("/v2/health/live", 10, 3),
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
        "securityContext": {"allowPrivilegeEscalation": False},
    }
    # the python backend talks to its stubs through /dev/shm: the container default (64 MiB) is too small
    volumes: list[dict] = [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}]
    if options.repository_url is None:
        container["volumeMounts"].append({"name": "models", "mountPath": MODEL_MOUNT, "readOnly": True})
        volumes.append({"name": "models", "persistentVolumeClaim": {"claimName": options.pvc or f"{options.name}-models", "readOnly": True}})
    elif options.credentials_secret and options.repository_url.startswith("gs://"):
        container["volumeMounts"].append({"name": "gcs-credentials", "mountPath": "/var/secrets/gcs", "readOnly": True})
        volumes.append({"name": "gcs-credentials", "secret": {"secretName": options.credentials_secret}})
    elif options.credentials_secret:  # s3: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_DEFAULT_REGION; as: AZURE_STORAGE_*
        container["envFrom"] = [{"secretRef": {"name": options.credentials_secret}}]
    if env:
        container["env"] = env
    pod: dict[str, Any] = {"containers": [container], "volumes": volumes, "terminationGracePeriodSeconds": 30}
    if gpus:
        pod["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    selector = {"app.kubernetes.io/name": options.name, "app.kubernetes.io/component": "triton-server"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(options),
        "spec": {
            "replicas": options.replicas,
            "selector": {"matchLabels": selector},
            "template": {"metadata": {"labels": _labels(options), "annotations": dict(SCRAPE)}, "spec": pod},
        },
    }


def service(options: K8sOptions) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(options, annotations=dict(SCRAPE)),
        "spec": {
            "type": "ClusterIP",
            "selector": {"app.kubernetes.io/name": options.name, "app.kubernetes.io/component": "triton-server"},
            "ports": [{"name": name, "port": port, "targetPort": name, "protocol": "TCP"} for name, port in PORTS],
        },
    }


def autoscaler(options: K8sOptions) -> dict:
    target = options.target or DEFAULT_TARGETS[options.autoscale]
    if options.autoscale == "cpu":
        metric = {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}}}
    else:
        name = GPU_METRIC if options.autoscale == "gpu" else QUEUE_METRIC
        metric = {"type": "Pods", "pods": {"metric": {"name": name}, "target": {"type": "AverageValue", "averageValue": str(target)}}}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": _metadata(options),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": options.name},
            "minReplicas": options.replicas,
            "maxReplicas": options.max_replicas,
            "metrics": [metric],
            # scale up at once, down slowly: a model reload costs more than an idle replica
            "behavior": {"scaleDown": {"stabilizationWindowSeconds": 300}},
        },
    }


ADAPTER_RULES = """\
# prometheus-adapter rules: merge into the adapter's config (its "rules:" list).
rules:
- seriesQuery: 'nv_inference_queue_duration_us{namespace!="",pod!=""}'
  resources: {overrides: {namespace: {resource: namespace}, pod: {resource: pod}}}
  name: {matches: "nv_inference_queue_duration_us", as: "%(queue)s"}
  metricsQuery: 'avg(delta(nv_inference_queue_duration_us{<<.LabelMatchers>>}[1m]) / (1 + delta(nv_inference_request_success{<<.LabelMatchers>>}[1m]))) by (<<.GroupBy>>)'
- seriesQuery: '%(gpu)s{namespace!="",pod!=""}'
  resources: {overrides: {namespace: {resource: namespace}, pod: {resource: pod}}}
  name: {matches: "%(gpu)s", as: "%(gpu)s"}
  metricsQuery: 'avg(%(gpu)s{<<.LabelMatchers>>}) by (<<.GroupBy>>)'
""" % {"queue": QUEUE_METRIC, "gpu": GPU_METRIC}


def adapter_rules(options: K8sOptions) -> dict:
    """The prometheus-adapter rules that serve the HPA's gpu/queue metric, as a ConfigMap to merge."""
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": _metadata(options, name=f"{options.name}-adapter-rules"),
            "data": {"config.yaml": ADAPTER_RULES}}


def inference_service(options: K8sOptions, facts: RepositoryFacts, gpus: int) -> dict:
    """A KServe InferenceService (serving.kserve.io/v1beta1) with KServe's Triton runtime."""
    args, env = _server_args(options, facts)
    args = [a for a in args if not a.startswith(("--model-repository=", "--http-port=", "--grpc-port="))]  # KServe sets these
    storage = options.repository_url or f"pvc://{options.pvc or options.name + '-models'}/"
    model: dict[str, Any] = {
        "modelFormat": {"name": "triton"},
        "runtimeVersion": f"{options.triton_version}-py3",
        "storageUri": storage,
        "args": args,
        "resources": _resources(options, gpus),
    }
    if env:
        model["env"] = env
    predictor: dict[str, Any] = {"minReplicas": options.replicas, "maxReplicas": options.max_replicas, "model": model}
    if options.autoscale == "cpu":
        predictor.update(scaleMetric="cpu", scaleTarget=options.target or DEFAULT_TARGETS["cpu"])
    annotations = {"serving.kserve.io/enable-prometheus-scraping": "true", **SCRAPE}
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": _metadata(options, annotations=annotations), "spec": {"predictor": predictor}}


@dataclass
class Manifests:
    """The manifests by file name, and what the user must know."""

    files: dict[str, dict]
    gpus: int
    notes: list[str]


def build_manifests(repository: "str | Path", options: K8sOptions) -> Manifests:
    options.check()
    facts = read_repository(repository)
    gpus = options.gpus if options.gpus is not None else (1 if facts.gpu_models else 0)
    notes: list[str] = []
    if gpus == 0 and facts.gpu_models:
        tensorrt = [n for n in facts.gpu_models if facts.models[n] == "tensorrt"]
        if tensorrt:
            raise ValueError(f"model(s) {', '.join(tensorrt)} are TensorRT engines, which need a GPU; drop --gpus 0")
        notes.append(f"model(s) {', '.join(facts.gpu_models)} ask for GPU instances but the pods get no GPU: "
                     "rewrite them with fna-deploy triton --cpu")
    if facts.python_models:
        notes.append(f"python-backend model(s) {', '.join(facts.python_models)} import onnxruntime (and Pillow for "
                     "image preprocessing), which the stock Triton image lacks: build an image FROM "
                     f"{TRITON_IMAGE}:{options.triton_version}-py3 with 'pip install onnxruntime pillow' and pass --image")
    if facts.local_paths:
        notes.append(f"model(s) {', '.join(facts.local_paths)} name a plugin library by a path of this machine "
                     "(trt_extra_plugin_lib_paths); rewrite them for the container's path")
    if options.repository_url is None:
        claim = options.pvc or f"{options.name}-models"
        notes.append(f"copy the repository to the root of the PersistentVolumeClaim {claim!r} (mounted read-only at {MODEL_MOUNT})")
    files: dict[str, dict] = {}
    if options.kserve:
        files["inferenceservice.yaml"] = inference_service(options, facts, gpus)
        if options.credentials_secret:
            notes.append(f"KServe's storage initializer reads credentials through a ServiceAccount that lists the secret "
                         f"{options.credentials_secret!r}: create one and set spec.predictor.serviceAccountName")
    else:
        files["deployment.yaml"] = deployment(options, facts, gpus)
        files["service.yaml"] = service(options)
        if options.autoscale != "none":
            files["hpa.yaml"] = autoscaler(options)
        if options.autoscale in ("gpu", "queue"):
            if options.metrics_adapter == "prometheus-adapter":
                files["adapter-rules.yaml"] = adapter_rules(options)
            else:
                metric = GPU_METRIC if options.autoscale == "gpu" else QUEUE_METRIC
                notes.append(f"the HPA reads the pods metric {metric!r}: {options.metrics_adapter} must serve it "
                             "(adapter-rules.yaml shows the prometheus-adapter rule with --metrics-adapter prometheus-adapter)")
        if options.autoscale == "gpu":
            notes.append("GPU utilisation comes from NVIDIA's dcgm-exporter, scraped by Prometheus")
    return Manifests(files, gpus, notes)


def render_yaml(manifest: dict) -> str:
    """YAML with multi-line strings (the adapter rules) as readable literal blocks."""
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: Any, value: str) -> Any:
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    return yaml.dump(manifest, Dumper=Dumper, sort_keys=False, default_flow_style=False, width=1000)


K8S_MARKER = ".fna-deploy-k8s"  # in every manifests folder fna-deploy writes; --force replaces only those


def write_manifests(manifests: Manifests, folder: "str | Path", *, force: bool = False) -> list[Path]:
    """Write the manifests into ``folder`` all at once (staged beside it, then renamed): an
    existing folder is replaced only with ``force`` and only when fna-deploy wrote it."""
    import json

    from ..utils import replace_folder_atomic

    folder = Path(folder)

    def check(folder: Path) -> None:  # before the work, and again under the writer lock at the swap
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir() or folder.is_symlink():
                raise NotADirectoryError(20, "the manifests' output is not a folder", str(folder))
            if any(folder.iterdir()):
                if not force:
                    raise FileExistsError(17, "the manifests folder is not empty (use --force to replace it)", str(folder))
                if not (folder / K8S_MARKER).is_file():
                    raise ValueError(f"{str(folder)!r} was not written by fna-deploy k8s (no {K8S_MARKER} in it), "
                                     "so --force does not replace it; choose another -o")

    check(folder)
    if not folder.parent.is_dir():
        raise FileNotFoundError(2, "the manifests folder's parent does not exist", str(folder.parent))

    def populate(staging: Path) -> None:
        for name, manifest in manifests.files.items():
            (staging / name).write_text(render_yaml(manifest))
        (staging / K8S_MARKER).write_text(json.dumps({"written_by": "fna-deploy", "files": sorted(manifests.files)}) + "\n")

    replace_folder_atomic(folder, populate, check=check)
    return [folder / name for name in manifests.files]
