"""torch -> ONNX with fna nodes: the ``export_onnx`` pipeline.

    patch (or unpatch, for the dense baseline) -> torch.onnx.export (dynamo) with the fna
    translation table -> name nodes, graphsurgeon cleanup -> function bodies (portable) ->
    metadata -> onnx.checker -> atomic write -> ONNX Runtime parity against PyTorch.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import onnx
import torch
from torch import nn

from .._version import __version__
from ..config import FNAConfig
from ..loading import weights_label
from ..patching import model_info, patch, patch_record, unpatch
from . import graph as graph_ops
from .check import ParityResult, check_parity, runnable_onnx
from .functions import attach_functions, inline_functions
from .schemas import DOMAIN, register_schemas
from .translation import translation_table

TARGETS = ("portable", "trt", "dense")
INPUT_NAME = "images"
OUTPUT_NAME = "output"
DEFAULT_OPSET = 20


@dataclass
class ExportReport:
    path: str
    target: str
    model: str
    tokens: Optional[int]
    input_shape: list[int]
    dynamic_batch: bool
    fp16: bool
    opset: int
    config: Optional[dict]
    fna_layers: list[int]
    node_counts: dict[str, int]
    file_size: int
    files: list[str]
    export_seconds: float
    parity: list[dict] = field(default_factory=list)
    check_note: Optional[str] = None
    total_seconds: float = 0.0
    functions: Optional[str] = None  # portable target: "local" (fna nodes with function bodies) or "inlined"
    weights: str = "the given weights"  # or "random weights (seed N)" (loading.weights_label)

    @property
    def fna_nodes(self) -> dict[str, int]:
        return {k.split("::")[1]: v for k, v in self.node_counts.items() if k.startswith(f"{DOMAIN}::")}

    @property
    def passed(self) -> bool:
        return all(p["passed"] for p in self.parity)

    @property
    def failures(self) -> list[str]:
        return [ParityResult(**p).describe() for p in self.parity if not p["passed"]]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["fna_nodes"] = self.fna_nodes
        data["passed"] = self.passed if self.parity else None  # null: not checked (no parity run)
        return data

    def write_json(self, path: "str | Path") -> None:
        from ..utils import write_text_atomic

        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")


class _Float16IO(nn.Module):
    """Runs an fp16 copy of a model behind fp32 inputs and outputs."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model.half()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images.half()).float()


def _is_exported_graph(model: nn.Module) -> bool:
    return isinstance(model, torch.fx.GraphModule)


def _graph_has_fna_ops(model: nn.Module) -> bool:
    return any(str(n.target).startswith("fna.") for n in model.graph.nodes)


def _normalise_shape(input_shape: Any) -> tuple[int, ...]:
    shape = tuple(int(s) for s in input_shape)
    if len(shape) == 3:
        shape = (1, *shape)
    if len(shape) != 4 or any(s <= 0 for s in shape):
        raise ValueError(f"input_shape must be (C, H, W) or (B, C, H, W) with positive sizes, got {tuple(input_shape)}")
    return shape


def default_input_shape(model: nn.Module, batch: int = 1) -> tuple[int, int, int, int]:
    """(B, C, H, W) the model expects: from its family adapter, or a graph module's placeholder."""
    if _is_exported_graph(model):
        for node in model.graph.nodes:
            if node.op == "placeholder" and "val" in node.meta and getattr(node.meta["val"], "dim", lambda: 0)() == 4:
                shape = [int(s) if isinstance(s, int) else batch for s in node.meta["val"].shape]
                return (batch, *shape[1:])
        raise ValueError("cannot tell the input shape of this graph module; pass input_shape")
    info = model_info(model)
    if info.img_size is None:
        raise ValueError(f"cannot tell the input resolution of {info.model_class}; pass input_shape")
    return (batch, info.in_chans, *info.img_size)


def _torch_export(module: nn.Module, example: torch.Tensor, dynamic_batch: bool, opset: int) -> onnx.ModelProto:
    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=4096)},) if dynamic_batch else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            opset_version=opset,
            dynamic_shapes=dynamic_shapes,
            custom_translation_table=translation_table(),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            optimize=True,
            verbose=False,
        )
    return program.model_proto


def _preprocess_recipe(model: Optional[nn.Module], shape: tuple[int, ...]) -> str:
    """The image preprocessing recipe (JSON) at the export's resolution: what ``triton --image-ensemble``
    serves; empty for a finished graph (.pt2: no data config to read) or a model that takes no images."""
    from ..images import data_config

    if model is None or len(shape) != 4 or shape[1] not in (1, 3):
        return ""
    try:
        return json.dumps(data_config(model, (shape[2], shape[3]), channels=shape[1]))
    except (ValueError, ImportError):
        return ""


def export_onnx(
    model: nn.Module,
    config: Optional[FNAConfig],
    path: "str | Path",
    *,
    input_shape: Any = None,
    target: str = "portable",
    dynamic_batch: bool = True,
    fp16: bool = False,
    opset: Optional[int] = None,
    check: bool = True,
    model_spec: Optional[str] = None,
    external_data: Optional[bool] = None,
    progress: Optional[Callable[[str], None]] = None,
    allow_degenerate: bool = False,
    inline: bool = False,
    random_seed: Optional[int] = None,
) -> ExportReport:
    """Export ``model`` with FNA attention (``config``) to ONNX at ``path``.

    target: ``portable`` (fna nodes with ONNX function bodies: ONNX Runtime runs it as is),
    ``trt`` (the same nodes without bodies, for TensorRT with the fna plugins) or ``dense``
    (the unpatched model, the baseline). ``inline`` (portable only) expands the function bodies
    into the graph for runtimes without model-local functions (OpenVINO). The model is patched for the export and left as it
    was found. With ``check`` the written file is run with ONNX Runtime against PyTorch at
    batch 1 (and 2 when the batch is dynamic); see ``ExportReport.passed``. An output without signal
    (every value equal, e.g. a zero-initialised head) fails the check unless ``allow_degenerate``.
    ``random_seed``: the model holds random weights drawn from this seed (recorded in the file, so
    verify/infer rebuild the same model); None: real weights.
    """
    started = time.perf_counter()
    step = progress or (lambda _msg: None)
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    if inline and target != "portable":
        raise ValueError(f"inlining expands the portable target's function bodies; the {target} target has none")
    opset = DEFAULT_OPSET if opset is None else opset
    from torch.onnx._constants import ONNX_MAX_OPSET

    if isinstance(opset, bool) or not isinstance(opset, int) or not 18 <= opset <= ONNX_MAX_OPSET:
        raise ValueError(f"opset must be an int from 18 (the fna function bodies need it) to {ONNX_MAX_OPSET} "
                         f"(the newest torch.onnx exports), got {opset!r}")
    path = Path(path)
    if path.suffix != ".onnx":
        raise ValueError(f"output path {str(path)!r} should end in .onnx")
    graph_ops.check_writable(path)
    register_schemas()

    exported_graph = _is_exported_graph(model)
    shape = _normalise_shape(input_shape) if input_shape is not None else default_input_shape(model)
    if dynamic_batch and shape[0] != 1:
        shape = (1, *shape[1:])
    was_patched = None if exported_graph else patch_record(model)
    fna_layers: list[int] = []
    landmark_layers: list[int] = []
    tokens: Optional[int] = None
    try:
        if exported_graph:
            has_fna = _graph_has_fna_ops(model)
            if target == "dense" and has_fna:
                raise ValueError("this graph module already holds FNA ops; export the dense baseline from the source model")
            if target != "dense" and not has_fna:
                raise ValueError(
                    "this graph module has no FNA ops and a finished graph cannot be patched; "
                    "export FNA from the source model (timm:NAME, hf:DIR or a .pt module)"
                )
        else:
            info = model_info(model)
            tokens = info.num_tokens((shape[2], shape[3])) if info.patch_size else None
            if target == "dense":
                unpatch(model)
            else:
                config = config if config is not None else (was_patched.config if was_patched else FNAConfig())
                if tokens is not None and config.num_landmarks > tokens:
                    raise ValueError(
                        f"num_landmarks: {config.num_landmarks} landmarks is more than the {tokens} tokens at "
                        f"{shape[2]}x{shape[3]}; use at most {tokens}"
                    )
                patch(model, config)
                record = patch_record(model)
                fna_layers = list(record.layers)
                landmark_layers = fna_layers if config.resample_every_layer else fna_layers[:1]
        if not exported_graph:
            model.eval()

        step("exporting with torch.export + torch.onnx")
        export_started = time.perf_counter()
        module: nn.Module = _Float16IO(copy.deepcopy(model)) if fp16 else model
        # trace a dynamic batch at 2: a size-1 dimension invites torch.export to specialise it
        example = torch.randn((2, *shape[1:]) if dynamic_batch else shape)
        proto = _torch_export(module, example, dynamic_batch, opset)
        batch_dim = proto.graph.input[0].type.tensor_type.shape.dim[0]
        if dynamic_batch and batch_dim.HasField("dim_value"):
            raise ValueError(
                f"{type(model).__name__} could not be exported with a dynamic batch (torch.export fixed it "
                f"at {batch_dim.dim_value}); export with a static batch instead (--batch N)"
            )
        export_seconds = time.perf_counter() - export_started

        step("cleaning the graph (onnx-graphsurgeon)")
        if target != "dense":
            graph_ops.ensure_fna_opset(proto)
        proto = graph_ops.cleanup(proto)
        graph_ops.name_fna_nodes(proto, fna_layers, landmark_layers)
        if target == "portable":
            attach_functions(proto)
            if inline:
                proto = inline_functions(proto)
        used_config = patch_record(model).config if target != "dense" and not exported_graph else None
        graph_ops.set_metadata(
            proto,
            {
                "fna_deploy_version": __version__,
                "fna_target": target,
                "fna_config": used_config.to_json() if used_config else "",
                "fna_layers": json.dumps(fna_layers),
                "model_spec": model_spec or type(model).__name__,
                "tokens": str(tokens) if tokens is not None else "",
                "fp16": str(bool(fp16)).lower(),
                "input_shape": json.dumps(list(shape)),
                "fna_functions": ("inlined" if inline else "local") if target == "portable" else "",
                "preprocess": _preprocess_recipe(None if exported_graph else model, shape),
                "random_seed": str(random_seed) if random_seed is not None else "",
                "weights": weights_label(random_seed),
            },
        )
        proto.producer_name = "fna-deploy"
        proto.producer_version = __version__
        step("checking the ONNX model")
        if proto.ByteSize() < graph_ops.EXTERNAL_DATA_THRESHOLD:
            onnx.checker.check_model(proto, full_check=True)

        step(f"writing {path}")
        files = graph_ops.save_atomic(proto, path, external_data=external_data)
        if proto.ByteSize() >= graph_ops.EXTERNAL_DATA_THRESHOLD:
            onnx.checker.check_model(str(path), full_check=True)

        report = ExportReport(
            path=str(path),
            target=target,
            model=model_spec or type(model).__name__,
            tokens=tokens,
            input_shape=list(shape),
            dynamic_batch=dynamic_batch,
            fp16=fp16,
            opset=opset,
            config=used_config.to_dict() if used_config else None,
            fna_layers=fna_layers,
            node_counts=graph_ops.node_counts(proto),
            file_size=sum(f.stat().st_size for f in files),
            files=[str(f) for f in files],
            export_seconds=round(export_seconds, 2),
            functions=("inlined" if inline else "local") if target == "portable" else None,
            weights=weights_label(random_seed),
        )
        if check:
            step("checking parity with ONNX Runtime")
            batches = [1, 2] if dynamic_batch else [shape[0]]
            # ONNX Runtime cannot run the bare plugin nodes of a trt target: the same graph with the bodies attached
            source, note = runnable_onnx(path)
            if note:
                report.check_note = "trt target checked with the portable function bodies attached in memory"
            results = check_parity(model, source, shape, batches, fp16=fp16, allow_degenerate=allow_degenerate)
            report.parity = [r.to_dict() for r in results]
        report.total_seconds = round(time.perf_counter() - started, 2)
        return report
    finally:
        if not exported_graph:
            if was_patched is None:
                unpatch(model)
            elif patch_record(model) is None or patch_record(model).config != was_patched.config:
                patch(model, was_patched.config)


__all__ = ["ExportReport", "TARGETS", "export_onnx", "default_input_shape", "INPUT_NAME", "OUTPUT_NAME"]
