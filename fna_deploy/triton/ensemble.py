"""Images in: beside a served model NAME, a python-backend preprocessing model ``NAME_preprocess``
(encoded JPEG/PNG/WebP bytes -> pixels, by the recipe the export recorded) and a Triton ensemble
``NAME_images`` (bytes in, the model's outputs out). Both folders carry the fna-deploy marker and
are written all at once; their configs are parsed back with Triton's ModelConfig protobuf."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from .config import RepositoryOptions, build_config, parse_config, render_config, validate_name
from .repository import PYTHON_MODEL, check_target, write_marker
from .tensors import TensorSpec, onnx_info

IMAGE_INPUT = "image"  # the ensemble's input: one encoded image per batch item (TYPE_STRING, dims [1])
PIXELS = "pixels"
PREPROCESS_FILE = "fna_preprocess.py"  # fna_deploy/triton/preprocess.py, copied beside model.py

# the numpy-1/numpy-2 tensor helpers of the ONNX Runtime model, shared by this model
_COMPAT = PYTHON_MODEL[PYTHON_MODEL.index("# The python backend stubs"):PYTHON_MODEL.index("class TritonPythonModel")]

PREPROCESS_MODEL = '''\
"""Triton Python backend: encoded images (JPEG, PNG, WebP) -> the model's input pixels.

Written by fna-deploy; the recipe (resize, crop, normalisation recorded at export) is the config
parameter "preprocess", the code is fna_preprocess.py beside this file. A payload that does not
decode fails its own request only.
"""

import importlib.util
import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils


''' + _COMPAT + '''
class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        here = os.path.join(args["model_repository"], args["model_version"])
        spec = importlib.util.spec_from_file_location("fna_preprocess", os.path.join(here, "fna_preprocess.py"))
        self.lib = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(self.lib)
        self.recipe = self.lib.check_recipe(json.loads(config["parameters"]["preprocess"]["string_value"]))
        self.input = config["input"][0]["name"]
        self.output = config["output"][0]["name"]

    def execute(self, requests):
        responses = []
        for request in requests:
            items = pb_utils.get_input_tensor_by_name(request, self.input).as_numpy().reshape(-1)
            try:
                pixels = np.stack([self._one(i, item) for i, item in enumerate(items)])
            except ValueError as exc:
                code = getattr(pb_utils.TritonError, "INVALID_ARG", None)  # a client error (400) where the backend knows codes
                error = pb_utils.TritonError(str(exc), code) if code is not None else pb_utils.TritonError(str(exc))
                responses.append(pb_utils.InferenceResponse(output_tensors=[], error=error))
                continue
            responses.append(pb_utils.InferenceResponse([_tensor(self.output, pixels)]))
        return responses

    def _one(self, index, item):
        try:
            return self.lib.preprocess(item, self.recipe)
        except ValueError as exc:
            raise ValueError(f"image {index} of the request: {exc}") from None
'''


def images_names(name: str) -> tuple[str, str]:
    """(preprocessing model, ensemble) names for the served model ``name``."""
    return validate_name(f"{name}_preprocess"), validate_name(f"{name}_images")


def artifact_recipe(artifact: "str | os.PathLike[str]") -> dict:
    """The preprocessing recipe recorded at export: the ONNX metadata ``preprocess`` (an engine's
    recipe is read from the ONNX its sidecar names)."""
    from .preprocess import check_recipe

    artifact = Path(artifact)
    source = artifact
    if artifact.suffix in (".plan", ".engine"):
        from .tensors import sidecar_path

        try:
            named = Path(json.loads(sidecar_path(artifact).read_text())["onnx"])
        except (OSError, ValueError, KeyError, TypeError):
            raise ValueError(f"{artifact.name}: its sidecar names no ONNX export to read the image preprocessing from") from None
        candidates = [named, artifact.parent / named.name]
        source = next((c for c in candidates if c.is_file()), None)
        if source is None:
            raise FileNotFoundError(2, "the engine's ONNX export (its preprocessing recipe) is missing; put it beside the engine", str(named))
    text = onnx_info(source).metadata.get("preprocess")
    if not text:
        raise ValueError(f"{source.name} records no image preprocessing (exported by an older fna-deploy, or from a .pt2 graph); "
                         "re-export it from timm:NAME, hf:DIR or a .pt module to serve images")
    try:
        return check_recipe(json.loads(text))
    except json.JSONDecodeError:
        raise ValueError(f"{source.name}: its preprocess metadata is not JSON") from None


def check_targets(repository: "str | os.PathLike[str]", name: str, *, force: bool) -> tuple[str, str]:
    """The two names, after refusing folders that exist (without ``force``) or that fna-deploy did not write."""
    names = images_names(name)
    for model in names:
        check_target(Path(repository) / model, force)
    return names


@dataclass
class ImagesReport:
    preprocess: str
    ensemble: str
    input: str
    recipe: dict
    folders: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _ensemble_config(name: str, model: Any, preprocess: str) -> Any:
    from .config import _model_config_pb2

    pb2 = _model_config_pb2()
    config = pb2.ModelConfig()
    config.name = name
    config.platform = "ensemble"
    config.max_batch_size = model.max_batch_size
    tensor = config.input.add()
    tensor.name, tensor.data_type = IMAGE_INPUT, pb2.DataType.Value("TYPE_STRING")
    tensor.dims.append(1)
    for out in model.output:
        config.output.add().CopyFrom(out)
    first = config.ensemble_scheduling.step.add()
    first.model_name, first.model_version = preprocess, -1
    first.input_map[IMAGE_INPUT] = IMAGE_INPUT
    first.output_map[PIXELS] = PIXELS
    second = config.ensemble_scheduling.step.add()
    second.model_name, second.model_version = model.name, -1
    second.input_map[model.input[0].name] = PIXELS
    for out in model.output:
        second.output_map[out.name] = out.name
    parsed = parse_config(render_config(config))
    if parsed != config:
        raise ValueError("the ensemble's config.pbtxt does not round-trip through Triton's ModelConfig protobuf")
    return parsed


def write_image_models(repository: "str | os.PathLike[str]", name: str, recipe: dict, *, force: bool = False,
                       instances: int = 1) -> ImagesReport:
    """Write ``NAME_preprocess`` and ``NAME_images`` for the model ``NAME`` already in ``repository``."""
    from ..utils import replace_folder_atomic

    repository = Path(repository)
    preprocess, ensemble = check_targets(repository, name, force=force)
    model = parse_config((repository / name / "config.pbtxt").read_text())
    if model.max_batch_size < 1:
        raise ValueError(f"model {name!r} has a static batch (max_batch_size 0); images in need a batching model: export with a dynamic batch")
    if len(model.input) != 1:
        raise ValueError(f"model {name!r} has {len(model.input)} inputs; images in feed one pixel input")
    dims = list(model.input[0].dims)
    wanted = [recipe["channels"], *recipe["size"]]
    if any(d not in (-1, w) for d, w in zip(dims, wanted)) or len(dims) != 3:
        raise ValueError(f"model {name!r} takes {dims}, but the recorded preprocessing gives {wanted}")
    from .config import _model_config_pb2

    dtype = _model_config_pb2().DataType.Name(model.input[0].data_type)
    if dtype != "TYPE_FP32":
        raise ValueError(f"model {name!r} takes {dtype} pixels; images in serve float32 models (export without --fp16 I/O)")
    options = RepositoryOptions(name=preprocess, backend="python", max_batch_size=model.max_batch_size, instances=instances, gpu=False)
    pre_config = build_config(options, [TensorSpec(IMAGE_INPUT, "bytes", [-1, 1])], [TensorSpec(PIXELS, "float32", [-1, *wanted])],
                              parameters={"preprocess": json.dumps(recipe, sort_keys=True)})
    ens_config = _ensemble_config(ensemble, model, preprocess)
    library = Path(__file__).with_name("preprocess.py").read_text()

    def write_preprocess(staging: Path) -> None:
        (staging / "1").mkdir()
        (staging / "1" / "model.py").write_text(PREPROCESS_MODEL)
        (staging / "1" / PREPROCESS_FILE).write_text(library)
        (staging / "config.pbtxt").write_text(f"# written by fna-deploy: images in for {name}\n" + render_config(pre_config))
        write_marker(staging, preprocess, images_for=name)

    def write_ensemble(staging: Path) -> None:
        (staging / "1").mkdir()  # an ensemble needs a version folder, empty
        (staging / "config.pbtxt").write_text(f"# written by fna-deploy: encoded images -> {name}\n" + render_config(ens_config))
        write_marker(staging, ensemble, images_for=name)

    written: list[Path] = []
    try:
        for model_name, populate in ((preprocess, write_preprocess), (ensemble, write_ensemble)):
            written.append(replace_folder_atomic(repository / model_name, populate, check=lambda t: check_target(t, force)))
    except BaseException:
        import shutil

        for folder in written:  # both or neither
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return ImagesReport(preprocess, ensemble, IMAGE_INPUT, recipe, [str(p) for p in written])


def is_image_model(config: dict) -> Optional[str]:
    """The input name when a served model takes encoded images (one TYPE_STRING input), else None."""
    inputs = config.get("input", [])
    if len(inputs) == 1 and inputs[0].get("data_type") in ("TYPE_STRING", "TYPE_BYTES"):
        return inputs[0]["name"]
    return None


def served_step(config: dict) -> Optional[str]:
    """The model an ensemble ends in (its last step), else None."""
    steps = (config.get("ensemble_scheduling") or {}).get("step") or []
    return steps[-1].get("model_name") if steps else None


def served_recipe(config: dict) -> Optional[dict]:
    """The preprocessing recipe a served model's config carries (parameter fna_preprocess or preprocess)."""
    from .preprocess import check_recipe

    params = config.get("parameters") or {}
    for key in ("fna_preprocess", "preprocess"):
        value = params.get(key)
        if isinstance(value, dict) and value.get("string_value"):
            return check_recipe(json.loads(value["string_value"]))
    return None


def read_image_files(image: "str | os.PathLike[str]", limit: int) -> list[tuple[Path, bytes]]:
    """The encoded bytes of an image file, or of the first ``limit`` images of a folder (by name)."""
    from ..images import image_files

    path = Path(image)
    if path.is_dir():
        files = image_files(path)[:limit]
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(2, "no such image file or folder", str(path))
    return [(f, f.read_bytes()) for f in files]


def preprocess_files(files: list[tuple[Path, bytes]], recipe: dict):
    """float32 pixels [N, C, H, W] for ``files`` by ``recipe`` (the code the server runs); ValueError names the file."""
    import numpy as np

    from .preprocess import preprocess

    arrays = []
    for path, data in files:
        try:
            arrays.append(preprocess(data, recipe))
        except ValueError as exc:
            raise ValueError(f"{str(path)!r}: {exc}") from None
    return np.stack(arrays)


def encoded_payload(files: list[tuple[Path, bytes]]):
    """The request tensor of an images-in model: one encoded image per batch row, [N, 1] of bytes."""
    import numpy as np

    return np.array([[data] for _, data in files], dtype=object)


# lossless changes that make a different image (and answer) of any image: the load mode's distinct inputs
_TRANSPOSES = (None, "FLIP_LEFT_RIGHT", "FLIP_TOP_BOTTOM", "ROTATE_180", "TRANSPOSE", "ROTATE_90", "ROTATE_270", "TRANSVERSE")


def distinct_image_files(files: list[tuple[Path, bytes]], count: int) -> list[list[tuple[Path, bytes]]]:
    """``count`` versions of ``files``: the files as they are, then flipped or rotated copies encoded as
    PNG (lossless), so every version is another image whose answer differs."""
    import io

    from PIL import Image

    if count < 1:
        raise ValueError(f"count must be >= 1, got {count!r}")
    versions = [list(files)]
    for k in range(1, count):
        method = Image.Transpose[_TRANSPOSES[k % len(_TRANSPOSES)]]
        version = []
        for path, data in files:
            with Image.open(io.BytesIO(data)) as image:
                image.load()
                if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"):
                    image = image.convert("RGB")  # e.g. CMYK JPEG: PNG cannot hold it
                out = io.BytesIO()
                image.transpose(method).save(out, format="PNG")
            version.append((path, out.getvalue()))
        versions.append(version)
    return versions
