"""PyTorch as a runtime: which implementation runs the fna ops, CUDA graph capture, and a runner.

On CUDA the fna custom ops run our kernels where libfna.so registered them (fna_deploy.native),
else the PyTorch reference; :func:`reference_ops` switches the kernels off for a block. A variant
is warmed up and, on CUDA, captured in a CUDAGraph whose replay must compute what eager does
(:func:`prepare_variant`). :class:`TorchRunner` is a module behind the runner interface (verify's
torch-fna and torch-dense).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from .base import Runner

FNA_OPS = ("auto", "reference", "both")
# what ran for the fna ops, named in every row
FNA_KERNELS = "fna kernels (libfna.so)"
REFERENCE_OPS = "PyTorch reference ops"
# a CUDA graph whose replay on a fresh input is farther than this from eager is not used
GRAPH_CHECK_REL_L2 = 1e-2


# ---------------------------------------------------------------- which implementation runs the fna ops


def fna_ops_on(device: str) -> tuple[str, str]:
    """(implementation, why) of the torch backend's fna ops on ``device``: on CUDA our kernels when
    a native library built with CUDA is loaded (loading registers them for the custom ops; the
    default build is loaded here if none is), else the PyTorch reference."""
    if device != "cuda":
        return REFERENCE_OPS, "on the CPU the custom ops run the PyTorch reference"
    from ..native import NativeLibraryError, load, registered_cuda_library

    library = registered_cuda_library()
    if library is None:
        try:
            library = load()
        except NativeLibraryError as exc:
            return REFERENCE_OPS, f"native kernels not loaded: {exc}"
    if not library.cuda_registered:
        return REFERENCE_OPS, f"{library.path} was built without CUDA"
    return FNA_KERNELS, f"registered from {library.path}"


def resolve_fna_ops(fna_ops: str, device: str) -> tuple[list[str], str, str]:
    """(the implementations to time, what the ops run by default here, why) for ``fna_ops``
    auto|reference|both; ``both`` where our kernels do not run is a ValueError."""
    if fna_ops not in FNA_OPS:
        raise ValueError(f"fna_ops must be one of {', '.join(FNA_OPS)}, got {fna_ops!r}")
    implementation, why = fna_ops_on(device)
    if fna_ops == "both" and implementation != FNA_KERNELS:
        raise ValueError(f"--fna-ops both times our kernels beside the PyTorch reference, but they do not run here ({why}); "
                         "use --fna-ops auto")
    impls = {"auto": [implementation], "reference": [REFERENCE_OPS], "both": [FNA_KERNELS, REFERENCE_OPS]}[fna_ops]
    return impls, implementation, why


def _fna_custom_ops() -> tuple[Any, Any]:
    from ..ops import landmarks_op, nystrom_op

    return landmarks_op, nystrom_op


@contextlib.contextmanager
def kernels_disabled(ops: Sequence[Any], device_type: str) -> Iterator[None]:
    """Run ``ops`` (torch.library custom ops) with their registered ``device_type`` kernels switched
    off, so they fall back to their own bodies: for the fna ops, the PyTorch reference."""
    with contextlib.ExitStack() as stack:
        for op in ops:
            stack.enter_context(op.set_kernel_enabled(device_type, False))
        yield


def reference_ops() -> contextlib.AbstractContextManager:
    """The fna custom ops run the PyTorch reference on CUDA inside this block, even where
    libfna.so registered its kernels."""
    return kernels_disabled(_fna_custom_ops(), "cuda")


# ---------------------------------------------------------------- warm-up, capture, timing


@dataclass
class Prepared:
    """A variant ready to time: ``run()`` computes it on the bench input (replaying its CUDA graph,
    or eagerly) and ``output`` is what it computed there."""

    run: Callable[[], Any]
    output: Any
    cuda_graph: bool
    fallback: Optional[str] = None


Capture = Callable[[Callable[[], Any]], Callable[[], Any]]


def cuda_graph_capture(fn: Callable[[], Any]) -> Callable[[], Any]:
    """Capture ``fn()`` (already warmed up) in a torch.cuda.CUDAGraph; returns ``replay()``, which
    replays the graph and returns the captured (static) output. Inputs must be static buffers."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm-up on a side stream, as torch.cuda.graphs asks
        fn()
    torch.cuda.current_stream().wait_stream(stream)
    original = torch.cuda.current_stream()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            static_out = fn()
    except BaseException:
        # an invalidated capture makes capture_end raise before the capture stream is left
        torch.cuda.set_stream(original)
        raise
    torch.cuda.synchronize()

    def replay() -> Any:
        graph.replay()
        return static_out

    replay.graph = graph  # type: ignore[attr-defined]  # keeps the graph (and its pool) alive
    return replay


def _as_array(out: Any) -> np.ndarray:
    """The model output as a float64 numpy array (first element of a tuple/list)."""
    if isinstance(out, (tuple, list)):
        out = out[0]
    if hasattr(out, "logits"):  # Hugging Face ModelOutput
        out = out.logits
    elif hasattr(out, "last_hidden_state"):
        out = out.last_hidden_state
    if isinstance(out, torch.Tensor):
        return out.detach().to("cpu", torch.float64).numpy()
    return np.asarray(out, dtype=np.float64)


def output_metrics(reference: Any, other: Any) -> dict[str, Any]:
    """cosine, rel L2, max/mean abs (and top-1 agreement for logits) of two model outputs."""
    from ..parity import pair_metrics

    return pair_metrics([_as_array(reference)], [_as_array(other)])


def _sentence(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def prepare_variant(
    fn: Callable[[], Any],
    *,
    warmup: int,
    capture: Optional[Capture] = None,
    refill: Optional[Callable[[], Callable[[], None]]] = None,
    sync: Callable[[], None] = lambda: None,
) -> Prepared:
    """Warm ``fn`` up eagerly and, given ``capture``, turn it into a graph replay.

    ``fn()`` computes the variant on static input buffers. ``refill()`` puts fresh values into
    those buffers and returns a function that restores the bench input: the replay is accepted
    only if it then computes what eager ``fn()`` computes (a graph that froze its input, or a
    host-side decision, fails this). A capture that raises, or a replay that disagrees, leaves the
    variant eager with the reason in ``fallback``; nothing is raised.
    """
    output = None
    for _ in range(max(warmup, 1)):
        output = fn()
    sync()
    if capture is None:
        return Prepared(fn, output, False)
    try:
        replay = capture(fn)
    except Exception as exc:  # capture is best effort: report why and time eagerly
        _recover_from_capture()
        return Prepared(fn, output, False, f"capture failed ({_sentence(exc)})")
    try:
        if refill is not None:
            restore = refill()
            try:
                got = _as_array(replay())
                want = _as_array(fn())
            finally:
                restore()
            err = output_metrics(want, got)["rel_l2"]
            if not err <= GRAPH_CHECK_REL_L2:
                return Prepared(fn, output, False,
                                f"graph replay on a fresh input differs from eager (rel L2 {err:.2e} > {GRAPH_CHECK_REL_L2:g})")
        replayed = replay()
        sync()
    except Exception as exc:
        _recover_from_capture()
        return Prepared(fn, output, False, f"graph replay failed ({_sentence(exc)})")
    return Prepared(replay, _detach_copy(replayed), True)


def _detach_copy(out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        return out.detach().clone()
    if isinstance(out, (tuple, list)):
        return type(out)(_detach_copy(o) for o in out)
    return out


def _recover_from_capture() -> None:
    """After a failed capture: clear the error CUDA left behind, if any."""
    if torch.cuda.is_available():
        with contextlib.suppress(Exception):
            torch.cuda.synchronize()


def input_refill(x: torch.Tensor) -> Callable[[], Callable[[], None]]:
    """Fresh values into the static input ``x``; returns the function that puts the bench input back."""

    def refill() -> Callable[[], None]:
        saved = x.clone()
        x.copy_(torch.randn_like(x))

        def restore() -> None:
            x.copy_(saved)

        return restore

    return refill


class TorchRunner(Runner):
    """A PyTorch module on ``device``: feeds ``{input_name: [B, C, H, W]}`` -> its first output."""

    def __init__(self, model: torch.nn.Module, name: str, input_shape: Sequence[int], device: str = "cpu",
                 input_name: str = "images", output_name: str = "output") -> None:
        super().__init__()
        self.model, self.name, self.input_shape, self.device = model, name, list(input_shape), device
        self.input_name, self.output_name = input_name, output_name

    def _load(self) -> None:
        self.model = self.model.to(self.device).eval()

    def _infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        with torch.no_grad():
            out = self.model(torch.from_numpy(feeds[self.input_name]).to(self.device))
        out = out[0] if isinstance(out, (tuple, list)) else out
        return [out.float().cpu().numpy()]

    def input_metadata(self) -> list[tuple[str, Any, list[int]]]:
        return [(self.input_name, np.float32, [-1, *self.input_shape[1:]])]

    def output_names(self) -> list[str]:
        return [self.output_name]

    def describe(self) -> dict[str, Any]:
        return {"runner": self.name, "torch": torch.__version__, "device": self.device}
