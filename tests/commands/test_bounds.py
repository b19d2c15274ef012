"""Every numeric flag has an upper bound (an unbounded count ran for hours or overflowed a library's
int64), and so do the config values read from files: one line, exit 2, before any work."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from fna_deploy.cli import cli
from fna_deploy.config import MAX_PINV_ITERS, FNAConfig


@pytest.mark.parametrize("args, flag", [
    (["verify", "timm:vit_tiny_patch16_224", "--pinv-iters", "100000000"], "--pinv-iters"),
    (["export", "timm:vit_tiny_patch16_224", "--opset", "99"], "--opset"),
    (["export", "timm:vit_tiny_patch16_224", "--landmarks", str(2**40)], "--landmarks"),
    (["export", "timm:vit_tiny_patch16_224", "--resolution", str(10**9)], "--resolution"),
    (["triton", "m.onnx", "-o", "repo", "--version", "99999999999999999999"], "--version"),
    (["triton", "m.onnx", "-o", "repo", "--instances", "100000"], "--instances"),
    (["triton", "m.onnx", "-o", "repo", "--max-batch-size", str(2**40)], "--max-batch-size"),
    (["triton", "m.onnx", "-o", "repo", "--queue-delay-us", str(2**70)], "--queue-delay-us"),
    (["bench", "timm:vit_tiny_patch16_224", "--iters", str(10**12)], "--iters"),
    (["bench", "timm:vit_tiny_patch16_224", "--threads", "100000"], "--threads"),
    (["analyze", "timm:vit_tiny_patch16_224", "--pinv-iters", "1000"], "--pinv-iters"),
    (["infer", "--seed", str(2**64)], "--seed"),
    (["infer", "--requests", str(10**12)], "--requests"),
    (["run", "timm:vit_tiny_patch16_224", "-o", "out", "--bench-iters", str(10**12)], "--bench-iters"),
    (["build", "m.onnx", "--workspace", "1e12"], "--workspace"),
])
def test_numeric_flags_are_bounded(args, flag):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: Invalid value for '{flag}'") and "is not in the range" in lines[0], lines


def test_the_export_opset_bound_is_torchs_newest():
    from torch.onnx._constants import ONNX_MAX_OPSET

    from fna_deploy.commands.options import MAX_OPSET

    assert MAX_OPSET == ONNX_MAX_OPSET
    from fna_deploy.export.exporter import export_onnx  # the library refuses it too (no onnxscript traceback)

    with pytest.raises(ValueError, match="opset must be an int from 18"):
        export_onnx(None, None, "unused.onnx", opset=99)


def test_config_values_read_from_files_are_bounded():
    assert MAX_PINV_ITERS == 100  # the plugin contract's
    with pytest.raises(ValueError, match="pinv_iters: must be <= 100"):
        FNAConfig.from_json(json.dumps({"pinv_iters": 10**8}))
    with pytest.raises(ValueError, match="num_landmarks: must be <= 65536"):
        FNAConfig.from_dict({"num_landmarks": 2**62})


def test_a_resolution_that_drops_border_pixels_is_refused():
    result = CliRunner().invoke(cli, ["export", "timm:vit_tiny_patch16_224", "--resolution", "70", "-q", "-o", "x.onnx"])
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: resolution 70 px is not a multiple of the 16 px patches of vit_tiny_patch16_224: "
                                     "the last 6 px rows and columns would be dropped; use 64 or 80")
