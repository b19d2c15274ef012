"""Graph surgery and file writing for exported models: names, cleanup, metadata, atomic save."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Optional

import onnx

from .schemas import DOMAIN, LANDMARKS, NYSTROM, VERSION

# protobuf refuses messages over 2 GiB; leave headroom for the graph itself
EXTERNAL_DATA_THRESHOLD = 1_800_000_000


def name_fna_nodes(model: onnx.ModelProto, nystrom_blocks: list[int], landmark_blocks: list[int]) -> None:
    """Give fna nodes stable names that say which transformer block they belong to."""
    nys = [n for n in model.graph.node if n.domain == DOMAIN and n.op_type == NYSTROM]
    lms = [n for n in model.graph.node if n.domain == DOMAIN and n.op_type == LANDMARKS]
    for nodes, blocks, kind in ((nys, nystrom_blocks, "NystromAttention"), (lms, landmark_blocks, "FnaLandmarks")):
        if len(nodes) == len(blocks):
            for node, block in zip(nodes, blocks):
                node.name = f"/blocks.{block}/attn/{kind}"
        else:  # not a one-to-one mapping (e.g. a pre-exported graph): number them in order
            for i, node in enumerate(nodes):
                node.name = f"/fna/{kind}_{i}"


def cleanup(model: onnx.ModelProto) -> onnx.ModelProto:
    """Fold constants, drop dead nodes and sort topologically with onnx-graphsurgeon.

    graphsurgeon does not carry model-local functions or metadata through, so the caller
    re-attaches them afterwards.
    """
    import onnx_graphsurgeon as gs

    functions = list(model.functions)
    metadata = list(model.metadata_props)
    opsets = {o.domain: o.version for o in model.opset_import}
    graph = gs.import_onnx(model)
    graph.fold_constants(error_ok=True).cleanup(remove_unused_graph_inputs=False).toposort()
    cleaned = gs.export_onnx(graph, do_type_check=False)
    cleaned.ir_version = model.ir_version
    del cleaned.opset_import[:]
    cleaned.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in opsets.items())
    del cleaned.functions[:]
    cleaned.functions.extend(functions)
    del cleaned.metadata_props[:]
    cleaned.metadata_props.extend(metadata)
    cleaned.producer_name = model.producer_name
    cleaned.producer_version = model.producer_version
    return cleaned


def ensure_fna_opset(model: onnx.ModelProto) -> None:
    if not any(o.domain == DOMAIN for o in model.opset_import):
        model.opset_import.append(onnx.helper.make_opsetid(DOMAIN, VERSION))


def set_metadata(model: onnx.ModelProto, entries: dict[str, str]) -> None:
    keep = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for key, value in entries.items():
        prop = model.metadata_props.add()
        prop.key, prop.value = key, value


def read_metadata(model: onnx.ModelProto) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def node_counts(model: onnx.ModelProto) -> dict[str, int]:
    """op type -> count over the main graph (custom domains as ``domain::Op``)."""
    return dict(Counter(f"{n.domain}::{n.op_type}" if n.domain else n.op_type for n in model.graph.node))


def check_writable(path: Path) -> None:
    """Fail early, before any long work, when ``path`` cannot be written."""
    parent = path.parent if str(path.parent) else Path(".")
    if path.exists() and path.is_dir():
        raise IsADirectoryError(21, "is a directory, not a file path", str(path))
    if not parent.exists():
        raise FileNotFoundError(2, "output directory does not exist", str(parent))
    if not parent.is_dir():
        raise NotADirectoryError(20, "the output's folder is a file", str(parent))
    if not os.access(parent, os.W_OK):
        raise PermissionError(13, "output directory is not writable", str(parent))


def _uses_external_file(path: Path, data_name: str) -> bool:
    """Whether the ONNX file at ``path`` keeps its weights in ``data_name`` (so that file is its own)."""
    if not path.is_file():
        return False
    try:
        existing = onnx.load(str(path), load_external_data=False)
    except Exception:
        return False
    for tensor in existing.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            if any(entry.key == "location" and entry.value == data_name for entry in tensor.external_data):
                return True
    return False


def _to_external(model: onnx.ModelProto, data_name: str) -> None:
    """Mark the model's tensors of 1 KiB and more as external data in ``data_name`` (beside the model).
    onnx's own conversion refuses a ``location`` that exists relative to the working directory, which
    is not where the file goes; so convert without a location and name the file afterwards."""
    from onnx.external_data_helper import convert_model_to_external_data

    convert_model_to_external_data(model, all_tensors_to_one_file=True, location=None, size_threshold=1024)
    for tensor in onnx.external_data_helper._get_all_tensors(model):
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = data_name


def save_atomic(model: onnx.ModelProto, path: "str | os.PathLike[str]", *, external_data: Optional[bool] = None) -> list[Path]:
    """Write ``model`` to ``path`` (and ``path.data`` for external weights) all or nothing.

    Everything is written into a staging folder beside the target, then renamed into place under
    the folder's writer lock (:func:`fna_deploy.utils.folder_lock`: concurrent writers of one path
    never mix one's model with another's weights), so an interrupted or failed write leaves no
    half-written model. Files get 0666 less the umask (usually 0644). Returns the files written.
    """
    from ..utils import clean_stale_staging, current_umask, folder_lock, staging_dir

    path = Path(path)
    check_writable(path)
    parent = path.parent if str(path.parent) else Path(".")
    use_external = model.ByteSize() > EXTERNAL_DATA_THRESHOLD if external_data is None else external_data
    data_name = path.name + ".data"
    data_path = parent / data_name

    def check_data_file() -> bool:
        replaceable = data_path.exists() and _uses_external_file(path, data_name)  # the weights of the model being replaced
        if use_external and (data_path.exists() or data_path.is_symlink()) and not replaceable:
            raise FileExistsError(17, f"{data_name} exists and is not the weights file of {path.name}; move it away or choose another output", str(data_path))
        return replaceable

    check_data_file()  # early, before writing; again under the lock
    staging = staging_dir(parent, path.name)
    try:
        staged = staging / path.name
        if use_external:
            _to_external(model, data_name)
        onnx.save_model(model, staged)
        for file in staging.iterdir():
            os.chmod(file, 0o666 & ~current_umask())  # onnx writes external data 0600
        written = []
        with folder_lock(parent):
            clean_stale_staging(parent, path.name)
            replaceable = check_data_file()
            if use_external:
                os.replace(staging / data_name, data_path)
                written.append(data_path)
            elif replaceable:
                os.remove(data_path)  # the external weights of the model this write replaces: stale now
            os.replace(staged, path)
        written.insert(0, path)
        return written
    finally:
        shutil.rmtree(staging, ignore_errors=True)
