"""The whole chain in one call: export (portable + trt), engine, verify, bench, Triton repository.

Each stage is the library call its own command makes; a stage that cannot run here (no
TensorRT or GPU for the engine) is recorded as skipped with the reason, never as a failure.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
from torch import nn

from .config import FNAConfig


@dataclass
class RunReport:
    model: str
    outdir: str
    config: dict
    files: dict[str, str] = field(default_factory=dict)
    export: dict[str, Any] = field(default_factory=dict)
    verify: Optional[dict] = None
    bench: Optional[dict] = None
    triton: Optional[dict] = None
    infer_command: Optional[str] = None
    skipped: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        export_ok = all(r.get("passed") is not False for r in self.export.values())  # None: not checked
        return export_ok and (self.verify is None or self.verify["passed"])

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def write_json(self, path: "str | Path") -> None:
        from .utils import write_text_atomic

        write_text_atomic(path, json.dumps(self.to_dict(), indent=2, default=str) + "\n")


def engine_skip_reason(exc: Exception) -> str:
    """Why run built no engine, naming what is missing first: without TensorRT the build falls back
    to TensorRT-RTX, whose own complaint (e.g. its plugin build) is secondary."""
    from .trt import tensorrt_version

    if tensorrt_version() is None:
        return ("TensorRT is not installed (pip install tensorrt on a machine with an NVIDIA GPU, or NVIDIA's "
                f"TensorRT container); the TensorRT-RTX build tried instead stopped: {exc}")
    return str(exc)


def run_pipeline(
    model: nn.Module,
    config: FNAConfig,
    outdir: "str | Path",
    *,
    model_label: str,
    name: str = "model",
    fp16: bool = False,
    plugin: Optional[str] = None,
    bench: bool = True,
    bench_iters: int = 3,
    verify_inputs: int = 2,
    triton_backend: Optional[str] = None,
    force: bool = False,
    compare_spec: Optional[str] = None,
    save_weights: bool = False,
    progress: Optional[Callable[[str], None]] = None,
    allow_degenerate: bool = False,
) -> RunReport:
    """Export, build (when TensorRT and a GPU are here), verify, bench and write a Triton repository.

    ``compare_spec`` is how ``fna-deploy infer --compare`` names this model (e.g. ``W --arch
    timm:NAME``); with ``save_weights`` the model's weights are written to OUTDIR/weights.safetensors
    first (random-init models have no file of their own) and ``compare_spec`` should name that file.
    ``allow_degenerate``: outputs without signal (all equal) are judged instead of failing the
    export check and verify (as ``export``/``verify --allow-degenerate``).
    """
    from .export import default_input_shape, export_onnx
    from .patching import patch, unpatch

    step = progress or (lambda _msg: None)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    report = RunReport(model_label, str(out), config.to_dict())

    def timed(stage: str, fn: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        try:
            return fn()
        finally:
            report.seconds[stage] = round(time.perf_counter() - started, 2)

    shape = default_input_shape(model)
    portable, trt_onnx = out / f"{name}_fna.onnx", out / f"{name}_fna_trt.onnx"
    step("exporting ONNX (portable) and checking it with ONNX Runtime")
    exp = timed("export_portable", lambda: export_onnx(model, config, portable, input_shape=shape, fp16=fp16, model_spec=model_label, progress=step,
                                                                  allow_degenerate=allow_degenerate))
    report.export["portable"] = exp.to_dict()
    report.files["onnx_portable"] = str(portable)
    step("exporting ONNX for TensorRT")
    exp_trt = timed("export_trt", lambda: export_onnx(model, config, trt_onnx, input_shape=shape, target="trt", fp16=fp16, check=False, model_spec=model_label, progress=step))
    report.export["trt"] = exp_trt.to_dict()  # not checked: its passed is null
    report.files["onnx_trt"] = str(trt_onnx)

    engine: Optional[Path] = None
    from .trt import TensorRTUnavailable, build_engine

    try:
        step("building the TensorRT engine")
        plan = out / f"{name}_fna.plan"
        timed("build", lambda: build_engine(trt_onnx, plan, fp16=fp16, plugin=plugin, batch=(1, 1, 8)))
        engine = plan
        report.files["engine"] = str(plan)
    except TensorRTUnavailable as exc:
        report.skipped["build"] = engine_skip_reason(exc)

    step("verifying PyTorch vs ONNX Runtime" + (" vs TensorRT" if engine else ""))
    from .verify import verify

    rng = np.random.default_rng(0)
    feeds = [rng.standard_normal((1, *shape[1:]), dtype=np.float32) for _ in range(verify_inputs)]
    patch(model, config)
    try:
        ver = timed("verify", lambda: verify(model, feeds, onnx_path=portable, engine_path=engine, plugin=plugin,
                                             model_label=model_label, inputs_label=f"{verify_inputs} random inputs",
                                             allow_degenerate=allow_degenerate))
    finally:
        unpatch(model)
    report.verify = ver.to_dict()
    report.skipped.update({f"verify:{k}": v for k, v in ver.skipped.items()})

    if bench:
        step("timing dense vs FNA (short bench)")
        from .bench import run_bench

        res = shape[2]
        result = timed("bench", lambda: run_bench(lambda _r: model, model_label=model_label, resolutions=[res], landmarks=[config.num_landmarks],
                                                   layers=config.layers,
                                                   backends=["torch", "onnxrt"], iters=bench_iters, warmup=1, workdir=str(out / ".bench"),
                                                   log=step))
        report.bench = result.to_dict()
        import shutil

        shutil.rmtree(out / ".bench", ignore_errors=True)
    else:
        report.skipped["bench"] = "--no-bench"

    step("writing the Triton model repository")
    from .triton import RepositoryOptions, write_repository

    backend = triton_backend or ("tensorrt" if engine else "python")
    artifact = engine if backend == "tensorrt" else portable
    repo = timed("triton", lambda: write_repository(artifact, out / "triton", RepositoryOptions(name=name, backend=backend, plugin=plugin if engine else None), force=force))
    report.triton = repo.to_dict()
    report.files["triton_repository"] = str(out / "triton")
    if save_weights:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "weights.safetensors"))
        report.files["weights"] = str(out / "weights.safetensors")
    if compare_spec:
        report.infer_command = f"fna-deploy infer 127.0.0.1:8000 {name} --random 1 --compare {compare_spec}"
    report.write_json(out / "run_report.json")
    report.files["report"] = str(out / "run_report.json")
    return report
