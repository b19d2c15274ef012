"""The JSON sidecar written next to every plan: what runners and Triton configs need to know."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

from ..tensor_spec import TensorSpec
from .runtime import TENSORRT

@dataclass
class EngineSidecar:
    """The JSON written next to a .plan: what Triton configs and runners need to know."""

    runtime_version: str  # the version of the runtime that built it (TensorRT or TensorRT-RTX: see runtime)
    gpu: str
    fp16: bool
    fp16_strategy: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    profile: dict[str, dict[str, list[int]]]  # input -> {"min", "opt", "max"}
    onnx: str
    plugin: Optional[str] = None
    fna_config: Optional[dict] = None
    extra: dict[str, Any] = field(default_factory=dict)
    # which runtime built it ("tensorrt" | "tensorrt-rtx"; runtime_version holds its version) and
    # for which compute capabilities (e.g. [86]); None: the runtime's default set (TensorRT-RTX)
    runtime: str = TENSORRT
    compute_capabilities: Optional[list[int]] = None

    @property
    def max_batch(self) -> int:
        return min(p["max"][0] for p in self.profile.values()) if self.profile else 1

    @property
    def min_batch(self) -> int:
        return max(p["min"][0] for p in self.profile.values()) if self.profile else 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "EngineSidecar":
        data = json.loads(text)
        if "runtime_version" not in data and "tensorrt_version" in data:  # sidecars written before the rename
            data["runtime_version"] = data.pop("tensorrt_version")
        data["inputs"] = [TensorSpec(**t) for t in data.get("inputs", [])]
        data["outputs"] = [TensorSpec(**t) for t in data.get("outputs", [])]
        return cls(**data)

    @staticmethod
    def path_for(plan: "str | Path") -> Path:
        return Path(str(plan) + ".json")
