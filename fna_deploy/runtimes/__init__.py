"""Runtimes beside ONNX Runtime that run the portable export: OpenVINO and ONNX's reference evaluator.

Each lives in a small module of its own (load, run, describe, a polygraphy runner) so it can move
into a backend layer later. Neither goes through ONNX Runtime: they are the project's independent
check that "portable" holds for runtimes nobody here wrote.

Which form of the portable export each runtime needs (``FORMS``, printed by ``fna-deploy info``):
ONNX Runtime and onnx.reference expand model-local functions themselves; OpenVINO has no
conversion rule for them and needs the functions inlined (``export --inline-functions``, or
inlined in memory by the openvino runner).
"""

from __future__ import annotations

# runtime -> the portable form it runs
FORMS = {
    "onnxruntime": "portable (local functions) or inlined",
    "onnx.reference": "portable (local functions) or inlined",
    "openvino": "inlined only (export --inline-functions; verify/bench inline a portable file in memory)",
    "tensorrt": "trt target (plugin nodes, no bodies) with the fna plugins",
}
