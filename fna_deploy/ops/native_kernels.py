"""The native library's CUDA kernels as the CUDA implementation of the fna custom ops.

``fna_deploy.native`` loads ``libfna.so`` through ctypes; this module is the torch side of its
CUDA kernels: it turns device tensors into the C API's pointers and streams, falls back to the
PyTorch reference beyond the kernels' limits (the contract's ``MAX_KERNEL_*``), and registers
the two functions for the ``CUDA`` dispatch key of ``fna::landmarks`` / ``fna::nystrom_attention``
(``native.load()`` does that when the library was built with CUDA and torch sees a GPU).
Nothing here runs without a GPU; the CPU-only tests check the registration refuses.
"""

from __future__ import annotations

import torch

from ..contract import MAX_KERNEL_HEAD_DIM, MAX_KERNEL_LANDMARKS, MAX_KERNEL_TOKENS, LandmarkAttrs
from ..native import NativeLibrary, landmark_c_args
from .landmarks import landmarks_reference
from .nystrom import nystrom_reference

# the C API's dtype codes (fna_capi.h)
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}


def landmarks_cuda(lib: NativeLibrary, features, scores, *attrs):
    """fna::landmarks on CUDA tensors; ``attrs``: one LandmarkAttrs or the op's attribute arguments."""
    a = LandmarkAttrs.of(*attrs)
    b, n, d = features.shape
    if n >= MAX_KERNEL_TOKENS:  # beyond the kernels' packed 21-bit token counters: the reference
        return landmarks_reference(features, scores, a)
    dev = features.device
    f = features if features.dtype in (torch.float32, torch.float16) else features.float()
    f = f.contiguous()
    s = None
    if scores is not None and (a.massive_ratio > 0 or a.artifact_ratio > 0):
        s = scores if scores.dtype in (torch.float32, torch.float16) else scores.float()
        s = s.contiguous()
    out = torch.empty((b, a.num_landmarks), dtype=torch.int32, device=dev)
    ws_bytes = lib.landmarks_workspace_size(b, n)
    ws = torch.empty(ws_bytes, dtype=torch.uint8, device=dev)
    with torch.cuda.device(dev):
        stream = torch.cuda.current_stream(dev).cuda_stream
        lib.call("fna_landmarks_cuda",
                 f.data_ptr(), 1 if f.dtype == torch.float16 else 0,
                 s.data_ptr() if s is not None else None, 1 if s is not None and s.dtype == torch.float16 else 0,
                 b, n, d, *landmark_c_args(a), out.data_ptr(), ws.data_ptr(), ws_bytes, stream)
    return out


def nystrom_cuda(lib: NativeLibrary, q, k, v, idx, scale: float, pinv_iters: int):
    """fna::nystrom_attention on CUDA tensors (the reference beyond the kernels' head dim / landmarks)."""
    if q.shape[-1] > MAX_KERNEL_HEAD_DIM or v.shape[-1] > MAX_KERNEL_HEAD_DIM or idx.shape[1] > MAX_KERNEL_LANDMARKS:
        return nystrom_reference(q, k, v, idx, scale, pinv_iters)
    dtype = q.dtype
    work = dtype if dtype in DTYPE_CODES else torch.float32
    qc, kc, vc = (t.to(work).contiguous() for t in (q, k, v))
    ic = idx.to(torch.int32).contiguous()
    b, h, n, d = qc.shape
    dv = vc.shape[-1]
    m = ic.shape[1]
    out = torch.empty((b, h, n, dv), dtype=work, device=q.device)
    ws_bytes = lib.nystrom_workspace_size(b, h, n, d, dv, m)
    ws = torch.empty(ws_bytes, dtype=torch.uint8, device=q.device)
    with torch.cuda.device(q.device):
        stream = torch.cuda.current_stream(q.device).cuda_stream
        lib.call("fna_nystrom_cuda",
                 qc.data_ptr(), kc.data_ptr(), vc.data_ptr(), DTYPE_CODES[work], ic.data_ptr(),
                 b, h, n, d, dv, m, float(scale), int(pinv_iters), out.data_ptr(), ws.data_ptr(), ws_bytes, stream)
    return out.to(dtype)


def register_cuda_kernels(lib: NativeLibrary) -> bool:
    """Make ``lib``'s kernels the CUDA implementation of fna::landmarks / fna::nystrom_attention;
    False (nothing registered) when it was built without CUDA or torch sees no GPU."""
    if not lib.built_with_cuda or not torch.cuda.is_available():
        return False
    from . import landmarks_op  # noqa: F401  (defines the custom ops)

    torch.library.register_kernel("fna::landmarks", "cuda", lambda features, scores, *attrs: landmarks_cuda(lib, features, scores, *attrs))
    torch.library.register_kernel("fna::nystrom_attention", "cuda", lambda *args: nystrom_cuda(lib, *args))
    lib.cuda_registered = True
    return True
