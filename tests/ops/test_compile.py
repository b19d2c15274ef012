"""The fna custom ops inside compiled graphs: torch.compile(fullgraph=True) of a patched model on
the CPU (no graph break, the ops stay single nodes, strides as the fake kernels promise, output
as eager). The CUDA-graph capture of a patched model with the CUDA kernels is in
tests/plugins/test_gpu.py."""

from __future__ import annotations

import pytest
import torch

import fna_deploy as fd
from tests.conftest import tiny_timm


@pytest.mark.slow
def test_patched_model_compiles_fullgraph_and_matches_eager():
    model = tiny_timm(depth=2)  # 16 patches + CLS, both blocks patched
    fd.patch(model, fd.FNAConfig(num_landmarks=8, layers="all"))
    x = torch.randn(2, 3, 64, 64)
    graphs: list[set[str]] = []

    def backend(gm, example_inputs):
        from torch._inductor.compile_fx import compile_fx

        graphs.append({str(n.target) for n in gm.graph.nodes if n.op == "call_function"})
        return compile_fx(gm, example_inputs)

    torch._dynamo.reset()
    try:
        with torch.no_grad():
            want = model(x)
            got = torch.compile(model, fullgraph=True, backend=backend)(x)
    finally:
        torch._dynamo.reset()
    assert len(graphs) == 1
    ops = " ".join(graphs[0])
    assert "fna.landmarks" in ops and "fna.nystrom_attention" in ops, ops
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
