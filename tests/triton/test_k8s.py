"""fna-deploy k8s: manifests for a repository, validated against the Kubernetes JSON schemas
(kubernetes-validate, strict: unknown fields fail) of two Kubernetes versions. No cluster runs here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient (pip install 'fna-deploy[triton]')")
kv = pytest.importorskip("kubernetes_validate", reason="needs kubernetes-validate (the dev extra)")

from fna_deploy.cli import cli  # noqa: E402
from fna_deploy.triton import RepositoryOptions, write_repository  # noqa: E402
from fna_deploy.triton.k8s import K8sOptions, build_manifests  # noqa: E402

from .conftest import fake_engine, fake_plugin, tiny_onnx  # noqa: E402

VERSIONS = ("1.29", "1.35")  # an old supported release and a current one


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


def validate(manifest: dict) -> None:
    for version in VERSIONS:
        kv.validate(manifest, version, strict=True)


def load(folder: Path) -> dict[str, dict]:
    return {p.name: yaml.safe_load(p.read_text()) for p in sorted(folder.glob("*.yaml"))}


@pytest.fixture
def repo(tmp_path) -> Path:
    """A python-backend model (CPU) and a TensorRT engine with its fna plugin library (GPU)."""
    write_repository(tiny_onnx(tmp_path / "vit.onnx"), tmp_path / "repo", RepositoryOptions(name="vit", backend="python"))
    plugin = fake_plugin(tmp_path / "libfna_plugins.so")
    write_repository(fake_engine(tmp_path), tmp_path / "repo", RepositoryOptions(name="trt", backend="tensorrt", plugin=str(plugin)))
    return tmp_path / "repo"


@pytest.fixture
def cpu_repo(tmp_path) -> Path:
    write_repository(tiny_onnx(tmp_path / "vit.onnx"), tmp_path / "cpu-repo", RepositoryOptions(name="vit", backend="python"))
    return tmp_path / "cpu-repo"


def test_the_validator_catches_a_wrong_manifest(repo):
    """The schema check is not vacuous: a misspelled field and a wrong type both fail."""
    manifest = build_manifests(repo, K8sOptions(name="fna")).files["deployment.yaml"]
    validate(manifest)
    manifest["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    with pytest.raises(kv.ValidationError):
        kv.validate(manifest, VERSIONS[0], strict=True)
    service = build_manifests(repo, K8sOptions(name="fna")).files["service.yaml"]
    service["spec"]["ports"][0]["port"] = "eight thousand"
    with pytest.raises(kv.ValidationError):
        kv.validate(service, VERSIONS[1], strict=True)


def test_gpu_deployment_service_hpa_from_a_volume(repo, tmp_path):
    result = invoke("k8s", repo, "-o", tmp_path / "k8s", "--name", "vit-fna", "--namespace", "serving",
                    "--report", tmp_path / "k8s.json")
    assert result.exit_code == 0, result.output
    files = load(tmp_path / "k8s")
    assert sorted(files) == ["deployment.yaml", "hpa.yaml", "service.yaml"]
    for manifest in files.values():
        validate(manifest)
        assert manifest["metadata"]["namespace"] == "serving"
    pod = files["deployment.yaml"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["image"] == "nvcr.io/nvidia/tritonserver:25.01-py3"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1  # the engine needs a GPU
    assert "--model-repository=/models" in container["args"]
    assert "--backend-config=tensorrt,plugins=/models/trt/plugins/libfna_plugins.so" in container["args"]
    probes = {k: container[k]["httpGet"]["path"] for k in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes == {"startupProbe": "/v2/health/ready", "readinessProbe": "/v2/health/ready", "livenessProbe": "/v2/health/live"}
    assert {v["name"]: v for v in pod["volumes"]}["models"]["persistentVolumeClaim"]["claimName"] == "vit-fna-models"
    service = files["service.yaml"]
    assert [(p["name"], p["port"]) for p in service["spec"]["ports"]] == [("http", 8000), ("grpc", 8001), ("metrics", 8002)]
    assert service["metadata"]["annotations"]["prometheus.io/scrape"] == "true"
    assert service["metadata"]["annotations"]["prometheus.io/port"] == "8002"
    assert service["spec"]["selector"].items() <= files["deployment.yaml"]["spec"]["template"]["metadata"]["labels"].items()
    hpa = files["hpa.yaml"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == "vit-fna" and hpa["metrics"][0]["resource"]["name"] == "cpu"
    report = json.loads((tmp_path / "k8s.json").read_text())
    assert report["gpus_per_pod"] == 1 and any("onnxruntime" in n for n in report["notes"])  # the python model's needs


def test_cpu_only_repository_and_object_store(cpu_repo, tmp_path):
    result = invoke("k8s", cpu_repo, "-o", tmp_path / "s3", "--repository-url", "s3://my-bucket/models",
                    "--credentials-secret", "aws-creds", "--triton-version", "24.08", "--autoscale", "none")
    assert result.exit_code == 0, result.output
    files = load(tmp_path / "s3")
    assert sorted(files) == ["deployment.yaml", "service.yaml"]
    for manifest in files.values():
        validate(manifest)
    pod = files["deployment.yaml"]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert "nvidia.com/gpu" not in container["resources"]["limits"] and "tolerations" not in pod  # the model runs on CPU
    assert container["image"].endswith(":24.08-py3") and "--model-repository=s3://my-bucket/models" in container["args"]
    assert container["envFrom"] == [{"secretRef": {"name": "aws-creds"}}]
    assert "models" not in {v["name"] for v in pod["volumes"]}

    result = invoke("k8s", cpu_repo, "-o", tmp_path / "gs", "--repository-url", "gs://bucket/repo", "--credentials-secret", "gcp-key")
    assert result.exit_code == 0, result.output
    container = load(tmp_path / "gs")["deployment.yaml"]["spec"]["template"]["spec"]["containers"][0]
    validate(load(tmp_path / "gs")["deployment.yaml"])
    assert {"name": "GOOGLE_APPLICATION_CREDENTIALS", "value": "/var/secrets/gcs/key.json"} in container["env"]


def test_object_store_with_engines_needs_the_plugin_in_the_image(repo, tmp_path):
    result = invoke("k8s", repo, "-o", tmp_path / "a", "--repository-url", "as://account/container/repo")
    assert result.exit_code == 2 and "--plugin-path" in result.output and not (tmp_path / "a").exists()
    result = invoke("k8s", repo, "-o", tmp_path / "a", "--repository-url", "as://account/container/repo",
                    "--plugin-path", "/opt/fna/libfna_plugins.so", "--plugin-load", "ld-preload")
    assert result.exit_code == 0, result.output
    deployment = load(tmp_path / "a")["deployment.yaml"]
    validate(deployment)
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "LD_PRELOAD", "value": "/opt/fna/libfna_plugins.so"} in container["env"]
    assert not any(a.startswith("--backend-config=tensorrt") for a in container["args"])


@pytest.mark.parametrize("kind, metric", [("queue", "triton_queue_us_per_request"), ("gpu", "DCGM_FI_DEV_GPU_UTIL")])
def test_custom_metric_autoscaling_with_an_adapter(repo, tmp_path, kind, metric):
    result = invoke("k8s", repo, "-o", tmp_path / kind, "--autoscale", kind)
    assert result.exit_code == 2 and "metrics adapter" in result.output
    result = invoke("k8s", repo, "-o", tmp_path / kind, "--autoscale", kind, "--metrics-adapter", "prometheus-adapter", "--autoscale-target", "70")
    assert result.exit_code == 0, result.output
    files = load(tmp_path / kind)
    for manifest in files.values():
        validate(manifest)
    pods = files["hpa.yaml"]["spec"]["metrics"][0]["pods"]
    assert pods["metric"]["name"] == metric and pods["target"]["averageValue"] == "70"
    rules = yaml.safe_load(files["adapter-rules.yaml"]["data"]["config.yaml"])["rules"]
    assert metric in {r["name"]["as"] for r in rules}


def test_kserve_inference_service(repo, tmp_path):
    result = invoke("k8s", repo, "-o", tmp_path / "ks", "--kserve", "--max-replicas", "3")
    assert result.exit_code == 0, result.output
    files = load(tmp_path / "ks")
    assert sorted(files) == ["inferenceservice.yaml"]
    isvc = files["inferenceservice.yaml"]
    assert isvc["apiVersion"] == "serving.kserve.io/v1beta1" and isvc["kind"] == "InferenceService"
    predictor = isvc["spec"]["predictor"]
    model = predictor["model"]
    assert model["modelFormat"] == {"name": "triton"} and model["storageUri"] == "pvc://repo-models/"
    assert model["runtimeVersion"] == "25.01-py3" and predictor["maxReplicas"] == 3
    # a CRD has no schema in kubernetes-validate: validate its Kubernetes parts (the object's
    # metadata, the model's container fields) against the core schemas
    container = {k: v for k, v in model.items() if k not in ("modelFormat", "runtimeVersion", "storageUri")}
    for version in VERSIONS:
        kv.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": isvc["metadata"]}, version, strict=True)
        kv.validate({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"},
                     "spec": {"containers": [{"name": "kserve-container", **container}]}}, version, strict=True)
    assert model["resources"]["limits"]["nvidia.com/gpu"] == 1
    result = invoke("k8s", repo, "-o", tmp_path / "ks3", "--kserve", "--repository-url", "s3://bucket/repo",
                    "--credentials-secret", "aws-creds", "--plugin-path", "/opt/fna/libfna_plugins.so", "--report", tmp_path / "ks3.json")
    assert result.exit_code == 0, result.output
    model = load(tmp_path / "ks3")["inferenceservice.yaml"]["spec"]["predictor"]["model"]
    assert model["storageUri"] == "s3://bucket/repo" and "--backend-config=tensorrt,plugins=/opt/fna/libfna_plugins.so" in model["args"]
    assert any("ServiceAccount" in n for n in json.loads((tmp_path / "ks3.json").read_text())["notes"])


@pytest.mark.parametrize("args, message", [
    (["--triton-version", "latest"], "never latest"),
    (["--image", "nvcr.io/nvidia/tritonserver:latest"], "pinned tag"),
    (["--image", "nvcr.io/nvidia/tritonserver"], "pinned tag"),
    (["--repository-url", "http://bucket/x"], "expected s3://"),
    (["--repository-url", "s3://bucket/x", "--pvc", "models"], "not both"),
    (["--credentials-secret", "creds"], "object-store"),
    (["--name", "Bad_Name"], "not a Kubernetes name"),
    (["--memory-request", "8 GB"], "not a Kubernetes quantity"),
    (["--replicas", "5", "--max-replicas", "2"], "below the replicas"),
    (["--gpus", "0"], "need a GPU"),
    (["--kserve", "--autoscale", "queue", "--metrics-adapter", "prometheus-adapter"], "KServe scales"),
])
def test_bad_input_is_one_line_and_writes_nothing(repo, tmp_path, args, message):
    result = invoke("k8s", repo, "-o", tmp_path / "out", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_existing_folders(repo, tmp_path):
    out = tmp_path / "out"
    assert invoke("k8s", repo, "-o", out).exit_code == 0
    result = invoke("k8s", repo, "-o", out, "--replicas", "2", "--max-replicas", "6")
    assert result.exit_code == 2 and "pass --force" in result.output
    assert load(out)["deployment.yaml"]["spec"]["replicas"] == 1
    assert invoke("k8s", repo, "-o", out, "--replicas", "2", "--max-replicas", "6", "--force").exit_code == 0
    assert load(out)["deployment.yaml"]["spec"]["replicas"] == 2
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    result = invoke("k8s", repo, "-o", mine, "--force")
    assert result.exit_code == 2 and "was not written by fna-deploy k8s" in result.output
    assert (mine / "notes.txt").read_text() == "keep" and not (mine / "deployment.yaml").exists()
    result = invoke("k8s", tmp_path / "nope", "-o", out)
    assert result.exit_code == 2 and "is not a folder" in result.output


def test_the_server_arguments_exist_in_the_real_tritonserver(repo, tmp_path):
    """Up to the cluster's boundary: every flag the Deployment passes is one tritonserver knows
    (the binary bundled in nvidia-pytriton, asked for its --help)."""
    import os
    import subprocess

    from fna_deploy import triton as tr

    from .conftest import _server_binary_or_skip

    binary = _server_binary_or_skip()
    import re

    done = subprocess.run([str(binary.path), "--help"], capture_output=True, text=True, timeout=60, env={**os.environ, **binary.env})
    text = done.stdout + done.stderr  # tritonserver prints its help on stderr
    assert tr.probe_tritonserver(binary) is None and "--model-repository" in text
    manifest = build_manifests(repo, K8sOptions(name="fna")).files["deployment.yaml"]
    args = manifest["spec"]["template"]["spec"]["containers"][0]["args"]
    assert len(args) == 7
    for arg in args:
        flag = arg.split("=")[0]
        assert re.search(rf"^\s+{re.escape(flag)}(\s|$)", text, re.M), f"tritonserver --help has no {flag}"
    assert not re.search(r"^\s+--no-such-flag(\s|$)", text, re.M)
