"""A local tritonserver: find it (PATH, else the nvidia-pytriton wheel), start it on 127.0.0.1 only,
wait for readiness, stop it (SIGTERM, then SIGKILL of its process group)."""

from __future__ import annotations

from ..errors import FnaDeployError

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from .common import LOOPBACK, TRITONCLIENT_HINT
from .repository import repository_plugins


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return True
    return False


@dataclass
class ServerBinary:
    """A tritonserver executable and what it needs to run."""

    path: Path
    bundled: bool  # from the nvidia-pytriton wheel
    env: dict[str, str]
    backend_source: Optional[Path] = None  # bundled python backend (needs a per-server backends dir)
    stub: Optional[Path] = None  # python backend stub for this interpreter
    cache_dir: Optional[Path] = None

    def describe(self) -> str:
        return f"{self.path} ({'bundled in nvidia-pytriton' if self.bundled else 'from PATH'})"


def locate_tritonserver() -> ServerBinary:
    """``tritonserver`` from PATH, else the one bundled in nvidia-pytriton; FileNotFoundError says how to get one."""
    on_path = shutil.which("tritonserver")
    if on_path:
        return ServerBinary(Path(on_path), False, {})
    try:
        import importlib.util

        spec = importlib.util.find_spec("pytriton")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            2, f"no tritonserver on PATH and nvidia-pytriton is not installed ({TRITONCLIENT_HINT}, or use the Triton container)", "tritonserver"
        )
    root = Path(list(spec.submodule_search_locations)[0])
    dist = root / "tritonserver"
    binary = dist / "bin" / "tritonserver"
    if not binary.is_file():
        raise FileNotFoundError(2, "nvidia-pytriton is installed but holds no tritonserver binary", str(binary))
    libs = root.parent / "nvidia_pytriton.libs"
    if not libs.is_dir():
        libs = dist / "external_libs"  # editable installs
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    stub = dist / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise FileNotFoundError(2, f"nvidia-pytriton has no Python backend stub for Python {version}", str(stub))
    pylib = sysconfig.get_config_var("LIBDIR") or str(Path(sys.executable).resolve().parent.parent / "lib")
    ld = ":".join(p for p in (pylib, str(libs), os.environ.get("LD_LIBRARY_PATH", "")) if p)
    env = {"LD_LIBRARY_PATH": ld, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    return ServerBinary(binary, True, env, dist / "backends", stub, dist / "caches")


def server_backends(binary: ServerBinary) -> list[str]:
    """The backends a tritonserver has: the bundled server's (nvidia-pytriton: python only), or the
    folders of ``backends/`` beside a server's ``bin/`` (the Triton container's layout)."""
    folder = binary.backend_source if binary.bundled else binary.path.resolve().parent.parent / "backends"
    if folder is None or not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if p.is_dir())


def probe_tritonserver(binary: Optional[ServerBinary] = None) -> Optional[str]:
    """None when the tritonserver binary can run here (``--help`` answers), else why not."""
    try:
        binary = binary or locate_tritonserver()
    except FileNotFoundError as exc:
        return f"{exc.strerror}: {exc.filename}"
    try:
        done = subprocess.run([str(binary.path), "--help"], capture_output=True, text=True, timeout=60,
                              env={**os.environ, **binary.env})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{binary.path} cannot run: {exc}"
    text = (done.stdout or "") + (done.stderr or "")
    if "--model-repository" in text:
        return None
    last = text.strip().splitlines()[-1] if text.strip() else f"exit code {done.returncode}, no output"
    return f"{binary.path} cannot run: {last}"


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: SIGTERM the server when the process that started it dies (no orphaned servers)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class ServerError(FnaDeployError, RuntimeError):
    """tritonserver did not start, or stopped; the message ends with the log's last lines.
    ``cause`` is the server's own line that says why (see :func:`cause_line`), when it wrote one."""

    def __init__(self, message: str, cause: Optional[str] = None) -> None:
        super().__init__(message)
        self.cause = cause


_LOG_PREFIX = re.compile(r"^[EWI]\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ [^\]]+\] ")


def cause_line(log: str) -> Optional[str]:
    """The line of a tritonserver log that says why it did not come up: the first error about a
    model that failed to load, else the first error line (Triton's E... prefix removed)."""
    errors = [line.strip() for line in log.splitlines() if line.startswith("E") and _LOG_PREFIX.match(line)]
    errors += [line.strip() for line in log.splitlines() if line.startswith("error:")]
    # CPU-only machines log these on every start; they are never the reason a server did not come up
    benign = ("CudaDriverHelper", "pinned system memory", "peer access", "CUDA driver", "GPU")
    errors = [line for line in errors if not any(b in line for b in benign)]
    if not errors:
        return None
    loading = [line for line in errors if "failed to load" in line or "unable to find backend" in line.lower()]
    return _LOG_PREFIX.sub("", (loading or errors)[0]).strip()


def explicit_models_args(models: Sequence[str]) -> list[str]:
    """tritonserver's flags that load only ``models`` (explicit model control), as --load-model does."""
    return ["--model-control-mode=explicit", *(f"--load-model={name}" for name in models)] if models else []


def model_backends(repository: "str | os.PathLike[str]") -> dict[str, str]:
    """model name -> the backend its config.pbtxt needs (tensorrt, onnxruntime, python, ...)."""
    from .config import read_config

    platforms = {"tensorrt_plan": "tensorrt", "onnxruntime_onnx": "onnxruntime", "pytorch_libtorch": "pytorch"}
    needed = {}
    for config_path in sorted(Path(repository).glob("*/config.pbtxt")):
        if config_path.parent.name.startswith("."):
            continue
        config = read_config(config_path)
        needed[config_path.parent.name] = config.backend or platforms.get(config.platform, config.platform)
    return needed


def check_backends(repository: "str | os.PathLike[str]", binary: ServerBinary, models: Sequence[str] = ()) -> None:
    """ValueError naming the first model (of ``models``; all when empty) whose backend the server
    lacks (before starting it)."""
    available = server_backends(binary)
    if not available:
        return  # a server whose backends folder we cannot see: let it say so itself
    for name, backend in model_backends(repository).items():
        if models and name not in models:
            continue
        if backend not in available and backend != "ensemble":  # ensembles are Triton's own, no backend
            bundled = " (the tritonserver bundled in nvidia-pytriton has only the python backend)" if binary.bundled else ""
            raise ValueError(
                f"model {name!r} needs the {backend} backend, but {binary.path} has only: {', '.join(available)}{bundled}; "
                f"write the repository with 'fna-deploy triton ... --backend {available[0]}', serve only the others "
                f"(--model NAME), or serve it with a Triton that has {backend}"
            )


class TritonServer:
    """A tritonserver process on 127.0.0.1 serving ``repository``; a context manager.

    Ports default to free ones. ``start`` waits until ``/v2/health/ready`` answers 200 (all
    models loaded) and raises ServerError with the log's tail if the process exits first.
    ``stop`` sends SIGTERM and, after ``stop_timeout`` seconds, SIGKILL to the process group.
    """

    def __init__(
        self,
        repository: "str | os.PathLike[str]",
        *,
        http_port: Optional[int] = None,
        grpc_port: Optional[int] = None,
        metrics_port: Optional[int] = None,
        binary: Optional[ServerBinary] = None,
        plugins: Optional[Sequence[str]] = None,
        log_path: "str | os.PathLike[str] | None" = None,
        verbose: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.repository = Path(repository).resolve()
        ports = [p for p in (http_port, grpc_port, metrics_port) if p is not None]
        if len(set(ports)) != len(ports):
            raise ValueError(f"the HTTP, gRPC and metrics ports must differ, got {ports}")
        for port in ports:
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise ValueError(f"port must be 1-65535, got {port!r}")
        self.http_port = http_port or free_port()
        self.grpc_port = grpc_port or self._other_free_port({self.http_port})
        self.metrics_port = metrics_port or self._other_free_port({self.http_port, self.grpc_port})
        self.binary = binary or locate_tritonserver()
        self.plugins = list(repository_plugins(self.repository) if plugins is None else plugins)
        self.verbose = verbose
        self.extra_args = list(extra_args)
        self._workdir: Optional[Path] = None
        self._own_log = log_path is None
        self.log_path = Path(log_path) if log_path else None
        self.process: Optional[subprocess.Popen] = None
        self._log_file = None

    @staticmethod
    def _other_free_port(taken: set[int]) -> int:
        for _ in range(50):
            port = free_port()
            if port not in taken:
                return port
        raise ServerError("could not find a free port on 127.0.0.1")

    @property
    def http_url(self) -> str:
        return f"{LOOPBACK}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{LOOPBACK}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        args = [
            str(self.binary.path),
            f"--model-repository={self._repository_arg()}",
            f"--http-address={LOOPBACK}",
            f"--http-port={self.http_port}",
            f"--grpc-address={LOOPBACK}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={LOOPBACK}",
            f"--metrics-port={self.metrics_port}",
            "--exit-timeout-secs=10",
            "--strict-readiness=true",
            # python backend shared memory regions must not collide with another server's
            f"--backend-config=python,shm-region-prefix-name=fna_{os.getpid()}_{self.http_port}_",
        ]
        if self.binary.bundled and self._workdir is not None:
            args += [f"--backend-directory={self._workdir / 'backends'}"]
            if self.binary.cache_dir is not None:
                args.append(f"--cache-directory={self.binary.cache_dir}")
        if self.plugins:
            args.append(f"--backend-config=tensorrt,plugins={';'.join(self.plugins)}")
        if self.verbose:
            args.append("--log-verbose=1")
        return args + self.extra_args

    def _repository_arg(self) -> Path:
        """The repository as the server sees it: a path with spaces or other odd characters goes
        through a plain-named link in the server's work folder (backends split such paths)."""
        if re.fullmatch(r"[A-Za-z0-9_./+-]+", str(self.repository)) or self._workdir is None:
            return self.repository
        link = self._workdir / "repository"
        if not link.is_symlink():
            os.symlink(self.repository, link)
        return link

    def _prepare_backends(self) -> None:
        """The bundled server needs a backends folder whose python backend holds this Python's stub."""
        self._workdir = Path(tempfile.mkdtemp(prefix="fna-triton-"))
        if not self.binary.bundled:
            return
        python_dir = self._workdir / "backends" / "python"
        python_dir.mkdir(parents=True)
        assert self.binary.backend_source is not None and self.binary.stub is not None
        for item in (self.binary.backend_source / "python").iterdir():
            if item.is_file():
                os.symlink(item, python_dir / item.name)
        os.symlink(self.binary.stub, python_dir / "triton_python_backend_stub")

    def start(self, timeout: float = 120.0) -> "TritonServer":
        if self.process is not None:
            raise ServerError("this server was already started")
        for port in (self.http_port, self.grpc_port, self.metrics_port):
            if port_in_use(port):
                raise ValueError(f"port {port} on {LOOPBACK} is already in use; choose another")
        try:
            self._prepare_backends()
            assert self._workdir is not None
            if self.log_path is None:
                self.log_path = self._workdir / "tritonserver.log"
            self._log_file = open(self.log_path, "ab")
        except BaseException:
            self._cleanup_files(keep_log=False)  # e.g. a --log path that cannot be written: nothing left
            raise
        env = {**os.environ, **self.binary.env}
        try:
            self.process = subprocess.Popen(
                self.command(), stdout=self._log_file, stderr=subprocess.STDOUT, env=env,
                cwd=self._workdir, start_new_session=True,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )
        except OSError as exc:
            self._cleanup_files(keep_log=False)
            raise ServerError(f"could not run {self.binary.path}: {exc.strerror}") from None
        except BaseException:
            self._cleanup_files(keep_log=False)
            raise
        try:
            self.wait_ready(timeout)
        except ServerError:
            self.stop(keep_log=True)  # the server failed on its own: its log stays for inspection
            raise
        except BaseException:
            self.stop()  # interrupted: nothing is left behind
            raise
        return self

    def log_tail(self, lines: int = 15) -> str:
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.http_url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError, ValueError):
            return False

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is None:
                raise ServerError("the server is not running")
            code = self.process.poll()
            if code is not None:
                if self._log_file is not None:
                    self._log_file.flush()
                log = self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""
                raise ServerError(f"tritonserver exited with code {code} before it was ready; log tail:\n{self.log_tail()}",
                                  cause=cause_line(log))
            if self.is_ready():
                return
            time.sleep(0.25)
        log = self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""
        raise ServerError(f"tritonserver was not ready after {timeout:.0f} s; log tail:\n{self.log_tail()}", cause=cause_line(log))

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout: float = 20.0, keep_log: bool = False) -> Optional[int]:
        """SIGTERM, wait up to ``timeout`` s, then SIGKILL the server's process group; returns its exit code."""
        code = None
        if self.process is not None:
            if self.process.poll() is None:
                try:
                    self.process.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
                try:
                    self.process.wait(timeout)
                except subprocess.TimeoutExpired:
                    try:
                        os.killpg(self.process.pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                    self.process.wait(10)
            code = self.process.returncode
            # python backend stubs live in the server's group: none may outlive it
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._cleanup_files(keep_log=keep_log)
        return code

    def _cleanup_files(self, keep_log: bool = False) -> None:
        """Remove the work folder on every path; with ``keep_log``, a log that lived in it is moved
        out first (fna-triton-PID-PORT.log in the temporary folder) and ``log_path`` follows it."""
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._workdir is not None:
            own_log = self.log_path is not None and self._workdir in self.log_path.parents
            if own_log and keep_log and self.log_path.exists():
                kept = Path(tempfile.gettempdir()) / f"fna-triton-{os.getpid()}-{self.http_port}.log"
                shutil.move(str(self.log_path), kept)
                self.log_path = kept
            elif own_log:
                self.log_path = None
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> "TritonServer":
        return self.start() if self.process is None else self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
