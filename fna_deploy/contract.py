"""The fna plugin contract, written down once.

Every side of the contract reads this table: the ONNX schemas (``export/schemas.py``), the C++
plugin creators and attribute parser (through ``plugins/fna/fna_contract.h``, generated from this
file by ``scripts/gen_contract_header.py`` and committed; a test regenerates it and fails on
drift), and the TensorRT contract check (``trt/contract_check.py``), which compares what a real
ONNX parser hands to the creators with these fields.

A field is what the TensorRT creator declares in ``getFieldNames()`` and what the ONNX node
carries as an attribute of the same name: ``int32`` is an ONNX INT attribute (PluginFieldType
INT32), ``float32`` an ONNX FLOAT (FLOAT32), ``string`` an ONNX STRING (CHAR). ``plugin_version``
and ``plugin_namespace`` are not fields: the parser reads them to find the creator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Union

DOMAIN = "fna"
DOMAIN_VERSION = 1
PLUGIN_NAMESPACE = "fna"
PLUGIN_VERSION = "1"
LANDMARKS = "FnaLandmarks"
NYSTROM = "NystromAttention"
IDENTITY_ATTRIBUTES = ("plugin_namespace", "plugin_version")

Value = Union[int, float, str]

# field type -> (ONNX AttributeProto type name, TensorRT PluginFieldType name, C++ enum)
FIELD_TYPES = {
    "int32": ("INT", "INT32", "kInt32"),
    "float32": ("FLOAT", "FLOAT32", "kFloat32"),
    "string": ("STRING", "CHAR", "kString"),
}


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # a key of FIELD_TYPES
    doc: str
    default: Optional[Value] = None  # None: required
    minimum: Optional[float] = None  # inclusive
    maximum: Optional[float] = None  # inclusive
    choices: tuple[str, ...] = ()

    @property
    def required(self) -> bool:
        return self.default is None

    @property
    def onnx_type(self) -> str:
        return FIELD_TYPES[self.type][0]

    @property
    def trt_type(self) -> str:
        return FIELD_TYPES[self.type][1]

    def problem(self, value: Value) -> Optional[str]:
        """One sentence when ``value`` is not valid for this field (type already matched), else None."""
        if self.type == "string":
            if self.choices and value not in self.choices:
                return f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}"
            return None
        if isinstance(value, float) and not math.isfinite(value):
            return f"{self.name} must be a finite number, got {value}"
        if self.minimum is not None and value < self.minimum:
            return f"{self.name} must be >= {_num(self.minimum)}, got {_num(value)}"
        if self.maximum is not None and value > self.maximum:
            return f"{self.name} must be <= {_num(self.maximum)}, got {_num(value)}"
        return None


@dataclass(frozen=True)
class Tensor:
    name: str
    types: str  # "float" (float32/float16/bfloat16), "int32", or "like:q" (the dtype of input q)
    shape: tuple[str, ...]
    doc: str
    optional: bool = False


@dataclass(frozen=True)
class Op:
    name: str
    doc: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...]
    fields: tuple[Field, ...]
    rules: tuple[str, ...] = ()  # cross-field rules, checked by fna_logic.cpp's validate()

    def field(self, name: str) -> Optional[Field]:
        return next((f for f in self.fields if f.name == name), None)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


OPS: tuple[Op, ...] = (
    Op(
        LANDMARKS,
        "Landmark token indices for Fast Nystrom Attention: guaranteed prefix/massive tokens first, "
        "then farthest-point sampling (or an even grid) over eligible tokens; excluded tokens fill in last.",
        inputs=(
            Tensor("features", "float", ("B", "N", "D"), "sampling features"),
            Tensor("scores", "float", ("B", "N"), "per-token activation norms", optional=True),
        ),
        outputs=(Tensor("idx", "int32", ("B", "num_landmarks"), "landmark indices"),),
        fields=(
            Field("num_landmarks", "int32", "m, the number of landmark tokens", minimum=1),
            Field("num_prefix", "int32", "leading tokens always kept", default=0, minimum=0),
            Field("massive_ratio", "float32", "guarantee tokens with score >= ratio x median (0 = off)", default=0.0, minimum=0.0),
            Field("artifact_ratio", "float32", "exclude tokens with score >= ratio x median (0 = off)", default=0.0, minimum=0.0),
            Field("method", "string", "fps | grid", default="fps", choices=("fps", "grid")),
        ),
        rules=("num_prefix <= num_landmarks", "massive_ratio/artifact_ratio > 0 need the scores input"),
    ),
    Op(
        NYSTROM,
        "Nystrom approximation of softmax attention on landmark tokens: "
        "softmax(s q kp^T) pinv(softmax(s qp kp^T)) softmax(s qp k^T) v, pinv by Newton-Schulz in fp32.",
        inputs=(
            Tensor("q", "float", ("B", "H", "N", "d"), "queries"),
            Tensor("k", "float", ("B", "H", "N", "d"), "keys"),
            Tensor("v", "float", ("B", "H", "N", "dv"), "values"),
            Tensor("idx", "int32", ("B", "m"), "landmark indices"),
        ),
        outputs=(Tensor("out", "like:q", ("B", "H", "N", "dv"), "attention output"),),
        fields=(
            Field("scale", "float32", "attention scale (0 = head_dim ** -0.5)", default=0.0, minimum=0.0),
            Field("pinv_iters", "int32", "Newton-Schulz iterations", default=6, minimum=0, maximum=100),
        ),
    ),
)


def op(name: str) -> Optional[Op]:
    return next((o for o in OPS if o.name == name), None)


def attribute_names(name: str) -> list[str]:
    """The ONNX attributes of op ``name``'s node and function body: its fields, then the identity attributes."""
    return [f.name for f in op(name).fields] + list(IDENTITY_ATTRIBUTES)


# landmark selection methods, in the C++ enum's order (fps = 0, grid = 1): every consumer reads these
LANDMARK_METHODS: tuple[str, ...] = op(LANDMARKS).field("method").choices
DEFAULT_METHOD: str = str(op(LANDMARKS).field("method").default)


# Limits of the CUDA kernels (plugins/fna/landmarks.cu, nystrom.cu); larger inputs run the reference
# (fna_deploy/ops' CUDA registration) and the TensorRT plugins reject them at build time (fna_logic.cpp).
# Generated into fna_contract.h as kMaxKernelTokens etc.; no other module writes these numbers.
MAX_KERNEL_TOKENS = 1 << 20  # exclusive: the landmark kernels pack per-token counters into 21 bits
MAX_KERNEL_HEAD_DIM = 256  # inclusive, q/k and v head dims
MAX_KERNEL_LANDMARKS = 4096  # inclusive, m of the Nystrom kernels
KERNEL_LIMITS: dict[str, int] = {
    "MAX_KERNEL_TOKENS": MAX_KERNEL_TOKENS,
    "MAX_KERNEL_HEAD_DIM": MAX_KERNEL_HEAD_DIM,
    "MAX_KERNEL_LANDMARKS": MAX_KERNEL_LANDMARKS,
}


def _default(op_name: str, field_name: str) -> Value:
    return op(op_name).field(field_name).default


@dataclass(frozen=True)
class LandmarkAttrs:
    """FnaLandmarks' fields as one value, in the contract's order (which is also the order of the
    ``fna::landmarks`` custom op's attribute arguments, after ``features, scores``). The op's
    implementations, the ONNX translation and the native library's C calls build or unpack
    their arguments here instead of writing the five out again; tests hold the names, order and
    defaults to the contract table."""

    num_landmarks: int
    num_prefix: int = _default(LANDMARKS, "num_prefix")
    massive_ratio: float = _default(LANDMARKS, "massive_ratio")
    artifact_ratio: float = _default(LANDMARKS, "artifact_ratio")
    method: str = _default(LANDMARKS, "method")

    @classmethod
    def of(cls, *args: "LandmarkAttrs | Value") -> "LandmarkAttrs":
        """One LandmarkAttrs, or the op's attribute arguments in schema order, as a LandmarkAttrs."""
        if len(args) == 1 and isinstance(args[0], LandmarkAttrs):
            return args[0]
        return cls(*args)

    def op_args(self) -> tuple:
        """The custom op's attribute arguments, in schema order (ratios as float, as the schema types them)."""
        return (self.num_landmarks, self.num_prefix, float(self.massive_ratio), float(self.artifact_ratio), self.method)

    def attributes(self) -> dict[str, Value]:
        """The ONNX node's attributes (field name -> value; the identity attributes are the caller's)."""
        return dict(zip((f.name for f in op(LANDMARKS).fields), self.op_args()))

    @property
    def method_code(self) -> int:
        """The method as the C++ enum / C API code (its index in the contract's choices)."""
        return LANDMARK_METHODS.index(self.method)


HEADER_PATH = "plugins/fna/fna_contract.h"


def _cpp_number(x: Optional[float], none: str) -> str:
    if x is None:
        return none
    return repr(float(x))


def _cpp_string(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _camel(name: str) -> str:
    return "".join(part.capitalize() for part in name.lower().split("_"))


def _cpp_default(f: Field) -> Optional[str]:
    """The typed C++ constant of a field's default, or None for a required field."""
    if f.required:
        return None
    if f.type == "int32":
        return f"constexpr int32_t {{}} = {int(f.default)};"
    if f.type == "float32":
        return f"constexpr float {{}} = {float(f.default)!r}f;"
    if f.choices:  # a choice field becomes an enum (only method today)
        return f"constexpr {_camel(f.name)} {{}} = {_camel(f.name)}::k{_camel(str(f.default))};"
    return f"constexpr char const* {{}} = {_cpp_string(str(f.default))};"


def render_cpp_header() -> str:
    """plugins/fna/fna_contract.h: the table above as constexpr C++ (no TensorRT, no CUDA)."""
    lines = [
        "// GENERATED from fna_deploy/contract.py by scripts/gen_contract_header.py -- do not edit by hand.",
        "// The fna plugin contract: op names, version, namespace and the typed fields of each creator.",
        "// tests/test_contract.py regenerates this file and fails when the committed copy differs.",
        "#pragma once",
        "",
        "#include <cstdint>",
        "#include <limits>",
        "",
        "namespace fna {",
        "namespace contract {",
        "",
        "enum class FieldType : int32_t { kInt32 = 0, kFloat32 = 1, kString = 2 };",
        "",
        "// One creator field == one ONNX attribute of the same name. Numbers are held as double;",
        "// minimum/maximum are inclusive, NaN when unbounded; choices is '|'-separated, \"\" when any.",
        "struct FieldSpec {",
        "    char const* name;",
        "    FieldType type;",
        "    bool required;",
        "    double default_number;",
        "    char const* default_string;",
        "    double minimum;",
        "    double maximum;",
        "    char const* choices;",
        "};",
        "",
        "struct OpSpec {",
        "    char const* name;",
        "    FieldSpec const* fields;",
        "    int32_t num_fields;",
        "};",
        "",
        f"constexpr char const* kDomain = {_cpp_string(DOMAIN)};",
        f"constexpr char const* kNamespace = {_cpp_string(PLUGIN_NAMESPACE)};",
        f"constexpr char const* kVersion = {_cpp_string(PLUGIN_VERSION)};",
    ]
    ident = {LANDMARKS: "Landmarks", NYSTROM: "Nystrom"}
    for o in OPS:
        lines.append(f"constexpr char const* k{ident[o.name]}Name = {_cpp_string(o.name)};")
    lines.append("constexpr double kUnbounded = std::numeric_limits<double>::quiet_NaN();")
    for o in OPS:
        lines += ["", f"constexpr FieldSpec k{ident[o.name]}Fields[] = {{"]
        for f in o.fields:
            number = 0.0 if f.required or f.type == "string" else float(f.default)
            text = f.default if f.type == "string" and not f.required else ""
            lines.append(
                f"    {{{_cpp_string(f.name)}, FieldType::{FIELD_TYPES[f.type][2]}, {'true' if f.required else 'false'}, "
                f"{number!r}, {_cpp_string(text)}, {_cpp_number(f.minimum, 'kUnbounded')}, "
                f"{_cpp_number(f.maximum, 'kUnbounded')}, {_cpp_string('|'.join(f.choices))}}},"
            )
        lines += ["};", f"constexpr int32_t kNum{ident[o.name]}Fields = {len(o.fields)};"]
    lines += ["", "// Choice fields as enums, in the order of their choices (the C API's codes)."]
    for o in OPS:
        for f in o.fields:
            if f.choices:
                enum = _camel(f.name)
                items = ", ".join(f"k{_camel(c)} = {i}" for i, c in enumerate(f.choices))
                names = ", ".join(_cpp_string(c) for c in f.choices)
                lines += [
                    f"enum class {enum} : int32_t {{ {items} }};",
                    f"constexpr char const* k{enum}Names[] = {{{names}}};",
                    f"constexpr int32_t kNum{enum}s = {len(f.choices)};",
                ]
    lines += ["", "// Typed defaults of the optional fields (required fields have none)."]
    for o in OPS:
        for f in o.fields:
            decl = _cpp_default(f)
            if decl is not None:
                lines.append(decl.format(f"k{ident[o.name]}{_camel(f.name)}Default"))
    lines += ["", "// Limits of the CUDA kernels; larger inputs run the reference (tokens: exclusive, others inclusive)."]
    lines += [f"constexpr int64_t k{_camel(name)} = {value};" for name, value in KERNEL_LIMITS.items()]
    lines += ["", "constexpr OpSpec kOps[] = {"]
    lines += [f"    {{k{ident[o.name]}Name, k{ident[o.name]}Fields, kNum{ident[o.name]}Fields}}," for o in OPS]
    lines += ["};", f"constexpr int32_t kNumOps = {len(OPS)};", "", "}  // namespace contract", "}  // namespace fna", ""]
    return "\n".join(lines)
