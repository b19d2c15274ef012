"""build prints the profile it built (issue 21): printed = sidecar = engine, conflicting shape
flags refused, a dynamic-batch export gets a named default profile, Triton follows the engine."""

from __future__ import annotations

import json
import re

import pytest
from click.testing import CliRunner

from fna_deploy.cli import cli
from fna_deploy.trt import EngineSidecar
from fna_deploy.trt.runtime import engine_runs_here
from fna_deploy.trt.shapes import DEFAULT_DYNAMIC_BATCH, check_batch_agrees

pytest.importorskip("tensorrt_rtx", reason="needs TensorRT-RTX (pip install tensorrt-rtx) to build an engine")
RTX = ["--runtime", "tensorrt-rtx", "--compute-capabilities", "86"]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    out = tmp_path_factory.mktemp("profile") / "d.onnx"
    result = invoke("export", "timm:vit_tiny_patch16_224", "--target", "dense", "--resolution", "32", "-o", out, "--no-check", "-q")
    assert result.exit_code == 0, result.output
    return out


def _printed_batch(output: str) -> tuple[int, int, int]:
    found = re.search(r"batch profile (\d+):(\d+):(\d+)", output)
    assert found, output
    return tuple(int(g) for g in found.groups())


def _engine_batch(plan) -> "tuple[int, int, int] | None":
    """The engine's own profile for 'images', where the engine can be deserialised (a GPU it runs on)."""
    if engine_runs_here(plan) is not None:
        return None
    from fna_deploy.trt import runtime

    trt = runtime.import_runtime(EngineSidecar.from_json(EngineSidecar.path_for(plan).read_text()).runtime)
    engine = trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(plan.read_bytes())
    return tuple(int(s[0]) for s in engine.get_tensor_profile_shape("images", 0))


@pytest.mark.parametrize("flags, expected, why", [
    ((), DEFAULT_DYNAMIC_BATCH, "default for a dynamic-batch export"),
    (("--min-shapes", "images:1x3x32x32", "--max-shapes", "images:8x3x32x32"), (1, 8, 8), "--shapes"),
    (("--batch", "2:3:5"), (2, 3, 5), "--batch"),
])
def test_printed_profile_is_the_sidecar_and_the_engine(dense, tmp_path, flags, expected, why):
    plan = tmp_path / "e.plan"
    result = invoke("build", dense, "-o", plan, *RTX, *flags)
    assert result.exit_code == 0, result.output
    sidecar = EngineSidecar.from_json(EngineSidecar.path_for(plan).read_text())
    profile = sidecar.profile["images"]
    assert _printed_batch(result.output) == expected == (profile["min"][0], profile["opt"][0], profile["max"][0])
    assert why in result.output
    assert f"images 1x3x32x32" in result.output or expected[0] != 1
    assert (sidecar.min_batch, sidecar.max_batch) == (expected[0], expected[2])
    engine = _engine_batch(plan)  # needs a GPU the engine runs on; the sidecar is written from the builder's profile
    if engine is not None:
        assert engine == expected
    if flags == ():  # Triton's max_batch_size follows the engine, not a default of 1
        pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient")
        from fna_deploy import triton as tr

        # Triton's tensorrt backend refuses a TensorRT-RTX plan (tests/test_trt_rtx.py); the max_batch_size rule is
        # the same for a TensorRT plan, whose sidecar differs only in the runtime it names
        side = EngineSidecar.path_for(plan)
        side.write_text(json.dumps({**json.loads(side.read_text()), "runtime": "tensorrt"}))
        report = tr.write_repository(plan, tmp_path / "repo", tr.RepositoryOptions(name="d", backend="tensorrt"))
        assert tr.parse_config(open(report.config_path).read()).max_batch_size == DEFAULT_DYNAMIC_BATCH[2]


def test_conflicting_shape_flags_are_refused_and_nothing_is_written(dense, tmp_path):
    plan = tmp_path / "c.plan"
    result = invoke("build", dense, "-o", plan, *RTX, "--shapes", "images:4x3x32x32", "--batch", "1:4:8")
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("error: --batch 1:4:8 contradicts the shape flags")
    assert not plan.exists() and not EngineSidecar.path_for(plan).exists()
    check_batch_agrees((4, 4, 4), {"images": ([4, 3, 32, 32], [4, 3, 32, 32], [4, 3, 32, 32])})  # agreeing flags pass


def test_static_export_defaults_to_its_own_batch(tmp_path):
    from fna_deploy.trt.shapes import default_batch

    out = tmp_path / "s.onnx"
    result = invoke("export", "timm:vit_tiny_patch16_224", "--target", "dense", "--resolution", "32", "--batch", "3",
                    "-o", out, "--no-check", "-q")
    assert result.exit_code == 0, result.output
    assert default_batch(str(out)) == ((3, 3, 3), "the export's static batch 3")
