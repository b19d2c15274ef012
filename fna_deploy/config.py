"""FNAConfig: the one validated description of how a model's attention is approximated.

The same object travels from the Python API to the CLI flags, into the ONNX metadata
(``to_json``) and back (``from_json``), so every stage agrees on what was built.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Sequence

from .contract import NYSTROM as _NYSTROM
from .contract import LANDMARK_METHODS
from .contract import op as _op

MAX_LANDMARKS = 65536
MAX_PINV_ITERS = int(_op(_NYSTROM).field("pinv_iters").maximum)  # the plugin contract's bound

METHODS = LANDMARK_METHODS

# The one default FNA configuration of every command and the API (docs/architecture.md says why):
# the paper's method keeps the attention sinks, tokens whose norm is >= 10x the median ("massive"),
# as landmarks; masking artifact tokens is the paper's optional extra, so it is off.
DEFAULT_MASSIVE_RATIO = 10.0
DEFAULT_ARTIFACT_RATIO = 0.0
# analyze looks for artifact tokens at this norm/median (and tries masking them); not a config default
ARTIFACT_DETECTION_RATIO = 4.0
FEATURES = ("q", "k", "v", "input")

_RANGE_RE = re.compile(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*)?$")


def _parse_ranges(spec: str) -> "list[tuple[int, int]] | None":
    """Split a layer string into inclusive (lo, hi) ranges; None means "all"."""
    text = spec.strip().lower()
    if text == "all":
        return None
    ranges = []
    for part in text.split(","):
        match = _RANGE_RE.match(part)
        if not match:
            raise ValueError(
                f"layers: cannot parse {part.strip()!r} in {spec!r}; "
                "use 'all', 'a-b', 'a-b,c' or a list of block indices"
            )
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) is not None else lo
        if lo < 0:
            raise ValueError(f"layers: block indices must be >= 0, got {lo} in {spec!r}")
        if hi < lo:
            raise ValueError(f"layers: range {part.strip()!r} in {spec!r} runs backwards")
        ranges.append((lo, hi))
    return ranges


def parse_layers(spec: "str | Sequence[int] | None", num_blocks: int) -> list[int]:
    """Resolve a layer spec to a sorted list of distinct block indices.

    ``None`` means the default, the second half of the blocks. Strings accept ``"all"``,
    ``"a-b"`` (inclusive), ``"a-b,c"`` and single indices; a sequence of ints is taken as is.
    Every index must lie in ``[0, num_blocks)``.
    """
    if num_blocks <= 0:
        raise ValueError(f"the model has {num_blocks} transformer blocks; nothing to patch")
    if spec is None:
        layers = list(range(num_blocks // 2, num_blocks))
    elif isinstance(spec, str):
        ranges = _parse_ranges(spec)
        if ranges is None:
            layers = list(range(num_blocks))
        else:
            for lo, hi in ranges:
                if hi >= num_blocks:
                    raise ValueError(
                        f"layers: block index {hi} is out of range; this model has {num_blocks} blocks "
                        f"(valid indices 0-{num_blocks - 1})"
                    )
            layers = [i for lo, hi in ranges for i in range(lo, hi + 1)]
    else:
        _validate_layers_spec(spec)
        layers = list(spec)
    bad = [i for i in layers if not 0 <= i < num_blocks]
    if bad:
        raise ValueError(
            f"layers: block index {bad[0]} is out of range; this model has {num_blocks} blocks "
            f"(valid indices 0-{num_blocks - 1})"
        )
    return sorted(set(layers))


def _validate_layers_spec(spec: Any) -> None:
    """Syntax-check a layer spec without knowing the model (the range check comes at patch time)."""
    if spec is None:
        return
    if isinstance(spec, str):
        _parse_ranges(spec)
        return
    if isinstance(spec, (list, tuple)):
        if not spec:
            raise ValueError("layers: the list of block indices is empty")
        for i in spec:
            if isinstance(i, bool) or not isinstance(i, int):
                raise ValueError(f"layers: block indices must be integers, got {i!r}")
            if i < 0:
                raise ValueError(f"layers: block indices must be >= 0, got {i}")
        return
    raise ValueError(f"layers: expected 'all', a range string or a list of ints, got {spec!r}")


@dataclass
class FNAConfig:
    """How Fast Nystrom Attention replaces a model's attention.

    Attributes:
        num_landmarks: m, the number of landmark tokens (static).
        layers: which blocks get FNA: ``"all"``, ``"a-b"``, ``"a-b,c"``, a list of ints, or
            ``None`` for the second half of the blocks.
        method: landmark selection, ``"fps"`` (farthest-point sampling) or ``"grid"``.
        features: what FPS measures distances on: the layer's ``"q"``, ``"k"`` or ``"v"``
            averaged over heads, or ``"input"``: the residual stream entering the block, before
            its first norm (the official FNA code's meaning).
        resample_every_layer: False computes the landmarks once, at the first FNA layer, and
            reuses them; True selects anew in every FNA layer.
        pinv_iters: Newton-Schulz iterations for the pseudo-inverse.
        num_prefix: leading tokens always kept as landmarks (CLS, registers); ``None`` detects
            them from the model.
        massive_ratio: guarantee tokens whose residual-stream norm is >= ratio x median (0 = off;
            default 10, the paper's attention sinks).
        artifact_ratio: exclude non-guaranteed tokens whose norm is >= ratio x median (0 = off, the
            default; the paper's optional masking).
        scale: attention scale; ``None`` uses the model's own (head_dim ** -0.5 for all
            supported families).
    """

    num_landmarks: int = 64
    layers: "str | list[int] | None" = None
    method: str = "fps"
    features: str = "q"
    resample_every_layer: bool = False
    pinv_iters: int = 6
    num_prefix: "int | None" = None
    massive_ratio: float = DEFAULT_MASSIVE_RATIO
    artifact_ratio: float = DEFAULT_ARTIFACT_RATIO
    scale: "float | None" = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def need_int(name: str, value: Any, lo: int, hi: int) -> None:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name}: expected an integer, got {value!r}")
            if value < lo:
                raise ValueError(f"{name}: must be >= {lo}, got {value}")
            if value > hi:  # bounds for values read from files too (ONNX metadata, sidecars, JSON)
                raise ValueError(f"{name}: must be <= {hi}, got {value}")

        def need_ratio(name: str, value: Any) -> None:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name}: expected a number, got {value!r}")
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name}: must be a finite number >= 0 (0 turns it off), got {value}")

        need_int("num_landmarks", self.num_landmarks, 1, MAX_LANDMARKS)
        need_int("pinv_iters", self.pinv_iters, 0, MAX_PINV_ITERS)
        if self.num_prefix is not None:
            need_int("num_prefix", self.num_prefix, 0, MAX_LANDMARKS)
            if self.num_prefix > self.num_landmarks:
                raise ValueError(
                    f"num_prefix: {self.num_prefix} prefix tokens cannot all be landmarks when "
                    f"num_landmarks is {self.num_landmarks}"
                )
        if self.method not in METHODS:
            raise ValueError(f"method: expected one of {', '.join(METHODS)}, got {self.method!r}")
        if self.features not in FEATURES:
            raise ValueError(f"features: expected one of {', '.join(FEATURES)}, got {self.features!r}")
        if not isinstance(self.resample_every_layer, bool):
            raise ValueError(f"resample_every_layer: expected true or false, got {self.resample_every_layer!r}")
        need_ratio("massive_ratio", self.massive_ratio)
        need_ratio("artifact_ratio", self.artifact_ratio)
        if self.massive_ratio and self.massive_ratio < 1:
            raise ValueError(
                f"massive_ratio: {self.massive_ratio} would guarantee tokens below the median norm; "
                "use a ratio > 1 (typical: 10-100) or 0 to turn it off"
            )
        if self.artifact_ratio and self.artifact_ratio < 1:
            raise ValueError(
                f"artifact_ratio: {self.artifact_ratio} would exclude most tokens; use a ratio > 1 "
                "or 0 to turn it off"
            )
        if self.scale is not None:
            if isinstance(self.scale, bool) or not isinstance(self.scale, (int, float)) or not (
                math.isfinite(self.scale) and self.scale > 0
            ):
                raise ValueError(f"scale: expected a positive number or None, got {self.scale!r}")
        if isinstance(self.layers, tuple):
            self.layers = list(self.layers)
        _validate_layers_spec(self.layers)

    @property
    def uses_scores(self) -> bool:
        """Whether landmark selection needs the per-token activation norms."""
        return self.massive_ratio > 0 or self.artifact_ratio > 0

    def resolve_layers(self, num_blocks: int) -> list[int]:
        return parse_layers(self.layers, num_blocks)

    def replace(self, **changes: Any) -> "FNAConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FNAConfig":
        if not isinstance(data, dict):
            raise ValueError(f"FNAConfig.from_dict expects a dict, got {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"FNAConfig: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "FNAConfig":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"FNAConfig: not valid JSON ({exc})") from None
        return cls.from_dict(data)


__all__ = ["FNAConfig", "parse_layers", "METHODS", "FEATURES"]
