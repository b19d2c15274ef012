"""Images in: the preprocessing recipe recorded at export (timm data config / HF image processor),
the python-backend preprocessing model and the ensemble, and a live bundled tritonserver whose
answer for a real PNG equals PyTorch on the same image preprocessed by timm's own transform."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient (pip install 'fna-deploy[triton]')")
from PIL import Image  # noqa: E402

from fna_deploy import triton as tr  # noqa: E402
from fna_deploy.cli import cli  # noqa: E402
from fna_deploy.images import data_config  # noqa: E402
from fna_deploy.triton import RepositoryOptions, write_repository  # noqa: E402
from fna_deploy.triton.ensemble import artifact_recipe, write_image_models  # noqa: E402
from fna_deploy.triton.preprocess import check_recipe, preprocess  # noqa: E402

from ..conftest import tiny_timm  # noqa: E402
from .conftest import _server_binary_or_skip, tiny_onnx  # noqa: E402


def encoded(shape, fmt="PNG", seed=0) -> bytes:
    """A real image file's bytes: random pixels of ``shape`` (H, W), saved as ``fmt``."""
    pixels = np.random.default_rng(seed).integers(0, 256, (*shape, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
    return buffer.getvalue()


def timm_reference(model, data: bytes, size: int):
    """timm's own eval transform of ``data`` (independent of fna-deploy's recipe)."""
    from timm.data import create_transform, resolve_data_config

    transform = create_transform(**resolve_data_config({"input_size": (3, size, size)}, model=model))
    return transform(Image.open(io.BytesIO(data)).convert("RGB")).numpy()


@pytest.mark.parametrize("shape, fmt", [((45, 71), "PNG"), ((80, 33), "JPEG"), ((32, 32), "WEBP"), ((20, 10), "PNG")])
def test_recipe_equals_timm_transform(shape, fmt):
    model = tiny_timm(img_size=32, depth=1, num_classes=10)
    recipe = check_recipe(data_config(model, 32))
    # the numbers come from the model's data config (this ViT: mean/std 0.5, crop_pct 0.9), not ImageNet defaults
    assert recipe["mean"] == [0.5, 0.5, 0.5] and recipe["resize"] == {"mode": "shortest_edge", "size": 35}
    data = encoded(shape, fmt)
    np.testing.assert_array_equal(preprocess(data, recipe), timm_reference(model, data, 32))


def test_recipe_follows_the_hf_image_processor(tmp_path):
    transformers = pytest.importorskip("transformers")
    from fna_deploy.loading import load_model

    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)
    transformers.ViTModel(config).save_pretrained(tmp_path / "vit")
    processors = [
        transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3], resample=2),
        transformers.CLIPImageProcessor(size={"shortest_edge": 36}, crop_size={"height": 32, "width": 32},
                                        image_mean=[0.5, 0.4, 0.3], image_std=[0.2, 0.25, 0.3], resample=3),
    ]
    for processor in processors:
        processor.save_pretrained(tmp_path / "vit")
        recipe = check_recipe(data_config(load_model(f"hf:{tmp_path / 'vit'}"), 32))
        assert recipe["source"] == "hf" and recipe["std"] == [0.2, 0.25, 0.3]
        for shape in ((45, 71), (81, 33)):
            data = encoded(shape)
            image = Image.open(io.BytesIO(data)).convert("RGB")
            ours = preprocess(data, recipe)
            # HF's Pillow backend is the same arithmetic; its torchvision backend rounds some pixels one 8-bit level apart
            pil = transformers.AutoImageProcessor.from_pretrained(tmp_path / "vit", backend="pil")
            np.testing.assert_allclose(ours, pil(image, return_tensors="np")["pixel_values"][0], atol=1e-5)
            fast = transformers.AutoImageProcessor.from_pretrained(tmp_path / "vit")
            assert np.abs(ours - fast(image, return_tensors="np")["pixel_values"][0]).max() <= 1.01 / 255 / 0.2


def test_bad_payloads_and_recipes():
    recipe = data_config(None, 16)
    assert recipe["source"] == "default" and recipe["mean"] == [0.485, 0.456, 0.406]
    for payload in (b"", b"not an image", encoded((8, 8))[:40], b"BM" + b"\0" * 64):
        with pytest.raises(ValueError, match="payload|empty"):
            preprocess(payload, recipe)
    gif = io.BytesIO()
    Image.new("RGB", (8, 8)).save(gif, "GIF")
    with pytest.raises(ValueError, match="not a readable JPEG, PNG, WEBP"):
        preprocess(gif.getvalue(), recipe)
    for change, message in [({"channels": 4}, "channels"), ({"std": [1.0, 0.0, 1.0]}, "std must not be 0"),
                            ({"crop": [8, 8]}, "must equal"), ({"interpolation": "cubic"}, "interpolation"),
                            ({"version": 2}, "version 1"), ({"mean": [0.5]}, "mean must be 3")]:
        with pytest.raises(ValueError, match=message):
            check_recipe({**recipe, **change})


def test_export_records_the_recipe_and_triton_refuses_without_one(tiny_fna, tmp_path):
    model, _, onnx_path = tiny_fna
    assert artifact_recipe(onnx_path) == data_config(model, 32)
    old = tiny_onnx(tmp_path / "old.onnx")  # an export without the preprocess metadata
    result = CliRunner().invoke(cli, ["triton", str(old), "-o", str(tmp_path / "repo"), "--backend", "python", "--image-ensemble"])
    assert result.exit_code == 2 and "records no image preprocessing" in result.output
    assert not (tmp_path / "repo").exists()


def test_image_models_are_written_with_the_model(tiny_fna, tmp_path):
    _, _, onnx_path = tiny_fna
    result = CliRunner().invoke(cli, ["triton", str(onnx_path), "-o", str(tmp_path / "repo"), "--backend", "python",
                                      "--name", "tiny", "--image-ensemble"])
    assert result.exit_code == 0, result.output
    assert "fna-deploy infer 127.0.0.1:8000 tiny_images --image" in result.output
    repo = tmp_path / "repo"
    ensemble = tr.parse_config((repo / "tiny_images" / "config.pbtxt").read_text())
    assert ensemble.platform == "ensemble" and ensemble.max_batch_size == 8 and ensemble.input[0].name == "image"
    assert [s.model_name for s in ensemble.ensemble_scheduling.step] == ["tiny_preprocess", "tiny"]
    pre = tr.parse_config((repo / "tiny_preprocess" / "config.pbtxt").read_text())
    assert json.loads(pre.parameters["preprocess"].string_value) == artifact_recipe(onnx_path)
    assert (repo / "tiny_preprocess" / "1" / "fna_preprocess.py").read_text() == Path(tr.__file__).with_name("preprocess.py").read_text()
    assert sorted(tr.check_repository(repo)) == ["tiny", "tiny_images", "tiny_preprocess"]
    result = CliRunner().invoke(cli, ["triton", str(onnx_path), "-o", str(repo), "--backend", "python", "--name", "tiny", "--image-ensemble"])
    assert result.exit_code == 2 and "already exists" in result.output
    # a static-batch model cannot sit behind a batching ensemble: refused, nothing of it left
    write_repository(tiny_onnx(tmp_path / "static.onnx", batch=1), repo, RepositoryOptions(name="static", backend="python"))
    with pytest.raises(ValueError, match="static batch"):
        write_image_models(repo, "static", artifact_recipe(onnx_path))
    assert not (repo / "static_images").exists() and not (repo / "static_preprocess").exists()


@pytest.fixture(scope="module")
def images_server(tiny_fna, tmp_path_factory):
    binary = _server_binary_or_skip()
    _, _, onnx_path = tiny_fna
    root = tmp_path_factory.mktemp("images")
    write_repository(onnx_path, root / "repo", RepositoryOptions(name="tiny", backend="python", max_batch_size=4))
    write_image_models(root / "repo", "tiny", artifact_recipe(onnx_path))
    server = tr.TritonServer(root / "repo", binary=binary, log_path=root / "server.log")
    server.start(timeout=180)
    yield server, root
    server.stop()


def test_live_png_equals_pytorch_on_timms_preprocessing(images_server, tiny_fna):
    import torch

    server, _ = images_server
    model, _, _ = tiny_fna
    from fna_deploy.config import FNAConfig
    from fna_deploy.patching import patch, unpatch

    pngs = [encoded((45, 71), seed=1), encoded((64, 40), seed=2)]
    with tr.TritonHttpClient(server.http_url) as client:
        answer = client.infer("tiny_images", {"image": np.array([[p] for p in pngs], dtype=object)}).outputs["output"]
    pixels = torch.from_numpy(np.stack([timm_reference(model, p, 32) for p in pngs]))
    patch(model, FNAConfig(num_landmarks=3, layers="1"))
    try:
        with torch.inference_mode():
            reference = model(pixels).numpy()
    finally:
        unpatch(model)
    np.testing.assert_allclose(answer, reference, atol=1e-4, rtol=0)
    assert (answer.argmax(1) == reference.argmax(1)).all()


def test_live_corrupt_payload_fails_its_request_only(images_server):
    server, _ = images_server
    good = encoded((40, 40))
    with tr.TritonHttpClient(server.http_url) as client:
        for payload in (b"not an image", good[:50]):
            with pytest.raises(ValueError, match="image 0 of the request: the payload is not a readable"):
                client.infer("tiny_images", {"image": np.array([[payload]], dtype=object)})
        assert client.infer("tiny_images", {"image": np.array([[good]], dtype=object)}).outputs["output"].shape == (1, 10)
    assert server.running


def test_live_infer_image_and_load_mode(images_server, tiny_fna, tmp_path):
    import torch

    server, root = images_server
    model, _, _ = tiny_fna
    torch.save(model, tmp_path / "tiny.pt")
    (tmp_path / "photo.png").write_bytes(encoded((50, 70), seed=3))
    url = server.http_url
    args = ["infer", url, "tiny_images", "--image", str(tmp_path / "photo.png"), "--compare", str(tmp_path / "tiny.pt"),
            "--allow-pickle", "--concurrency", "3", "--requests", "30", "--report", str(tmp_path / "r.json"),
            "--metrics-url", server.metrics_url]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["compare"]["passed"] and report["images"] == [str(tmp_path / "photo.png")]
    assert report["load"]["requests"] == 30 and report["load"]["errors"] == 0 and report["load"]["mismatches"] == 0
    # the server's side of the same 31 requests, from its metrics endpoint (127.0.0.1 only, as serve starts it)
    assert f"--metrics-address={tr.LOOPBACK}" in server.command()
    times = {m["model"]: m for m in report["server"]["models"]}
    assert set(times) == {"tiny", "tiny_images", "tiny_preprocess"}
    for name, model in times.items():
        assert model["requests"] == 31 and model["failures"] == 0 and 1 <= model["executions"] <= 31
        compute = model["compute_input_ms"] + model["compute_infer_ms"] + model["compute_output_ms"]
        assert 0 <= model["queue_ms"] and 0 < compute, name
        if name != "tiny_images":  # a model's request time holds its queue and compute (an ensemble's are its steps' sums)
            assert model["queue_ms"] + compute <= model["request_ms"] + 1e-3, (name, model)
    assert "server: tiny_preprocess: 31 requests" in result.output.replace("\n", " ")
    # the same file as pixels to the plain model (preprocessed by the recorded recipe): the same top-1
    result = CliRunner().invoke(cli, ["infer", url, "tiny", "--image", str(tmp_path / "photo.png"), "--report", str(tmp_path / "p.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "p.json").read_text())["top_k"][0] == report["top_k"][0]
    result = CliRunner().invoke(cli, ["infer", url, "tiny_images", "--random", "1"])
    assert result.exit_code == 2 and "takes encoded images" in result.output
    # a folder: the first --batch images by name, one batched request of their bytes
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, fmt in enumerate(("PNG", "JPEG", "WEBP")):
        (folder / f"{i}.{fmt.lower()}").write_bytes(encoded((40 + 9 * i, 60), fmt, seed=i))
    result = CliRunner().invoke(cli, ["infer", url, "tiny_images", "--image", str(folder), "--batch", "3", "--compare",
                                      str(tmp_path / "tiny.pt"), "--allow-pickle"])
    assert result.exit_code == 0, result.output
    assert "output [3, 10]" in result.output and "FNA served config): ok" in result.output


METRICS = """# HELP nv_inference_request_success Number of successful inference requests
nv_inference_request_success{model="m",version="1"} 10
nv_inference_request_success{model="m",version="2"} 2
nv_inference_request_failure{model="m",reason="BACKEND",version="1"} 1
nv_inference_count{model="m",version="1"} 40
nv_inference_exec_count{model="m",version="1"} 5
nv_inference_request_duration_us{model="m",version="1"} 60000
nv_inference_queue_duration_us{model="m",version="1"} 12000
nv_inference_compute_input_duration_us{model="m",version="1"} 1200
nv_inference_compute_infer_duration_us{model="m",version="1"} 36000
nv_inference_compute_output_duration_us{model="m",version="1"} 2400
nv_inference_request_success{model="idle",version="1"} 7
nv_gpu_utilization{gpu_uuid="GPU-1"} 0.5
"""


def test_server_times_from_two_scrapes():
    from fna_deploy.triton.metrics import default_metrics_url, metrics_url, parse_metrics, server_times

    after = parse_metrics(METRICS)
    assert after[("m", "request_success")] == 12  # summed over versions
    before = {("m", "request_success"): 0.0, ("idle", "request_success"): 7.0}
    (times,) = server_times(before, after)  # "idle" served nothing in between
    assert (times.model, times.requests, times.failures, times.inferences, times.executions) == ("m", 12, 1, 40, 5)
    assert times.queue_ms == 1.0 and times.compute_infer_ms == 3.0 and times.request_ms == 5.0
    assert "queue 1.00 ms + compute 3.30 ms" in times.line()
    assert metrics_url("127.0.0.1:8002") == metrics_url("http://127.0.0.1:8002/metrics") == "http://127.0.0.1:8002/metrics"
    assert default_metrics_url("http://127.0.0.1:8000") == "http://127.0.0.1:8002/metrics"


def test_engine_recipe_comes_from_its_onnx_and_a_mismatch_writes_nothing(tiny_fna, tmp_path):
    import shutil

    from .conftest import fake_engine, fake_plugin

    _, _, onnx_path = tiny_fna
    engine = fake_engine(tmp_path, plugin=fake_plugin(tmp_path / "libfna_plugins.so"))  # its sidecar names vit_fna_trt.onnx
    args = ["triton", str(engine), "-o", str(tmp_path / "repo"), "--name", "vit", "--image-ensemble"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "the engine's ONNX export (its preprocessing recipe) is missing" in result.output
    shutil.copy(onnx_path, tmp_path / "vit_fna_trt.onnx")
    assert artifact_recipe(engine)["size"] == [32, 32]
    result = CliRunner().invoke(cli, args)  # the engine takes 224 px, the recipe makes 32 px: refused, the model removed again
    assert result.exit_code == 2 and "takes [3, 224, 224], but the recorded preprocessing gives [3, 32, 32]" in result.output
    assert not any(p.name in ("vit", "vit_preprocess", "vit_images") for p in (tmp_path / "repo").iterdir())


def test_serve_check_knows_ensembles_need_no_backend(tiny_fna, tmp_path):
    """serve checks every model's backend against the server's before starting: an ensemble is
    Triton's own scheduler (no backend), its steps are checked as models of their own."""
    _, _, onnx_path = tiny_fna
    (tmp_path / "backends" / "python").mkdir(parents=True)
    bundled = tr.ServerBinary(tmp_path / "tritonserver", True, {}, backend_source=tmp_path / "backends")
    repo = tmp_path / "repo"
    write_repository(onnx_path, repo, RepositoryOptions(name="tiny", backend="python"))
    write_image_models(repo, "tiny", artifact_recipe(onnx_path))
    assert tr.model_backends(repo) == {"tiny": "python", "tiny_images": "ensemble", "tiny_preprocess": "python"}
    tr.check_backends(repo, bundled)  # no error
    write_repository(onnx_path, repo, RepositoryOptions(name="ort", backend="onnxruntime"))
    with pytest.raises(ValueError, match="model 'ort' needs the onnxruntime backend"):
        tr.check_backends(repo, bundled)


def test_the_manifests_probes_and_scrape_port_answer_on_a_live_server(images_server):
    """The k8s manifests' health probes and Prometheus scrape target, asked of a real tritonserver
    serving this repository (on loopback: no cluster here)."""
    import urllib.request

    import yaml

    from fna_deploy.triton.k8s import K8sOptions, build_manifests, render_yaml
    from fna_deploy.triton.metrics import parse_metrics

    server, root = images_server
    files = build_manifests(root / "repo", K8sOptions(name="fna"))
    deployment = yaml.safe_load(render_yaml(files.files["deployment.yaml"]))
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    local = {ports["http"]: server.http_port, ports["metrics"]: server.metrics_port}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        with urllib.request.urlopen(f"http://{tr.LOOPBACK}:{local[ports[get['port']]]}{get['path']}", timeout=5) as answer:
            assert answer.status == 200, probe
    scrape = pod["metadata"]["annotations"]
    with urllib.request.urlopen(f"http://{tr.LOOPBACK}:{local[int(scrape['prometheus.io/port'])]}{scrape['prometheus.io/path']}", timeout=5) as answer:
        assert ("tiny", "request_success") in parse_metrics(answer.read().decode())
