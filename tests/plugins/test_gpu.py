"""CUDA kernels against the fp32 PyTorch reference (skipped without a CUDA device).

fp32: rel err <= 1e-4, landmark indices identical; fp16: rel err <= 1e-2."""

from __future__ import annotations

import pytest
import torch

from fna_deploy import native
from fna_deploy.ops import nystrom_attention, select_landmarks
from fna_deploy.ops.landmarks import landmarks_reference
from fna_deploy.ops.nystrom import nystrom_reference

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def cuda_lib(cuda_build):
    lib = native.load(cuda_build.library)
    assert lib.built_with_cuda and lib.cuda_registered
    return lib


def _rel(a, b):
    return ((a.double().cpu() - b.double().cpu()).norm() / b.double().cpu().norm()).item()


@pytest.mark.parametrize(
    "b,n,d,m,kw",
    [
        (2, 200, 24, 16, {}),
        (3, 1500, 64, 64, {"num_prefix": 1}),
        (2, 4096, 64, 128, {"num_prefix": 1, "massive_ratio": 10.0, "artifact_ratio": 3.0}),
        (1, 300, 8, 300, {}),  # m = N
        (2, 777, 16, 50, {"method": "grid", "num_prefix": 2, "massive_ratio": 10.0, "artifact_ratio": 3.0}),
        (1, 16384, 64, 256, {"num_prefix": 1}),
        (2, 4097, 64, 128, {"num_prefix": 1, "massive_ratio": 10.0, "artifact_ratio": 3.0}),  # ViT-L/16 @ 1024 px
    ],
)
def test_landmarks_kernel_matches_reference(cuda_lib, b, n, d, m, kw):
    g = torch.Generator().manual_seed(n + m)
    f = torch.randn(b, n, d, generator=g)
    if "massive_ratio" in kw:
        s = torch.rand(b, n, generator=g) + 1
        s[:, n // 3] = 100.0
        s[:, n // 2] = 5.0
        kw = {**kw, "scores": s}
    want = landmarks_reference(f, kw.get("scores"), m, kw.get("num_prefix", 0), kw.get("massive_ratio", 0.0),
                               kw.get("artifact_ratio", 0.0), kw.get("method", "fps"))
    kw_cuda = {k: (v.cuda() if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    got = select_landmarks(f.cuda(), m, **kw_cuda)  # dispatches to the registered CUDA kernel
    assert torch.equal(got.cpu(), want)
    # fp16 features: same math on the fp16-rounded values
    got16 = select_landmarks(f.half().cuda(), m, **kw_cuda)
    want16 = landmarks_reference(f.half(), kw.get("scores"), m, kw.get("num_prefix", 0), kw.get("massive_ratio", 0.0),
                                 kw.get("artifact_ratio", 0.0), kw.get("method", "fps"))
    assert torch.equal(got16.cpu(), want16)


@pytest.mark.parametrize(
    "b,h,n,d,m",
    [(1, 2, 100, 32, 16), (2, 3, 1500, 64, 64), (1, 2, 333, 40, 33), (1, 1, 64, 128, 64), (2, 16, 4096, 64, 128),
     (1, 4, 2048, 96, 512), (1, 2, 777, 80, 200), (1, 16, 16384, 64, 256)],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_nystrom_kernel_matches_reference(cuda_lib, b, h, n, d, m, dtype):
    g = torch.Generator().manual_seed(n * 7 + m)
    q, k, v = (torch.randn(b, h, n, d, generator=g) for _ in range(3))
    idx = landmarks_reference(q.mean(1), None, m, 0, 0.0, 0.0, "fps")
    q16, k16, v16 = (t.to(dtype) for t in (q, k, v))
    want = nystrom_reference(q16.float(), k16.float(), v16.float(), idx, 0.0, 6)  # fp32 reference
    got = nystrom_attention(q16.cuda(), k16.cuda(), v16.cuda(), idx.cuda())
    assert got.dtype == dtype and got.shape == want.shape
    assert _rel(got, want) <= (1e-4 if dtype == torch.float32 else 1e-2)
    direct = cuda_lib.nystrom_cuda(q16.cuda(), k16.cuda(), v16.cuda(), idx.cuda(), 0.0, 6)
    assert torch.equal(direct, got)  # the op really ran our kernel


def test_cpp_kernel_test_on_gpu(cuda_build):
    """The C++ kernel test (kernels vs the C++ reference) passes, not skips, on a GPU."""
    import subprocess

    exe = cuda_build.build_dir / "bin" / "fna_test_kernels"
    if not exe.is_file():
        pytest.skip(f"{exe} was not built")
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 failures" in proc.stdout


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (captures a CUDA graph)")
def test_patched_model_captures_in_a_cuda_graph(cuda_lib):
    """A patched ViT (FNA in every block, our CUDA kernels) is captured in a torch.cuda.CUDAGraph
    and replayed on new inputs: same output as eager, and eager runs without a host sync."""
    import fna_deploy as fd
    from tests.conftest import tiny_timm

    model = tiny_timm(img_size=448, depth=3).cuda()  # 785 tokens: the FPS kernel splits each image
    fd.patch(model, fd.FNAConfig(num_landmarks=32, layers="all"))
    static_x = torch.randn(2, 3, 448, 448, device="cuda")
    with torch.no_grad():
        torch.cuda.set_sync_debug_mode("error")  # any host synchronisation raises
        try:
            model(static_x)
        finally:
            torch.cuda.set_sync_debug_mode("default")
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up on a side stream, as torch's capture recipe asks
            for _ in range(2):
                model(static_x)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            static_y = model(static_x)
        for seed in (1, 2):
            x = torch.randn(2, 3, 448, 448, device="cuda", generator=torch.Generator("cuda").manual_seed(seed))
            static_x.copy_(x)
            graph.replay()
            want = model(x)
            torch.testing.assert_close(static_y, want, rtol=1e-4, atol=1e-5)
