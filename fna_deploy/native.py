"""The native fna library (plugins/fna, built with CMake): C++ CPU reference and CUDA kernels.

``load()`` opens ``libfna.so`` through ctypes (no compiler or pybind needed at import time) and
returns a :class:`NativeLibrary` with the C++ reference of both ops on CPU tensors. When the
library was built with CUDA and torch sees a GPU, ``load()`` also registers the CUDA kernels as
the CUDA implementation of the ``fna::landmarks`` / ``fna::nystrom_attention`` custom ops, so a
patched model runs the fast kernels in eager mode (that torch side lives beside the ops, in
``fna_deploy/ops/native_kernels.py``). The CMake build is ``native_build.py``.

Where the build lives (first match wins):

* ``$FNA_DEPLOY_PLUGIN_DIR`` if set;
* ``<repo>/build/plugins`` when fna_deploy runs from a source checkout (CMakeLists.txt next to
  the package), which is the usual editable install;
* ``~/.cache/fna-deploy/plugins`` otherwise (``$XDG_CACHE_HOME`` respected).

``fna-deploy plugin build`` writes there; ``build()`` below is what it calls.
"""

from __future__ import annotations

from .errors import FnaDeployError

import ctypes
import json
import math
import os
from pathlib import Path
from typing import Any, Optional

from .contract import LANDMARK_METHODS, LandmarkAttrs

ABI_VERSION = 1
LIBRARY_NAME = "libfna.so"
TRT_RTX_PLUGIN_NAME = "libfna_trt_rtx_plugin.so"
TRT_PLUGIN_NAME = "libfna_trt_plugin.so"
BUILD_INFO = "fna_build_info.json"
METHODS = {name: i for i, name in enumerate(LANDMARK_METHODS)}  # the C++ enum follows the contract's order


class NativeLibraryError(FnaDeployError, RuntimeError):
    """The native library is missing, stale or failed to build (one sentence)."""


def source_dir() -> Optional[Path]:
    """The repository root holding CMakeLists.txt and plugins/, or None in an installed wheel."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "CMakeLists.txt").is_file() and (root / "plugins" / "fna").is_dir() else None


def default_build_dir() -> Path:
    env = os.environ.get("FNA_DEPLOY_PLUGIN_DIR")
    if env:
        return Path(env).expanduser()
    root = source_dir()
    if root is not None:
        return root / "build" / "plugins"
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "fna-deploy" / "plugins"


def read_build_info(build_dir: "Path | str | None" = None) -> Optional[dict[str, Any]]:
    path = Path(build_dir or default_build_dir()) / BUILD_INFO
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


PLUGIN_FILE_PATTERN = r"libfna[A-Za-z0-9_.-]*\.so(\.[0-9]+)*"


def check_plugin_library(path: "str | os.PathLike[str]", flag: str = "--plugin") -> Path:
    """A plugin library a user names: an existing ELF shared library named like the fna libraries
    (libfna*.so), or ValueError with one sentence. Nothing else is loaded or copied as a plugin."""
    import re

    path = Path(path)
    hint = "build it with 'fna-deploy plugin build' and give the path 'fna-deploy plugin path' prints"
    if not path.exists():
        raise ValueError(f"{flag} {str(path)!r} does not exist; {hint}")
    if not path.is_file():
        raise ValueError(f"{flag} {str(path)!r} is not a file; {hint}")
    if not re.fullmatch(PLUGIN_FILE_PATTERN, path.name):
        raise ValueError(f"{flag} {str(path)!r} is not named like an fna plugin library ({TRT_PLUGIN_NAME}); {hint}")
    with open(path, "rb") as fh:
        header = fh.read(18)
    order = "little" if header[5:6] == b"\x01" else "big"
    if len(header) < 18 or header[:4] != b"\x7fELF" or int.from_bytes(header[16:18], order) != 3:  # ET_DYN
        raise ValueError(f"{flag} {str(path)!r} is not a shared library (ELF .so); {hint}")
    return path


def find_library(build_dir: "Path | str | None" = None) -> Optional[Path]:
    """Path of the built ``libfna.so`` (C API: CPU reference + CUDA kernels), or None."""
    build = Path(build_dir or default_build_dir())
    info = read_build_info(build)
    candidates = [Path(info["library"])] if info and info.get("library") else []
    candidates.append(build / "lib" / LIBRARY_NAME)
    for path in candidates:
        if path.is_file():
            return path
    return None


def find_trt_plugin(build_dir: "Path | str | None" = None, runtime: str = "tensorrt") -> Optional[Path]:
    """Path of the built plugin library for ``runtime``: ``libfna_trt_plugin.so`` (TensorRT) or
    ``libfna_trt_rtx_plugin.so`` (TensorRT-RTX, built when CMake has headers for it), or None."""
    build = Path(build_dir or default_build_dir())
    info = read_build_info(build)
    key, name = ("trt_rtx_plugin", TRT_RTX_PLUGIN_NAME) if runtime == "tensorrt-rtx" else ("trt_plugin", TRT_PLUGIN_NAME)
    candidates = [Path(info[key])] if info and info.get(key) else []
    candidates.append(build / "lib" / name)
    for path in candidates:
        if path.is_file():
            return path
    return None


# ------------------------------------------------------------------------------ the library
def _bind(lib: ctypes.CDLL) -> None:
    c = ctypes
    i64, i32, f32, vp = c.c_int64, c.c_int32, c.c_float, c.c_void_p
    sig = {
        "fna_abi_version": (c.c_int, []),
        "fna_last_error": (c.c_char_p, []),
        "fna_built_with_cuda": (c.c_int, []),
        "fna_landmarks_cpu": (c.c_int, [vp, vp, i64, i64, i64, i32, i32, f32, f32, i32, vp]),
        "fna_nystrom_cpu": (c.c_int, [vp, vp, vp, vp, i64, i64, i64, i64, i64, i64, f32, i32, vp]),
        "fna_check_landmark_attrs": (c.c_int, [i32, i32, f32, f32, c.c_char_p]),
        "fna_check_nystrom_attrs": (c.c_int, [f32, i32]),
        "fna_landmarks_workspace_size": (c.c_size_t, [i64, i64]),
        "fna_nystrom_workspace_size": (c.c_size_t, [i64, i64, i64, i64, i64, i64]),
        "fna_landmarks_cuda": (c.c_int, [vp, i32, vp, i32, i64, i64, i64, i32, i32, f32, f32, i32, vp, vp, c.c_size_t, vp]),
        "fna_nystrom_cuda": (c.c_int, [vp, vp, vp, i32, vp, i64, i64, i64, i64, i64, i64, f32, i32, vp, vp, c.c_size_t, vp]),
    }
    for name, (restype, argtypes) in sig.items():
        fn = getattr(lib, name)
        fn.restype = restype
        fn.argtypes = argtypes


def _int32_attr(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if not -(2**31) <= value < 2**31:
        raise ValueError(f"{name} is out of the int32 range: {value}")
    return value


def _float_attr(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def _landmark_numbers(a: LandmarkAttrs) -> tuple[int, int, float, float]:
    """A LandmarkAttrs' numeric fields as the C API takes them (num_landmarks, num_prefix,
    massive_ratio, artifact_ratio), with the C types checked (ValueError naming the field)."""
    return (_int32_attr("num_landmarks", a.num_landmarks), _int32_attr("num_prefix", a.num_prefix),
            _float_attr("massive_ratio", a.massive_ratio), _float_attr("artifact_ratio", a.artifact_ratio))


def landmark_c_args(a: LandmarkAttrs) -> tuple[int, int, float, float, int]:
    """The numbers above and the method as its C enum code (the method already checked)."""
    return (*_landmark_numbers(a), a.method_code)


class NativeLibrary:
    """ctypes front door of libfna.so. CPU methods take and return torch tensors."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._lib = ctypes.CDLL(str(self.path))
            _bind(self._lib)
        except (OSError, AttributeError) as exc:
            raise NativeLibraryError(
                f"cannot load {self.path} ({str(exc).splitlines()[0]}); rebuild it with `fna-deploy plugin build`"
            ) from None
        abi = self._lib.fna_abi_version()
        if abi != ABI_VERSION:
            raise NativeLibraryError(
                f"{self.path} has C API version {abi}, this fna_deploy needs {ABI_VERSION}; "
                "rebuild it with `fna-deploy plugin build`"
            )
        self.built_with_cuda = bool(self._lib.fna_built_with_cuda())
        self.cuda_registered = False

    def _error(self) -> str:
        return (self._lib.fna_last_error() or b"unknown error").decode(errors="replace")

    def _check(self, rc: int, error: type = ValueError) -> None:
        if rc != 0:
            raise error(self._error())

    # ---- attribute checks (the same code the TensorRT creators run)
    def check_landmark_attrs(self, *attrs: Any, **fields: Any) -> None:
        """The C++ check of one LandmarkAttrs (or its fields, num_landmarks required, as the contract says)."""
        a = LandmarkAttrs.of(*attrs) if attrs else LandmarkAttrs(**fields)
        self._check(self._lib.fna_check_landmark_attrs(*_landmark_numbers(a), str(a.method).encode()))

    def contract(self) -> dict[str, Any]:
        """The plugin contract compiled into the library (fna_contract.h), with the fields the
        plugins serialise (``state_fields``); compare with ``fna_deploy.contract``."""
        import json

        fn = self._lib.fna_contract_json
        fn.restype = ctypes.c_char_p
        fn.argtypes = []
        return json.loads(fn().decode())

    def check_nystrom_attrs(self, scale: float = 0.0, pinv_iters: int = 6) -> None:
        self._check(self._lib.fna_check_nystrom_attrs(_float_attr("scale", scale), _int32_attr("pinv_iters", pinv_iters)))

    def landmarks_workspace_size(self, batch: int, num_tokens: int) -> int:
        return int(self._lib.fna_landmarks_workspace_size(batch, num_tokens))

    def nystrom_workspace_size(self, b: int, h: int, n: int, d: int, dv: int, m: int) -> int:
        return int(self._lib.fna_nystrom_workspace_size(b, h, n, d, dv, m))

    # ---- the C++ reference on CPU tensors
    def select_landmarks(self, features, num_landmarks: int, num_prefix: int = 0, scores=None,
                         massive_ratio: float = 0.0, artifact_ratio: float = 0.0, method: str = "fps"):
        import torch

        if not isinstance(features, torch.Tensor) or features.dim() != 3:
            raise ValueError("select_landmarks: features must be a tensor of shape [B, N, D]")
        a = LandmarkAttrs(num_landmarks, num_prefix, massive_ratio, artifact_ratio, method)
        if method not in METHODS:
            raise ValueError(f"select_landmarks: method must be one of {', '.join(METHODS)}, got {method!r}")
        f = features.detach().to("cpu", torch.float32).contiguous()
        b, n, d = f.shape
        s = None
        if scores is not None:
            if not isinstance(scores, torch.Tensor) or tuple(scores.shape) != (b, n):
                raise ValueError(f"select_landmarks: scores must have shape [B, N] = [{b}, {n}]")
            s = scores.detach().to("cpu", torch.float32).contiguous()
        c_args = landmark_c_args(a)
        out = torch.empty((b, max(c_args[0], 0)), dtype=torch.int32)
        rc = self._lib.fna_landmarks_cpu(f.data_ptr(), s.data_ptr() if s is not None else None, b, n, d, *c_args, out.data_ptr())
        self._check(rc)
        return out

    def nystrom_attention(self, q, k, v, idx, scale: Optional[float] = None, pinv_iters: int = 6):
        import torch

        for name, t in (("q", q), ("k", k), ("v", v)):
            if not isinstance(t, torch.Tensor) or t.dim() != 4:
                raise ValueError(f"nystrom_attention: {name} must be a tensor of shape [B, H, N, d]")
        if not isinstance(idx, torch.Tensor) or idx.dim() != 2:
            raise ValueError("nystrom_attention: idx must be a tensor of shape [B, m]")
        if scale is not None and (not isinstance(scale, (int, float)) or isinstance(scale, bool)
                                  or not math.isfinite(scale) or scale <= 0):
            raise ValueError(f"nystrom_attention: scale must be a positive number or None, got {scale!r}")
        qc, kc, vc = (t.detach().to("cpu", torch.float32).contiguous() for t in (q, k, v))
        if kc.shape != qc.shape or vc.shape[:3] != qc.shape[:3]:
            raise ValueError(
                f"nystrom_attention: q {tuple(qc.shape)}, k {tuple(kc.shape)}, v {tuple(vc.shape)} do not match"
            )
        ic = idx.detach().to("cpu", torch.int32).contiguous()
        b, h, n, d = qc.shape
        dv = vc.shape[-1]
        out = torch.empty((b, h, n, dv), dtype=torch.float32)
        rc = self._lib.fna_nystrom_cpu(qc.data_ptr(), kc.data_ptr(), vc.data_ptr(), ic.data_ptr(), b, h, n, d, dv,
                                       ic.shape[1], float(scale or 0.0), _int32_attr("pinv_iters", pinv_iters),
                                       out.data_ptr())
        self._check(rc)
        return out

    # ---- CUDA kernels on device tensors: the torch side (the CUDA implementation of the custom
    # ops and its registration) lives beside the ops, in fna_deploy/ops/native_kernels.py
    def call(self, name: str, *args: Any, error: type = RuntimeError) -> None:
        """Call C API function ``name`` (bound in _bind) and raise ``error`` with its message when it fails."""
        self._check(getattr(self._lib, name)(*args), error)

    def landmarks_cuda(self, features, scores, *attrs):
        from .ops.native_kernels import landmarks_cuda

        return landmarks_cuda(self, features, scores, *attrs)

    def nystrom_cuda(self, q, k, v, idx, scale: float, pinv_iters: int):
        from .ops.native_kernels import nystrom_cuda

        return nystrom_cuda(self, q, k, v, idx, scale, pinv_iters)

    def register_cuda_kernels(self) -> bool:
        """Make these kernels the CUDA implementation of fna::landmarks / fna::nystrom_attention."""
        from .ops.native_kernels import register_cuda_kernels

        return register_cuda_kernels(self)


_LOADED: dict[Path, NativeLibrary] = {}


def load(path: "Path | str | None" = None, *, register_cuda: bool = True) -> NativeLibrary:
    """Load libfna.so (default: the one `fna-deploy plugin build` made) and, when CUDA is
    present, register its CUDA kernels for the fna custom ops. Cached per path."""
    if path is None:
        found = find_library()
        if found is None:
            raise NativeLibraryError(
                f"the native fna library is not built (looked in {default_build_dir()}); run `fna-deploy plugin build`"
            )
        lib_path = found
    else:
        lib_path = Path(path).expanduser()
        if lib_path.is_dir():
            found = find_library(lib_path)
            if found is None:
                raise NativeLibraryError(f"no {LIBRARY_NAME} in {lib_path}; run `fna-deploy plugin build -o {lib_path}`")
            lib_path = found
        elif not lib_path.is_file():
            raise NativeLibraryError(f"{lib_path} does not exist; run `fna-deploy plugin build` to build the library")
    lib_path = lib_path.resolve()
    lib = _LOADED.get(lib_path)
    if lib is None:
        lib = _LOADED[lib_path] = NativeLibrary(lib_path)
    if register_cuda and not lib.cuda_registered:
        lib.register_cuda_kernels()
    return lib


def registered_cuda_library() -> Optional[NativeLibrary]:
    """The loaded library whose CUDA kernels the fna custom ops dispatch to (the last one
    registered), or None while the ops run the PyTorch reference on CUDA."""
    registered = [lib for lib in _LOADED.values() if lib.cuda_registered]
    return registered[-1] if registered else None


# the CMake build lives in native_build.py (imported last: it reads the locations above)
from .native_build import BuildResult, build, check_tensorrt_include  # noqa: E402

__all__ = [
    "BuildResult",
    "NativeLibrary",
    "NativeLibraryError",
    "build",
    "check_tensorrt_include",
    "default_build_dir",
    "find_library",
    "find_trt_plugin",
    "registered_cuda_library",
    "load",
    "read_build_info",
]
