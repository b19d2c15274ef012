"""fna_deploy.triton.client: a live server (python backend) answers as PyTorch does, through
tritonclient and the library's own client."""

from __future__ import annotations

import os

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc.model_config_pb2", reason="needs tritonclient (pip install 'fna-deploy[triton]')")

from fna_deploy import triton as tr  # noqa: E402


@pytest.mark.slow
def test_live_python_backend_matches_pytorch(tiny_fna, live_server):
    import torch

    import tritonclient.http as httpclient

    from fna_deploy.patching import patch, unpatch

    model, config, _ = tiny_fna
    server = live_server
    assert server.is_ready() and server.binary.path.name == "tritonserver"
    client = httpclient.InferenceServerClient(server.http_url)
    try:
        assert client.is_model_ready("tiny")
        served = client.get_model_config("tiny")
        assert served["backend"] == "python" and served["max_batch_size"] == 4
        rng = np.random.default_rng(0)
        for batch in (1, 3):
            x = rng.standard_normal((batch, 3, 32, 32)).astype(np.float32)
            request = httpclient.InferInput("images", list(x.shape), "FP32")
            request.set_data_from_numpy(x)
            answer = client.infer("tiny", [request]).as_numpy("output")
            with torch.inference_mode():
                patch(model, config)
                try:
                    fna = model(torch.from_numpy(x)).numpy()
                finally:
                    unpatch(model)
                dense = model(torch.from_numpy(x)).numpy()
            assert answer.shape == (batch, 10) and answer.dtype == np.float32
            assert np.abs(answer - fna).max() <= 1e-4, np.abs(answer - fna).max()
            # the server runs FNA, not dense attention: m=3 of 5 tokens changes the answer measurably
            assert np.abs(answer - dense).max() > 1e-3
        # a batch above max_batch_size is refused by Triton, not silently split
        x = np.zeros((5, 3, 32, 32), np.float32)
        request = httpclient.InferInput("images", list(x.shape), "FP32")
        request.set_data_from_numpy(x)
        from tritonclient.utils import InferenceServerException

        with pytest.raises(InferenceServerException, match="batch"):
            client.infer("tiny", [request])
    finally:
        client.close()

    # through the library's own client too
    with tr.TritonHttpClient(f"http://{server.http_url}/") as ours:
        result = ours.infer("tiny", {"images": np.ones((2, 3, 32, 32), np.float64)})  # cast to the served FP32
        assert result.outputs["output"].shape == (2, 10) and result.model_config["name"] == "tiny"
        with pytest.raises(ValueError, match="not ready"):
            ours.model_config("missing")

    ports = (server.http_port, server.grpc_port, server.metrics_port)
    pid = server.process.pid
    assert server.stop() == 0
    assert not server.running
    assert not any(tr.port_in_use(p) for p in ports), "ports still bound after stop"
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # no python backend stub outlived the server
