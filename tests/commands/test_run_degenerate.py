"""fna-deploy run --allow-degenerate: a model whose outputs carry no signal (a zero head) fails the
chain's parity checks unless the flag says to judge them anyway (as export and verify take it)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import save_file

from fna_deploy.cli import cli

from ..conftest import tiny_timm


@pytest.mark.slow  # two whole chains, ~20 s
def test_run_allow_degenerate(tmp_path):
    model = tiny_timm()
    torch.nn.init.zeros_(model.head.weight)
    torch.nn.init.zeros_(model.head.bias)
    weights = tmp_path / "zero_head.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights))
    args = ["run", str(weights), "--arch", "timm:vit_tiny_patch16_224", "--resolution", "64", "--landmarks", "8",
            "--no-bench", "-q"]
    refused = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "a")])
    assert refused.exit_code == 1 and "carries no signal" in refused.stderr and "--allow-degenerate" in refused.stderr, refused.output
    allowed = CliRunner().invoke(cli, [*args, "-o", str(tmp_path / "b"), "--allow-degenerate"])
    assert allowed.exit_code == 0, allowed.output
    report = json.loads((tmp_path / "b" / "run_report.json").read_text())
    assert report["verify"]["passed"] and report["verify"]["degenerate"] == "every output value is 0"
