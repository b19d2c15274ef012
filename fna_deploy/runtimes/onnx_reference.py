"""ONNX's reference evaluator (onnx.reference, numpy) as a runtime: slow, but written to the spec.

It expands model-local functions itself, so it runs a portable export as is (and an inlined one).
Meant for small inputs (a few dozen tokens): a ViT at 224 px takes seconds per image.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .base import Runner, as_polygraphy

NAME = "onnx-reference"


def load(path: "str | Path"):
    """A ReferenceEvaluator over the ONNX file (external data loaded; a trt-target export gets the
    portable bodies in memory)."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    from ..export.functions import with_bodies

    return ReferenceEvaluator(with_bodies(onnx.load(str(path)))[0])


class ReferenceRunner(Runner):
    """An ONNX file in onnx.reference (numpy, CPU)."""

    name = NAME

    def __init__(self, path: "str | Path") -> None:
        super().__init__()
        self.path = path

    def _load(self) -> None:
        self.evaluator = load(self.path)

    def _infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return [np.asarray(out) for out in self.evaluator.run(None, dict(feeds))]

    def input_metadata(self) -> list[tuple[str, Any, list[int]]]:
        import onnx

        return [(value.name, np.float32, [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim])
                for value in onnx.load(str(self.path), load_external_data=False).graph.input]

    def output_names(self) -> list[str]:
        self.load()
        return list(self.evaluator.output_names)

    def close(self) -> None:
        self.__dict__.pop("evaluator", None)
        super().close()


def polygraphy_runner(path: "str | Path"):
    """A polygraphy runner (for verify's Comparator) running the ONNX file in onnx.reference."""
    return as_polygraphy(ReferenceRunner(path))
