"""ONNX's reference evaluator (onnx.reference, numpy) as a runtime: slow, but written to the spec.

It expands model-local functions itself, so it runs a portable export as is (and an inlined one).
Meant for small inputs (a few dozen tokens): a ViT at 224 px takes seconds per image.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from pathlib import Path

import numpy as np

NAME = "onnx-reference"


def load(path: "str | Path"):
    """A ReferenceEvaluator over the ONNX file (external data loaded; a trt-target export gets the
    portable bodies in memory)."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    from ..export.functions import with_bodies

    return ReferenceEvaluator(with_bodies(onnx.load(str(path)))[0])


def polygraphy_runner(path: "str | Path"):
    """A polygraphy runner (for verify's Comparator) running the ONNX file in onnx.reference."""
    from polygraphy.backend.base import BaseRunner
    from polygraphy.common import TensorMetadata

    class ReferenceRunner(BaseRunner):
        def __init__(self) -> None:
            super().__init__(name=NAME, prefix=NAME)

        def activate_impl(self) -> None:
            self.evaluator = load(path)

        def get_input_metadata_impl(self):
            import onnx

            meta = TensorMetadata()
            for value in onnx.load(str(path), load_external_data=False).graph.input:
                dims = [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]
                meta.add(value.name, np.float32, dims)
            return meta

        def infer_impl(self, feed_dict):
            started = time.perf_counter()
            outputs = self.evaluator.run(None, dict(feed_dict))
            self.inference_time = time.perf_counter() - started
            return OrderedDict((name, np.asarray(out)) for name, out in zip(self.evaluator.output_names, outputs))

        def deactivate_impl(self) -> None:
            del self.evaluator

    return ReferenceRunner()
