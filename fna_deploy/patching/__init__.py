"""Swap chosen layers' attention for FNA, and undo it: ``patch(model, config)`` / ``unpatch(model)``.

One adapter per model family behind one registry (``ADAPTERS``); ``register_adapter`` adds one.
"""

from __future__ import annotations

from typing import Optional

from torch import nn

from ..config import FNAConfig
from .base import Adapter, FNAState, LayerPlan, ModelInfo, PatchRecord, UnsupportedModelError, record_block_input
from .hf import HFAdapter
from .timm import TimmAdapter
from .torchvision import TorchvisionAdapter

ADAPTERS: list[Adapter] = [TimmAdapter(), HFAdapter(), TorchvisionAdapter()]


def register_adapter(adapter: Adapter, *, first: bool = True) -> Adapter:
    """Add a model-family adapter (checked before the built-in ones unless ``first=False``)."""
    if first:
        ADAPTERS.insert(0, adapter)
    else:
        ADAPTERS.append(adapter)
    return adapter


def supported_families() -> str:
    return "; ".join(a.description for a in ADAPTERS)


def find_adapter(model: nn.Module) -> Adapter:
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(f"expected a torch.nn.Module, got {type(model).__name__}")
    for adapter in ADAPTERS:
        if adapter.matches(model):
            return adapter
    raise UnsupportedModelError(
        f"{type(model).__module__}.{type(model).__name__} is not a supported model; "
        f"fna-deploy patches: {supported_families()}"
    )


def model_info(model: nn.Module) -> ModelInfo:
    """Family, blocks, heads, prefix tokens and image geometry of a supported ViT."""
    return find_adapter(model).info(model)


def is_patched(model: nn.Module) -> bool:
    return isinstance(getattr(model, "_fna_patch", None), PatchRecord)


def patch_record(model: nn.Module) -> Optional[PatchRecord]:
    record = getattr(model, "_fna_patch", None)
    return record if isinstance(record, PatchRecord) else None


def patch(model: nn.Module, config: Optional[FNAConfig] = None) -> nn.Module:
    """Replace the attention of ``config.layers`` with Fast Nystrom Attention, in place.

    A model patched before is first restored, so patching twice applies the new config only.
    Returns the model.
    """
    config = config if config is not None else FNAConfig()
    if not isinstance(config, FNAConfig):
        raise ValueError(f"patch: config must be an FNAConfig, got {type(config).__name__}")
    config.validate()
    adapter = find_adapter(model)
    info = adapter.info(model)
    layers = config.resolve_layers(info.num_blocks)
    num_prefix = info.num_prefix if config.num_prefix is None else config.num_prefix
    if num_prefix > config.num_landmarks:
        raise ValueError(
            f"num_landmarks: {config.num_landmarks} landmarks cannot hold the model's {num_prefix} prefix tokens"
        )
    tokens = info.num_tokens()
    if tokens is not None and config.num_landmarks > tokens:
        raise ValueError(
            f"num_landmarks: {config.num_landmarks} landmarks is more than the {tokens} tokens this model "
            f"sees at {info.img_size[0]}x{info.img_size[1]}; use at most {tokens}"
        )
    if is_patched(model):
        unpatch(model)

    state = FNAState(wants_scores=config.uses_scores, wants_residual=config.features == "input")
    undo: list = []
    try:
        blocks = adapter.blocks(model)
        for position, index in enumerate(layers):
            selects = position == 0 or config.resample_every_layer
            plan = LayerPlan(
                block_index=index,
                config=config,
                num_prefix=num_prefix,
                state=state,
                selects=selects,
                last=position == len(layers) - 1,
            )
            adapter.patch_attention(model, index, plan, undo)
            if selects and (config.uses_scores or config.features == "input"):
                record_block_input(blocks[index], state, undo)
    except Exception:
        for change in reversed(undo):
            change.restore()
        raise
    record = PatchRecord(adapter=adapter, config=config, layers=layers, num_prefix=num_prefix, state=state, undo=undo)
    object.__setattr__(model, "_fna_patch", record)
    return model


def unpatch(model: nn.Module) -> nn.Module:
    """Restore a patched model's original attention exactly. A model never patched is returned as is."""
    record = patch_record(model)
    if record is None:
        return model
    for change in reversed(record.undo):
        change.restore()
    record.state.clear()
    model.__dict__.pop("_fna_patch", None)
    return model


__all__ = [
    "ADAPTERS",
    "Adapter",
    "ModelInfo",
    "UnsupportedModelError",
    "find_adapter",
    "is_patched",
    "model_info",
    "patch",
    "patch_record",
    "register_adapter",
    "supported_families",
    "unpatch",
]
