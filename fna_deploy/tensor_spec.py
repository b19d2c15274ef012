"""The one description of a model input or output (name, numpy dtype name, shape with -1 for
dynamic), shared by engine sidecars (fna_deploy.trt) and Triton configs (fna_deploy.triton)."""

from __future__ import annotations

from dataclasses import dataclass

# numpy dtype name <-> Triton data type
_DTYPES = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "bfloat16": "TYPE_BF16",
    "float64": "TYPE_FP64",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "bool": "TYPE_BOOL",
    "bytes": "TYPE_STRING",  # encoded images in (ensemble, preprocessing model)
}


@dataclass
class TensorSpec:
    """One model input or output: name, numpy dtype name, full shape (batch first, -1 = dynamic)."""

    name: str
    dtype: str
    shape: list[int]

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"tensor name must be a non-empty string, got {self.name!r}")
        if self.dtype not in _DTYPES:
            raise ValueError(f"tensor {self.name!r}: unsupported dtype {self.dtype!r} (one of {', '.join(_DTYPES)})")
        if not isinstance(self.shape, (list, tuple)) or not self.shape or any(
            isinstance(d, bool) or not isinstance(d, int) or d < -1 or d == 0 for d in self.shape
        ):
            raise ValueError(f"tensor {self.name!r}: shape must be a non-empty list of positive ints or -1, got {self.shape!r}")
        self.shape = [int(d) for d in self.shape]

    @property
    def triton_dtype(self) -> str:
        return _DTYPES[self.dtype]
