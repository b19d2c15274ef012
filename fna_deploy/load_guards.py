"""Guards around the third-party loaders that :mod:`fna_deploy.loading` calls: bounds on the size
fields of an ``hf:DIR`` config.json (a hostile ``num_hidden_layers: 1e7`` built for hours), the
refusal of weights that do not cover the model (half-random models), and keeping transformers'
load report and torch.export's logged tracebacks off the terminal (the one-line error says it),
and the .pt2 guards: entries that would run code, and no unpickling while an archive loads."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

import torch

from .loading import ModelLoadError, _first_line


# bounds on the size fields of an hf config.json: a hostile or mistyped value (num_hidden_layers 1e7)
# would build a model for hours or exhaust memory before anything could refuse it
HF_SIZE_LIMITS = {
    "num_hidden_layers": 256,
    "hidden_size": 32768,
    "num_attention_heads": 1024,
    "intermediate_size": 262144,
    "image_size": 16384,
    "patch_size": 1024,
    "num_channels": 64,
    "num_register_tokens": 1024,
}
HF_MAX_PARAMETERS = 50e9  # about 12 x layers x hidden^2; ViT-22B is under half of it


def check_hf_sizes(config: Any, path: Path) -> None:
    """Refuse size fields outside :data:`HF_SIZE_LIMITS` (the top config and a nested vision_config)."""
    where = str(path / "config.json")
    for part in (config, getattr(config, "vision_config", None)):
        if part is None:
            continue
        for key, limit in HF_SIZE_LIMITS.items():
            value = getattr(part, key, None)
            if value is None or (key == "image_size" and isinstance(value, (list, tuple))):
                continue
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= limit or (value == 0 and key != "num_register_tokens"):
                raise ModelLoadError(f"{where!r}: {key} is {value!r}; fna-deploy takes an integer from "
                                     f"{0 if key == 'num_register_tokens' else 1} to {limit}; fix the config")
        layers, hidden = getattr(part, "num_hidden_layers", None), getattr(part, "hidden_size", None)
        if isinstance(layers, int) and isinstance(hidden, int) and 12 * layers * hidden * hidden > HF_MAX_PARAMETERS:
            raise ModelLoadError(f"{where!r}: {layers} layers of width {hidden} make about {12 * layers * hidden * hidden:.2g} "
                                 f"parameters, more than the {HF_MAX_PARAMETERS:.0g} fna-deploy builds; fix the config")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """transformers' load report and progress bars off while loading (our refusal says what matters)."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


def refuse_partial_load(info: dict, directory: str, class_name: str) -> None:
    """Weights that do not cover the model (missing, unexpected or mismatched tensors) would leave
    freshly initialised layers: refused, as the timm path refuses such checkpoints."""
    parts = []
    for key, label in (("missing_keys", "missing"), ("unexpected_keys", "unexpected"), ("mismatched_keys", "of the wrong shape")):
        names = sorted(str(k if not isinstance(k, tuple) else k[0]) for k in (info.get(key) or ()))
        if names:
            parts.append(f"{len(names)} {label} (e.g. {names[0]!r})")
    if parts:
        raise ModelLoadError(
            f"{directory!r}: the weights do not match config.json for {class_name}: {', '.join(parts)} tensors, so "
            "part of the model would be random; re-save the folder with save_pretrained from the model you mean"
        )


@contextlib.contextmanager
def quiet_torch_export() -> Iterator[list[str]]:
    """torch.export.load logs a traceback (warning level) before it raises on a damaged or legacy
    archive, then raises "check the warnings above": the warnings are kept out of the terminal and
    handed to the caller (first lines), who puts the cause into its one-line error."""
    import logging

    causes: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            exc = record.exc_info[1] if record.exc_info else None
            causes.append(f"{type(exc).__name__}: {_first_line(exc)}" if exc is not None else record.getMessage())

    logger = logging.getLogger("torch.export")
    level, propagate, handlers = logger.level, logger.propagate, logger.handlers[:]
    logger.handlers = [Keep()]  # torch's own handler (torch._logging) prints the traceback
    logger.setLevel(logging.WARNING)
    logger.propagate = False
    try:
        yield causes
    finally:
        logger.handlers = handlers
        logger.setLevel(level)
        logger.propagate = propagate


def _loads_weights_only(data: bytes) -> bool:
    """Whether a torch.save blob loads as plain data (tensors, containers), running no code."""
    import io

    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception:
        return False
    return True


def _is_json(data: bytes) -> bool:
    import json

    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def pt2_code_entries(path: "str | os.PathLike[str]") -> list[str]:
    """The entries of a ``.pt2`` archive that would run code when loaded: pickled weights or
    constants, pickled custom/opaque objects, AOTInductor shared libraries, and torch.save blobs
    that need more than ``weights_only`` unpickling. Reads the archive without unpickling anything.

    Raises ModelLoadError when the file is not a zip archive at all.
    """
    import json
    import zipfile

    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ModelLoadError(
            f"{str(path)!r} is not a torch.export archive ({exc}); give a file written by torch.export.save"
        ) from None
    found: list[str] = []
    with archive:
        for info in archive.infolist():
            name = info.filename
            inner = name.split("/", 1)[1] if "/" in name else name  # archives keep everything under one top folder
            if inner.startswith("data/aotinductor/") or inner.endswith(".so"):
                found.append(f"{name} (compiled code)")
            elif inner.endswith("_config.json") and inner.startswith(("data/weights/", "data/constants/")):
                try:
                    config = json.loads(archive.read(info)).get("config", {})
                except (ValueError, AttributeError):
                    found.append(f"{name} (unreadable)")
                    continue
                for fqn, meta in config.items():
                    kind = str(meta.get("path_name", ""))
                    if meta.get("use_pickle") or kind.startswith(("custom_obj", "opaque_obj")):
                        found.append(f"{fqn} in {name} (pickled)")
            elif inner.endswith((".pt", ".pkl", ".json")) or "/serialized_" in f"/{inner}":
                data = archive.read(info)
                if inner.endswith(".json") and _is_json(data):
                    continue  # plain JSON (a legacy archive's .json entry may be a pickle in disguise)
                if not _loads_weights_only(data):
                    found.append(f"{name} (pickled object)")
    return found


class _UnpicklingRefused(ModelLoadError):
    pass


@contextlib.contextmanager
def _no_unpickling(enabled: bool = True) -> Iterator[None]:
    """While active, ``torch.load`` only loads plain data (weights_only=True), whatever its caller
    asks: a second line of defence behind :func:`pt2_code_entries` for formats it does not know."""
    if not enabled:
        yield
        return
    original = torch.load

    def guarded(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("weights_only") is False:
            raise _UnpicklingRefused(
                "the archive asks to unpickle code; if you trust its source pass --allow-pickle (allow_pickle=True)"
            )
        kwargs["weights_only"] = True
        return original(*args, **kwargs)

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise _UnpicklingRefused(
            "the archive holds a pickled object; if you trust its source pass --allow-pickle (allow_pickle=True)"
        )

    # opaque and custom objects of a .pt2 go through pickle.loads / the TorchScript unpickler, not torch.load
    import types

    from torch.export.pt2_archive import _package

    original_pickle, original_obj = _package.pickle, torch._C._pickle_load_obj
    torch.load = guarded  # type: ignore[assignment]
    _package.pickle = types.SimpleNamespace(**{**vars(original_pickle), "loads": refuse, "load": refuse})  # type: ignore[assignment]
    torch._C._pickle_load_obj = refuse  # type: ignore[attr-defined]
    try:
        yield
    finally:
        torch.load = original  # type: ignore[assignment]
        _package.pickle = original_pickle  # type: ignore[assignment]
        torch._C._pickle_load_obj = original_obj  # type: ignore[attr-defined]
