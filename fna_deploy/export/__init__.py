"""torch -> ONNX with ``fna::FnaLandmarks`` + ``fna::NystromAttention`` nodes.

``export_onnx`` is the entry point; ``schemas`` holds the fna ONNX domain, ``functions`` the
standard-op bodies that let runtimes without the plugins run a portable export (inlined for
OpenVINO), ``translation`` the torch.onnx mapping, ``graph`` the surgery and file writing,
``check`` the ONNX Runtime parity check.
"""

from .exporter import TARGETS, ExportReport, default_input_shape, export_onnx
from .functions import attach_functions, functions_for
from .schemas import DOMAIN, LANDMARKS, NYSTROM, register_schemas

__all__ = [
    "DOMAIN",
    "ExportReport",
    "LANDMARKS",
    "NYSTROM",
    "TARGETS",
    "attach_functions",
    "default_input_shape",
    "export_onnx",
    "functions_for",
    "register_schemas",
]
