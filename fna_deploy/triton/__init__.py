"""Triton Inference Server: model repositories, a local server, a client.

Three backends for one exported model:

- ``tensorrt``: a TensorRT engine (``.plan``) built by ``fna-deploy build``; its tensors and
  optimisation profile come from the engine's JSON sidecar (``fna_deploy.trt.EngineSidecar``,
  validated by :func:`engine_io`).
- ``onnxruntime``: the portable ONNX (fna ops carry ONNX function bodies), optionally with the
  TensorRT execution accelerator and the fna plugin library.
- ``python``: the portable ONNX run by ONNX Runtime inside a generated Python-backend
  ``model.py``; works on CPU-only machines and with the tritonserver bundled in nvidia-pytriton.

Every ``config.pbtxt`` is rendered from and parsed back with Triton's own ``ModelConfig``
protobuf (shipped by tritonclient) and validated before anything is written; a repository is
staged in a temporary folder and renamed into place, and an existing model is only replaced
with ``force``.

Server helpers find ``tritonserver`` (PATH, else the nvidia-pytriton wheel), start it on
127.0.0.1 only, wait for readiness and stop it (SIGTERM, then SIGKILL of its process group).

Layout (one module per job):

- ``common``: the backends, the loopback address, defaults;
- ``tensors``: an artifact's tensors (engine sidecar, ONNX inputs/outputs and metadata);
- ``config``: ``config.pbtxt`` (build, render, parse, check);
- ``repository``: ``write_repository`` and the repository checks, tritonserver/perf_analyzer commands;
- ``server``: find, start, wait for and stop a local ``tritonserver``;
- ``client``: an HTTP client for a running server.
"""

from __future__ import annotations

from .common import BACKENDS, LOOPBACK, DEFAULT_MAX_BATCH, TRITONCLIENT_HINT
from .tensors import EngineSidecar, TensorSpec, EngineIO, sidecar_path, engine_io, load_sidecar, OnnxInfo, onnx_info
from .config import NAME_RE, parse_config, render_config, validate_name, validate_version, RepositoryOptions, build_config, check_config
from .repository import MARKER, is_fna_model_folder, default_name, PYTHON_MODEL, RepositoryReport, server_command, perf_analyzer_command, write_repository, repository_plugins, check_repository
from .server import cause_line, check_backends, model_backends, free_port, port_in_use, ServerBinary, locate_tritonserver, probe_tritonserver, server_backends, ServerError, TritonServer
from .client import normalise_url, InferResult, TritonHttpClient

__all__ = [
    "cause_line",
    "check_backends",
    "model_backends",
    "MARKER",
    "is_fna_model_folder",
    "BACKENDS",
    "DEFAULT_MAX_BATCH",
    "EngineIO",
    "EngineSidecar",
    "InferResult",
    "LOOPBACK",
    "NAME_RE",
    "OnnxInfo",
    "PYTHON_MODEL",
    "RepositoryOptions",
    "RepositoryReport",
    "ServerBinary",
    "ServerError",
    "TRITONCLIENT_HINT",
    "TensorSpec",
    "TritonHttpClient",
    "TritonServer",
    "build_config",
    "check_config",
    "check_repository",
    "default_name",
    "engine_io",
    "free_port",
    "load_sidecar",
    "locate_tritonserver",
    "normalise_url",
    "onnx_info",
    "parse_config",
    "perf_analyzer_command",
    "port_in_use",
    "probe_tritonserver",
    "render_config",
    "repository_plugins",
    "server_backends",
    "server_command",
    "sidecar_path",
    "validate_name",
    "validate_version",
    "write_repository",
]
