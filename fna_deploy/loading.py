"""MODEL specs -> nn.Module: ``timm:NAME``, ``hf:DIR``, ``.pt2`` archives, pickled ``.pt`` modules.

Weights are the user's: nothing here downloads. ``timm:NAME`` builds the architecture with
seeded random weights (:data:`DEFAULT_SEED` unless ``seed``) unless ``checkpoint`` names a ``.safetensors`` or state-dict ``.pt/.pth`` file
(read with ``weights_only=True``); ``hf:DIR`` reads a local ``save_pretrained`` directory.
"""

from __future__ import annotations

from .errors import FnaDeployError

import os
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

SPEC_FORMS = "timm:NAME, hf:DIR, a .pt2 torch.export archive, or a .pt file holding a whole module"

# the seed of the random weights a timm:NAME without --checkpoint gets, the same in every command
DEFAULT_SEED = 0


def has_random_weights(spec: "str | os.PathLike[str] | nn.Module", checkpoint: "object | None" = None) -> bool:
    """Whether ``spec`` (with ``checkpoint``) builds an architecture with random weights: timm:NAME
    without a checkpoint. hf:DIR folders, .pt2 archives and .pt modules carry their own weights."""
    return isinstance(spec, (str, os.PathLike)) and os.fspath(spec).startswith("timm:") and checkpoint is None


def weights_label(seed: Optional[int]) -> str:
    """How every report names the weights: ``random weights (seed N)`` or ``the given weights``."""
    return f"random weights (seed {seed})" if seed is not None else "the given weights"


RANDOM_FAIL_HINT = "the model has random weights; pass --checkpoint FILE to check the weights you deploy"

# model_type -> the vision class to build when config.json names no usable architecture
_HF_DEFAULT_CLASS = {
    "vit": "ViTModel",
    "dinov2": "Dinov2Model",
    "dinov2_with_registers": "Dinov2WithRegistersModel",
    "clip": "CLIPVisionModel",
    "clip_vision_model": "CLIPVisionModel",
    "siglip": "SiglipVisionModel",
    "siglip_vision_model": "SiglipVisionModel",
}
_HF_ARCHITECTURES = {
    "ViTModel",
    "ViTForImageClassification",
    "Dinov2Model",
    "Dinov2ForImageClassification",
    "Dinov2WithRegistersModel",
    "Dinov2WithRegistersForImageClassification",
    "CLIPVisionModel",
    "CLIPVisionModelWithProjection",
    "SiglipVisionModel",
    "SiglipForImageClassification",
}


class ModelLoadError(FnaDeployError, ValueError):
    """A model spec or checkpoint that cannot be loaded; the message says what to do."""


def _require_file(path: Path, what: str) -> None:
    if not path.exists():
        raise ModelLoadError(f"{what} {str(path)!r} does not exist; check the path")
    if not path.is_file():
        raise ModelLoadError(f"{what} {str(path)!r} is not a file")


def load_state_dict_file(path: "str | os.PathLike[str]") -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a ``.pt/.pth/.bin`` file, never unpickling code.

    Unwraps the usual containers ({"state_dict": ...}, {"model": ...}) and a DDP ``module.`` prefix.
    """
    path = Path(path)
    _require_file(path, "checkpoint")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            data: Any = load_file(str(path))
        except Exception as exc:  # safetensors raises its own error types
            raise ModelLoadError(f"checkpoint {str(path)!r} is not a readable safetensors file ({exc})") from None
    else:
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelLoadError(
                f"checkpoint {str(path)!r} is not a plain state dict that loads with weights_only=True "
                f"({type(exc).__name__}); save model.state_dict() or convert it to .safetensors"
            ) from None
    for key in ("state_dict", "model", "module", "model_state_dict"):
        if isinstance(data, dict) and isinstance(data.get(key), dict):
            data = data[key]
            break
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise ModelLoadError(f"checkpoint {str(path)!r} does not hold a state dict (a mapping of names to tensors)")
    if data and all(k.startswith("module.") for k in data):
        data = {k[len("module.") :]: v for k, v in data.items()}
    return data


def _load_into(model: nn.Module, state_dict: dict[str, torch.Tensor], path: Path) -> None:
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = next((line.strip() for line in first if "size mismatch" in line), first[0] if first else "")
        raise ModelLoadError(f"checkpoint {str(path)!r} does not fit {type(model).__name__}: {detail}") from None
    if result.missing_keys or result.unexpected_keys:
        parts = []
        if result.missing_keys:
            parts.append(f"{len(result.missing_keys)} missing (e.g. {result.missing_keys[0]!r})")
        if result.unexpected_keys:
            parts.append(f"{len(result.unexpected_keys)} unexpected (e.g. {result.unexpected_keys[0]!r})")
        raise ModelLoadError(
            f"checkpoint {str(path)!r} does not match {type(model).__name__}: {', '.join(parts)} keys; "
            "check that --arch names the architecture the weights were trained with"
        )


def _load_timm(name: str, checkpoint: Optional[Path], img_size: Optional[int], seed: int = DEFAULT_SEED) -> nn.Module:
    import timm

    if not name:
        raise ModelLoadError("timm: spec has no model name; use e.g. timm:vit_base_patch16_224")
    if not timm.is_model(name):
        raise ModelLoadError(
            f"timm has no model named {name!r}; list candidates with python -c "
            f"\"import timm; print(timm.list_models('*vit*'))\""
        )
    kwargs: dict[str, Any] = {}
    if img_size is not None:
        kwargs["img_size"] = img_size
    try:
        # random weights from a fixed seed: every command (and every run) builds the same model
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = timm.create_model(name, pretrained=False, **kwargs)
    except TypeError as exc:
        raise ModelLoadError(f"timm model {name!r} cannot be built with {kwargs}: {exc}") from None
    patch = getattr(getattr(model, "patch_embed", None), "patch_size", None)
    patch_px = max(patch) if isinstance(patch, (tuple, list)) else patch
    if img_size is not None and isinstance(patch_px, int) and img_size < patch_px:
        raise ModelLoadError(
            f"resolution {img_size} px is smaller than one {patch_px} px patch of {name}; use at least {patch_px} "
            f"(a multiple of {patch_px}, e.g. {patch_px * 14})"
        )
    _check_patch_multiple(img_size, patch_px, name)
    if checkpoint is not None:
        state_dict = load_state_dict_file(checkpoint)
        # timm's own filter remaps original-repo key names and resizes position embeddings
        module = __import__(type(model).__module__, fromlist=["checkpoint_filter_fn"])
        filter_fn = getattr(module, "checkpoint_filter_fn", None)
        if filter_fn is not None:
            try:
                state_dict = filter_fn(state_dict, model)
            except Exception as exc:
                raise ModelLoadError(
                    f"checkpoint {str(checkpoint)!r} could not be adapted to {name} ({type(exc).__name__}: {exc})"
                ) from None
        _load_into(model, state_dict, checkpoint)
    return model


def _check_patch_multiple(img_size: Optional[int], patch_px: Any, name: str) -> None:
    """A resolution that is not a multiple of the patch size would silently drop the border pixels."""
    if img_size is not None and isinstance(patch_px, int) and patch_px > 0 and img_size % patch_px:
        lower, upper = img_size // patch_px * patch_px, (img_size // patch_px + 1) * patch_px
        raise ModelLoadError(
            f"resolution {img_size} px is not a multiple of the {patch_px} px patches of {name}: the last "
            f"{img_size - lower} px rows and columns would be dropped; use {lower or upper} or {upper}"
        )


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


def _hf_weights(path: Path) -> str:
    """Which weights a save_pretrained folder holds: "safetensors" (preferred) or "bin" (then every
    .bin shard must load with weights_only=True: a pickle that needs more is refused)."""
    if any(path.glob("*.safetensors")):
        return "safetensors"
    shards = sorted(path.glob("pytorch_model*.bin"))
    if not shards:
        raise ModelLoadError(
            f"{str(path)!r} has a config.json but no weights (model.safetensors or pytorch_model.bin); "
            "save the model with save_pretrained into that folder"
        )
    for shard in shards:
        try:
            torch.load(shard, map_location="cpu", weights_only=True, mmap=True)
        except Exception as exc:
            raise ModelLoadError(
                f"{str(shard)!r} does not load with weights_only=True ({type(exc).__name__}): it holds more than plain "
                "tensors, and unpickling it would run code; convert the folder to safetensors (save_pretrained)"
            ) from None
    return "bin"


def _load_hf(directory: str, checkpoint: Optional[Path], img_size: Optional[int]) -> nn.Module:
    path = Path(directory)
    if not directory:
        raise ModelLoadError("hf: spec has no directory; use hf:PATH/TO/MODEL_DIR (a save_pretrained folder)")
    if not (path / "config.json").is_file():
        raise ModelLoadError(
            f"{directory!r} is not a Hugging Face model directory (no config.json); pass a folder written "
            "by save_pretrained (models are not downloaded here)"
        )
    try:
        import transformers
    except ImportError:
        raise ModelLoadError("hf: models need transformers; install it with: pip install 'fna-deploy[hf]'") from None
    from .patching.hf import HFVisionModel

    try:
        config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:
        raise ModelLoadError(
            f"{str(path / 'config.json')!r} is not a readable model config ({type(exc).__name__}); "
            "re-save the folder with save_pretrained"
        ) from None
    model_type = getattr(config, "model_type", None)
    if model_type not in _HF_DEFAULT_CLASS:
        raise ModelLoadError(
            f"{directory!r} holds a {model_type!r} model; fna-deploy supports "
            f"{', '.join(sorted(set(_HF_DEFAULT_CLASS)))}"
        )
    archs = [a for a in (getattr(config, "architectures", None) or []) if a in _HF_ARCHITECTURES]
    cls = getattr(transformers, archs[0] if archs else _HF_DEFAULT_CLASS[model_type])
    from .load_guards import check_hf_sizes, quiet_transformers, refuse_partial_load

    check_hf_sizes(config, path)
    patch_px = getattr(getattr(config, "vision_config", None) or config, "patch_size", None)
    _check_patch_multiple(img_size, max(patch_px) if isinstance(patch_px, (list, tuple)) else patch_px, directory)
    weights = _hf_weights(path)
    try:
        with quiet_transformers():
            model, info = cls.from_pretrained(str(path), local_files_only=True, use_safetensors=weights == "safetensors",
                                              output_loading_info=True)
    except Exception as exc:
        raise ModelLoadError(
            f"{directory!r}: the weights do not load into {cls.__name__} ({type(exc).__name__}: {_first_line(exc)}); "
            "re-save the folder with save_pretrained"
        ) from None
    refuse_partial_load(info, directory, cls.__name__)
    if checkpoint is not None:
        _load_into(model, load_state_dict_file(checkpoint), checkpoint)
    return HFVisionModel(model, img_size, source_dir=str(path))


def _load_pickled(path: Path, allow_pickle: bool) -> nn.Module:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        data = None  # not loadable as plain data: a pickled object graph
        if not allow_pickle:
            raise ModelLoadError(
                f"{str(path)!r} holds a pickled Python object, and unpickling runs whatever code the file "
                "carries; if you trust its source pass --allow-pickle (allow_pickle=True), otherwise save "
                "a state dict and load it with --arch timm:NAME --checkpoint FILE"
            ) from None
    if data is not None:
        raise ModelLoadError(
            f"{str(path)!r} holds weights only, not a model; name the architecture: "
            f"--arch timm:NAME (API: load_model('timm:NAME', checkpoint={str(path)!r}))"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ModelLoadError(
            f"{str(path)!r} is not a torch.save file ({type(exc).__name__}); give a .pt written by torch.save(model)"
        ) from None
    if not isinstance(obj, nn.Module):
        raise ModelLoadError(f"{str(path)!r} unpickled to a {type(obj).__name__}, not a torch.nn.Module")
    return obj


def _load_pt2(path: Path, allow_pickle: bool) -> nn.Module:
    if not allow_pickle:
        entries = pt2_code_entries(path)
        if entries:
            more = f" and {len(entries) - 1} more" if len(entries) > 1 else ""
            raise ModelLoadError(
                f"{str(path)!r} carries entries that run code when loaded ({entries[0]}{more}); if you trust its "
                "source pass --allow-pickle (allow_pickle=True), otherwise re-save it with plain tensor weights"
            )
    causes: list[str] = []
    try:
        from .load_guards import quiet_torch_export

        with _no_unpickling(enabled=not allow_pickle), quiet_torch_export() as causes:
            program = torch.export.load(str(path))
        # exported programs are already in inference form: .eval() is not supported on them
        return program.module()
    except _UnpicklingRefused as exc:
        raise ModelLoadError(f"{str(path)!r}: {exc}") from None
    except Exception as exc:
        detail = causes[0] if causes and "warnings above" in str(exc) else f"{type(exc).__name__}: {_first_line(exc)}"
        detail = detail.split(". ")[0].rstrip(".")  # the first sentence
        raise ModelLoadError(f"{str(path)!r} is not a readable torch.export archive ({detail}); re-save it with "
                             "torch.export.save") from None


def load_model(
    spec: Union[str, "os.PathLike[str]", nn.Module],
    *,
    checkpoint: "str | os.PathLike[str] | None" = None,
    img_size: Optional[int] = None,
    allow_pickle: bool = False,
    seed: Optional[int] = None,
) -> nn.Module:
    """Build or load a model from a spec, in eval mode on the CPU.

    - ``timm:NAME``: the timm architecture at ``img_size``, with ``checkpoint``'s weights, else
      random weights drawn from ``seed`` (default :data:`DEFAULT_SEED`: the same model every call);
    - ``hf:DIR``: a local transformers directory, wrapped as an image -> tensor module;
    - ``FILE.pt2``: a torch.export archive (its graph module);
    - ``FILE.pt``: a whole pickled module, only with ``allow_pickle=True``.
    """
    if isinstance(spec, nn.Module):
        return spec.eval()
    if img_size is not None and (isinstance(img_size, bool) or not isinstance(img_size, int) or img_size <= 0):
        raise ModelLoadError(f"img_size must be a positive int, got {img_size!r}")
    text = os.fspath(spec)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None:
        _require_file(ckpt, "checkpoint")
    if text.startswith("timm:"):
        model = _load_timm(text[len("timm:") :], ckpt, img_size, DEFAULT_SEED if seed is None else seed)
    elif text.startswith("hf:"):
        model = _load_hf(text[len("hf:") :], ckpt, img_size)
    else:
        path = Path(text)
        suffix = path.suffix.lower()
        if suffix not in (".pt2", ".pt", ".pth", ".bin", ".safetensors"):
            raise ModelLoadError(f"cannot tell what model {text!r} is; give {SPEC_FORMS}")
        _require_file(path, "model file")
        if ckpt is not None:
            raise ModelLoadError("--checkpoint applies to timm:NAME and hf:DIR specs; a model file carries its own weights")
        if suffix == ".safetensors":
            raise ModelLoadError(
                f"{text!r} holds weights only, not a model; name the architecture: --arch timm:NAME "
                f"(API: load_model('timm:NAME', checkpoint={text!r}))"
            )
        if suffix == ".pt2":
            model = _load_pt2(path, allow_pickle)
            _check_own_resolution(model, text, img_size)
            return model
        model = _load_pickled(path, allow_pickle)
        _check_own_resolution(model, text, img_size)
    return model.eval()


def own_resolution(model: nn.Module) -> Optional[tuple[int, int]]:
    """(H, W) a finished model runs at: a graph module's image input, else its family adapter's; None if unknown."""
    if isinstance(model, torch.fx.GraphModule):
        for node in model.graph.nodes:
            val = node.meta.get("val") if node.op == "placeholder" else None
            if val is not None and getattr(val, "dim", lambda: 0)() == 4:
                h, w = val.shape[-2:]
                return (int(h), int(w)) if isinstance(h, int) and isinstance(w, int) else None
        return None
    try:
        from .patching import model_info

        size = model_info(model).img_size
    except Exception:  # not a family the adapters know
        return None
    return (int(size[0]), int(size[1])) if size else None


def _check_own_resolution(model: nn.Module, text: str, img_size: Optional[int]) -> None:
    """A finished model runs at the resolution it was saved with: accept that one, refuse another."""
    if img_size is None:
        return
    own = own_resolution(model)
    if own is None:
        raise ModelLoadError(
            f"{text!r} is a finished model whose resolution cannot be read; drop --resolution (img_size), "
            "or load it from timm:NAME / hf:DIR, whose resolution can change"
        )
    if own != (img_size, img_size):
        raise ModelLoadError(
            f"{text!r} is a finished model at {own[0]}x{own[1]} px and cannot run at {img_size} px; drop --resolution "
            f"(or give {own[0]})" if own[0] == own[1] else
            f"{text!r} is a finished model at {own[0]}x{own[1]} px and cannot run at {img_size} px; drop --resolution"
        )


# the .pt2 guards live in load_guards.py; imported last (load_guards reads ModelLoadError from here)
from .load_guards import _no_unpickling, _UnpicklingRefused, pt2_code_entries  # noqa: E402,F401
