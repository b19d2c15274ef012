"""Model repositories: one model folder per artifact (tensorrt, onnxruntime or python backend), staged
in a temporary folder and renamed into place; the tritonserver and perf_analyzer commands for it."""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

from .._version import __version__
from ..utils import current_umask, replace_folder_atomic
from .common import BACKENDS, LOOPBACK
from .config import (RepositoryOptions, build_config, check_config, parse_config, read_config, render_config, validate_name,
                     validate_version)
from .tensors import EngineIO, TensorSpec, load_sidecar, onnx_info, sidecar_path


def default_name(artifact: "str | os.PathLike[str]") -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(artifact).stem).strip("._-") or "model"
    return stem[:128]


PYTHON_MODEL = '''\
"""Triton Python backend: runs model.onnx (fna-deploy portable export) with ONNX Runtime.

Written by fna-deploy; the fna ops carry ONNX function bodies, so stock ONNX Runtime runs them.
Requests of one batch are concatenated, run once and split back.
"""

import json
import os

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


# The python backend stubs of Triton 2.5x (nvidia-pytriton 0.7) were built against numpy 1.x: with
# numpy 2 pb_utils.Tensor(name, array) sends an empty buffer and as_numpy() misreads inputs, so tensors go through DLPack there
# (and with numpy 1.x DLPack crashes the stub, so the plain constructor stays for it).
if int(np.__version__.split(".")[0]) >= 2:
    def _tensor(name, array):
        return pb_utils.Tensor.from_dlpack(name, array)

    def _array(tensor):
        return np.from_dlpack(tensor)
else:
    def _tensor(name, array):
        return pb_utils.Tensor(name, array)

    def _array(tensor):
        return tensor.as_numpy()


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        here = os.path.join(args["model_repository"], args["model_version"])
        self.inputs = [(t["name"], pb_utils.triton_string_to_numpy(t["data_type"])) for t in config["input"]]
        self.outputs = [t["name"] for t in config["output"]]
        self.batched = config.get("max_batch_size", 0) > 0
        options = ort.SessionOptions()
        options.log_severity_level = 3
        threads = config.get("parameters", {}).get("intra_op_threads", {}).get("string_value")
        if threads:
            options.intra_op_num_threads = int(threads)
        providers = ["CPUExecutionProvider"]
        if args.get("model_instance_kind") == "GPU" and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(args.get("model_instance_device_id", 0))}))
        self.session = ort.InferenceSession(os.path.join(here, "model.onnx"), options, providers=providers)

    def execute(self, requests):
        feeds = {name: [] for name, _ in self.inputs}
        sizes = []
        for request in requests:
            for name, dtype in self.inputs:
                array = _array(pb_utils.get_input_tensor_by_name(request, name)).astype(dtype, copy=False)
                feeds[name].append(array)
            sizes.append(feeds[self.inputs[0][0]][-1].shape[0] if self.batched else 1)
        try:
            if self.batched:
                joined = {name: np.concatenate(arrays, axis=0) for name, arrays in feeds.items()}
                results = self.session.run(self.outputs, joined)
                bounds = np.cumsum([0] + sizes)
                per_request = [[r[bounds[i]:bounds[i + 1]] for r in results] for i in range(len(requests))]
            else:
                per_request = [self.session.run(self.outputs, {n: a[i] for n, a in feeds.items()}) for i in range(len(requests))]
        except Exception as exc:  # one failed run answers every request of the batch with the error
            error = pb_utils.TritonError(f"ONNX Runtime failed: {exc}")
            return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
        return [
            pb_utils.InferenceResponse([_tensor(name, np.ascontiguousarray(value)) for name, value in zip(self.outputs, values)])
            for values in per_request
        ]

    def finalize(self):
        self.session = None
'''


@dataclass
class RepositoryReport:
    repository: str
    name: str
    backend: str
    version: int
    model_dir: str
    config_path: str
    files: list[str]
    max_batch_size: int
    inputs: list[dict]
    outputs: list[dict]
    plugin: Optional[str] = None
    server_command: str = ""
    perf_analyzer_command: str = ""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _artifact_tensors(artifact: Path, backend: str) -> tuple[list[TensorSpec], list[TensorSpec], Optional[tuple[int, int, int]], dict[str, str], list[str], Optional[EngineIO]]:
    if backend == "tensorrt":
        if artifact.suffix not in (".plan", ".engine"):
            raise ValueError(f"the tensorrt backend serves an engine (.plan from fna-deploy build), got {artifact.name!r}")
        engine = load_sidecar(artifact)
        if json.loads(sidecar_path(artifact).read_text()).get("runtime") == "tensorrt-rtx":
            raise ValueError(
                f"{artifact.name!r} was built with TensorRT-RTX, and Triton's tensorrt backend loads plans with TensorRT, "
                "which cannot read it; build the engine on the serving GPU with 'fna-deploy build MODEL.onnx --runtime "
                "tensorrt' and serve that, or serve the portable ONNX export with --backend onnxruntime or python"
            )
        profile = (engine.min_batch, engine.opt_batch, engine.max_batch) if engine.dynamic_batch else None
        params = {"fna_fp16": str(engine.fp16).lower()}
        if engine.fna_config is not None:
            params["fna_config"] = json.dumps(engine.fna_config, sort_keys=True)
        if engine.random_seed is not None:
            params["fna_random_seed"] = str(engine.random_seed)
        return engine.inputs, engine.outputs, profile, params, [], engine
    if artifact.suffix != ".onnx":
        raise ValueError(f"the {backend} backend serves a portable .onnx export, got {artifact.name!r}")
    info = onnx_info(artifact)
    target = info.metadata.get("fna_target")
    if target == "trt":
        raise ValueError(
            f"{artifact.name!r} is a trt-target export (fna nodes without ONNX bodies); "
            "serve the portable export with onnxruntime/python, or build an engine for the tensorrt backend"
        )
    # the export's metadata as config parameters, all prefixed fna_ so no backend mistakes them for its own
    params = {k if k.startswith("fna_") else f"fna_{k}": info.metadata[k]
              for k in ("fna_config", "fna_target", "model_spec", "input_shape", "fp16", "preprocess", "random_seed") if info.metadata.get(k)}
    return info.inputs, info.outputs, None, params, info.external_data, None


def server_command(repository: "str | os.PathLike[str]", plugins: Sequence[str] = ()) -> str:
    """The tritonserver command for ``repository`` (loopback only), with TensorRT plugins."""
    parts = [
        "tritonserver",
        f"--model-repository={Path(repository).resolve()}",
        f"--http-address={LOOPBACK}",
        f"--grpc-address={LOOPBACK}",
        f"--metrics-address={LOOPBACK}",
    ]
    if plugins:
        parts.append(f"--backend-config=tensorrt,plugins={';'.join(plugins)}")
    return " ".join(_quote(p) for p in parts)


def _quote(text: str) -> str:
    import shlex

    return shlex.quote(text)


def perf_analyzer_command(name: str, *, url: str = f"{LOOPBACK}:8000", max_concurrency: int = 16, batch: int = 1,
                          input_shape: Optional[Sequence[int]] = None, input_name: str = "images") -> str:
    """perf_analyzer concurrency sweep (1 to ``max_concurrency`` in strides of 2), p95 latency, CSV report."""
    parts = [
        "perf_analyzer", "-m", name, "-u", url, "-i", "http", "-b", str(batch),
        "--concurrency-range", f"1:{max_concurrency}:2", "--stability-percentage", "10",
        "--measurement-interval", "5000", "--percentile", "95", "-f", f"{name}_perf.csv",
    ]
    if input_shape is not None and any(d == -1 for d in input_shape):
        raise ValueError("perf_analyzer needs a concrete input shape; give one without -1")
    if input_shape is not None:
        parts += ["--shape", f"{input_name}:{','.join(map(str, input_shape))}"]
    return " ".join(_quote(p) for p in parts)


MARKER = ".fna-deploy-model"  # in every model folder fna-deploy writes; --force replaces only those


def _digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def marker_problem(folder: "str | os.PathLike[str]") -> Optional[str]:
    """Why ``folder`` is not a model folder fna-deploy wrote, or None when it is. The marker must
    prove more than its existence: a JSON record by fna-deploy naming this folder and holding the
    SHA-256 of the folder's config.pbtxt (an empty or copied marker proves nothing)."""
    folder = Path(folder)
    marker = folder / MARKER
    if folder.is_symlink() or not folder.is_dir():
        return "not a folder"
    if marker.is_symlink() or not marker.is_file():
        return f"no {MARKER} in it"
    try:
        record = json.loads(marker.read_text())
    except (ValueError, OSError):
        return f"its {MARKER} is not fna-deploy's JSON record"
    if not isinstance(record, dict) or record.get("written_by") != "fna-deploy":
        return f"its {MARKER} is not fna-deploy's JSON record"
    if "config_sha256" not in record or "name" not in record:
        return f"its {MARKER} predates the checked marker (no name and config digest)"
    if record.get("name") != folder.name:
        return f"its {MARKER} was written for a model named {record.get('name')!r}"
    config = folder / "config.pbtxt"
    if config.is_symlink() or not config.is_file() or _digest(config) != record.get("config_sha256"):
        return f"its config.pbtxt is not the one its {MARKER} records"
    return None


def is_fna_model_folder(folder: "str | os.PathLike[str]") -> bool:
    """Whether ``folder`` is a model folder fna-deploy wrote (its marker checks out: :func:`marker_problem`)."""
    return marker_problem(folder) is None


def write_marker(folder: Path, name: str, **fields: Any) -> None:
    """The marker of a model folder staged in ``folder`` that will be named ``name``: fna-deploy's
    JSON record with the name and the SHA-256 of its config.pbtxt (write the config first)."""
    record = {"written_by": "fna-deploy", "version": __version__, **fields, "name": name, "config_sha256": _digest(folder / "config.pbtxt")}
    (folder / MARKER).write_text(json.dumps(record) + "\n")


def check_target(target: Path, force: bool) -> None:
    """The rules for an existing model folder: refused without ``force``; with it, replaced only
    when fna-deploy wrote it."""
    if not (target.exists() or target.is_symlink()):
        return
    if not force:
        raise FileExistsError(17, "model already in the repository (use --force to replace it)", str(target))
    problem = marker_problem(target)
    if problem is not None:
        raise ValueError(
            f"{str(target)!r} was not written by fna-deploy ({problem}), so --force does not replace it; if it is yours, or "
            f"an older fna-deploy wrote it, adopt it by moving it away (mv {_quote(str(target))} ELSEWHERE) and rerun, "
            "or choose another --name"
        )


def write_repository(
    artifact: "str | os.PathLike[str]",
    repository: "str | os.PathLike[str]",
    options: RepositoryOptions,
    *,
    force: bool = False,
) -> RepositoryReport:
    """Write ``repository/NAME`` for ``artifact`` (a .plan for tensorrt, a portable .onnx otherwise).

    The model folder is staged in a temporary folder inside ``repository`` and renamed into
    place: a failure leaves the repository as it was. An existing ``NAME`` folder is replaced
    only with ``force`` and only when fna-deploy wrote it (its marker file); other models in the
    repository are never touched, and a failed write removes only what it created.

    Layout::

        REPO/NAME/config.pbtxt
        REPO/NAME/VERSION/model.plan             tensorrt
        REPO/NAME/VERSION/model.onnx[.data]      onnxruntime, python
        REPO/NAME/VERSION/model.py               python
        REPO/NAME/plugins/LIB.so                 with a plugin library
    """
    artifact = Path(artifact)
    repository = Path(repository)
    if not artifact.is_file():
        raise FileNotFoundError(2, "artifact not found", str(artifact))
    validate_name(options.name)
    validate_version(options.version)
    if options.backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {options.backend!r}")
    if repository.exists() and not repository.is_dir():
        raise NotADirectoryError(20, "repository path is not a directory", str(repository))
    if not repository.parent.exists() and not repository.exists():
        raise FileNotFoundError(2, "the repository's parent folder does not exist", str(repository.parent))
    target = repository / options.name
    check_target(target, force)  # early, before any work; again under the lock at the swap

    inputs, outputs, profile, params, external, sidecar = _artifact_tensors(artifact, options.backend)
    plugin = options.plugin or (sidecar.plugin if sidecar is not None and sidecar.plugin else None)
    notes: list[str] = []
    if plugin is not None:
        if options.backend == "python":
            raise ValueError("the python backend runs the portable ONNX with ONNX Runtime and takes no plugin library")
        from ..native import check_plugin_library

        if options.plugin is None and not Path(plugin).is_file():  # from the sidecar: the engine may have moved machines
            raise FileNotFoundError(2, "the engine's plugin library (named in its sidecar) is missing; pass --plugin", str(plugin))
        # only a shared library named like the fna plugin is copied into the repository (and later loaded by the server)
        check_plugin_library(plugin, "--plugin" if options.plugin else f"the plugin named in {artifact.name}.json,")
    if options.backend == "tensorrt":
        from ..trt import engine_runs_here

        reason = engine_runs_here(artifact)
        if reason:
            notes.append(f"this engine cannot run on this machine: {reason}")
    if options.backend == "tensorrt" and sidecar is not None and sidecar.plugin is None and options.plugin is None:
        notes.append("the engine sidecar names no plugin library: serving works only if the engine holds no fna plugin layers")
    final_plugin = str((target / "plugins" / Path(plugin).name).resolve()) if plugin else None
    config = build_config(options, inputs, outputs, profile=profile, plugin_path=final_plugin, parameters=params)
    text = (
        f"# Triton model config written by fna-deploy for {artifact.name} ({options.backend} backend);\n"
        "# checked by parsing it back with Triton's ModelConfig protobuf.\n" + render_config(config)
    )
    check_config(parse_config(text), inputs=inputs, outputs=outputs, profile=profile)

    created_repository = not repository.exists()
    repository.mkdir(parents=False, exist_ok=True)
    def populate(staging: Path) -> None:
        version_dir = staging / str(options.version)
        version_dir.mkdir()
        if options.backend == "tensorrt":
            shutil.copy2(artifact, version_dir / "model.plan")
        else:
            shutil.copy2(artifact, version_dir / "model.onnx")
            for name in external:
                source = artifact.parent / name
                if not source.is_file():
                    raise FileNotFoundError(2, "external weights of the ONNX model are missing", str(source))
                if Path(name).name != name:
                    raise ValueError(f"external data {name!r} lives in a subfolder; re-export with the weights beside the model")
                shutil.copy2(source, version_dir / name)
            if options.backend == "python":
                (version_dir / "model.py").write_text(PYTHON_MODEL)
        for copied in version_dir.iterdir():  # the server may run as another user: 0644, whatever the source had
            os.chmod(copied, 0o666 & ~current_umask())
        if plugin:
            (staging / "plugins").mkdir()
            shutil.copy2(plugin, staging / "plugins" / Path(plugin).name)
        (staging / "config.pbtxt").write_text(text)
        write_marker(staging, options.name, artifact=artifact.name)

    written = False
    try:
        # staged, then swapped in under the repository's writer lock: the name check and the rename
        # are one step for every process, so of concurrent writers of one name exactly one wins
        replace_folder_atomic(target, populate, check=lambda t: check_target(t, force))
        written = True
    finally:
        if not written and created_repository:
            try:  # a repository this call created goes again, but only while it is empty: another
                repository.rmdir()  # process may have written its own models into it meanwhile
            except OSError:
                pass

    files = sorted(str(p) for p in target.rglob("*") if p.is_file())
    plugins = [final_plugin] if (final_plugin and options.backend == "tensorrt") else []
    input_shape = [max(1, d) for d in inputs[0].shape[1:]] if any(d == -1 for d in inputs[0].shape[1:]) else None
    report = RepositoryReport(
        repository=str(repository),
        name=options.name,
        backend=options.backend,
        version=options.version,
        model_dir=str(target),
        config_path=str(target / "config.pbtxt"),
        files=files,
        max_batch_size=config.max_batch_size,
        inputs=[asdict(t) for t in inputs],
        outputs=[asdict(t) for t in outputs],
        plugin=final_plugin,
        server_command=server_command(repository, plugins),
        perf_analyzer_command=perf_analyzer_command(options.name, max_concurrency=16, input_name=inputs[0].name,
                                                    input_shape=input_shape),
        notes=notes,
    )
    if final_plugin and options.backend == "onnxruntime":
        report.notes.append("trt_extra_plugin_lib_paths is an absolute path: rewrite the repository if you move it")
    if plugins:
        report.notes.append(f"alternative to --backend-config: LD_PRELOAD={_quote(final_plugin)} tritonserver ...")
    return report


def repository_plugins(repository: "str | os.PathLike[str]") -> list[str]:
    """Plugin libraries of tensorrt_plan models in ``repository`` (for --backend-config=tensorrt,plugins=)."""
    found = []
    for config_path in sorted(Path(repository).glob("*/config.pbtxt")):
        try:
            config = parse_config(config_path.read_text())
        except (ValueError, OSError):
            continue
        if config.platform == "tensorrt_plan" or config.backend == "tensorrt":
            found += [str(p.resolve()) for p in sorted((config_path.parent / "plugins").glob("*.so*")) if p.is_file()]
    return found


def check_repository(repository: "str | os.PathLike[str]") -> list[str]:
    """The model names of ``repository`` after checking each config parses; ValueError otherwise."""
    repository = Path(repository)
    if not repository.is_dir():
        raise FileNotFoundError(2, "model repository not found", str(repository))
    names = []
    for model_dir in sorted(p for p in repository.iterdir() if p.is_dir() and not p.name.startswith(".")):
        config_path = model_dir / "config.pbtxt"
        if not config_path.is_file():
            raise ValueError(f"{str(model_dir)!r} has no config.pbtxt; is {str(repository)!r} a model repository?")
        config = read_config(config_path)
        if config.name and config.name != model_dir.name:
            raise ValueError(f"model folder {model_dir.name!r} holds a config named {config.name!r}; Triton needs them equal")
        names.append(model_dir.name)
    if not names:
        raise ValueError(f"{str(repository)!r} holds no models (write one with fna-deploy triton)")
    return names
