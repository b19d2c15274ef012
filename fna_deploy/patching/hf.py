"""Hugging Face transformers: ViT, DINOv2 (with registers), CLIP and SigLIP vision towers.

These models call their attention through ``ALL_ATTENTION_FUNCTIONS`` keyed by
``config._attn_implementation``. We register one function, ``"fna_deploy"``, and give each
chosen attention module a private copy of its config that names it: q/k/v arrive already
projected (and normalised as the model does), the module keeps its own output projection, and
the layers we leave alone are untouched. Needs transformers >= 4.48 (the attention interface).
"""

from __future__ import annotations

import copy
from typing import Any, Optional

import torch
from torch import Tensor, nn

from .base import Adapter, AttrChange, LayerPlan, ModelInfo, UnsupportedModelError, set_instance_attr, to_pair

ATTN_IMPLEMENTATION = "fna_deploy"

# model_type -> how many leading tokens are prefix tokens (besides registers, counted from config)
_PREFIX = {
    "vit": 1,
    "dinov2": 1,
    "dinov2_with_registers": 1,
    "clip": 1,
    "clip_vision_model": 1,
    "siglip": 0,
    "siglip_vision_model": 0,
}

_registered = False


def _fna_attention_function(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Optional[Tensor],
    scaling: Optional[float] = None,
    dropout: float = 0.0,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    plan: Optional[LayerPlan] = getattr(module, "_fna_plan", None)
    if plan is None:
        raise RuntimeError(f"{type(module).__name__} asked for FNA attention but was not patched by fna-deploy")
    # attention_mask is ignored: vision encoders have no padding, and the mask transformers
    # builds from attention_mask=None (materialised while tracing) lets every token attend.
    out = plan.attend(query, key, value, scaling)
    return out.transpose(1, 2).contiguous(), None


def _register() -> None:
    global _registered
    if _registered:
        return
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, _fna_attention_function)
    _registered = True


def _unwrap(model: nn.Module) -> nn.Module:
    return model.model if isinstance(model, HFVisionModel) else model


def _model_type(model: nn.Module) -> Optional[str]:
    config = getattr(model, "config", None)
    return getattr(config, "model_type", None)


class HFAdapter(Adapter):
    name = "hf"
    description = (
        "Hugging Face ViTModel, Dinov2Model, Dinov2WithRegistersModel, CLIPVisionModel, SiglipVisionModel "
        "(and their *ForImageClassification wrappers)"
    )

    def matches(self, model: nn.Module) -> bool:
        model = _unwrap(model)
        module = type(model).__module__
        return module.startswith("transformers.") and _model_type(model) in _PREFIX

    def _layers_path(self, model: nn.Module) -> tuple[str, nn.ModuleList]:
        """The ModuleList of encoder layers (``encoder.layer``, ``encoder.layers`` or ``layers``),
        the vision tower's when the model also has a text tower."""
        model = _unwrap(model)
        candidates = [
            (name, mod)
            for name, mod in model.named_modules()
            if isinstance(mod, nn.ModuleList)
            and name.split(".")[-1] in ("layer", "layers")
            and len(mod) > 0
            and any(type(c).__name__.endswith("Attention") for c in mod[0].children())
        ]
        vision = [c for c in candidates if "text" not in c[0]]
        if len(vision) != 1:
            raise UnsupportedModelError(
                f"{type(model).__name__}: cannot find one vision encoder layer list "
                f"(found {[c[0] for c in candidates]}); pass the vision tower (e.g. model.vision_model)"
            )
        return vision[0]

    def blocks(self, model: nn.Module) -> list[nn.Module]:
        return list(self._layers_path(model)[1])

    def _attention(self, block: nn.Module, index: int) -> nn.Module:
        for child in block.children():
            if type(child).__name__.endswith("Attention") and hasattr(child, "config"):
                return child
        raise UnsupportedModelError(
            f"layer {index} ({type(block).__name__}) has no attention module that uses the "
            "transformers attention interface; upgrade transformers (>= 4.48)"
        )

    def _vision_config(self, model: nn.Module) -> Any:
        config = model.config
        return getattr(config, "vision_config", None) or config

    def info(self, model: nn.Module) -> ModelInfo:
        wrapper_size = getattr(model, "img_size", None) if isinstance(model, HFVisionModel) else None
        model = _unwrap(model)
        config = self._vision_config(model)
        model_type = _model_type(model)
        blocks = self.blocks(model)
        num_heads = int(config.num_attention_heads)
        hidden = int(config.hidden_size)
        head_dim = int(getattr(config, "head_dim", None) or hidden // num_heads)
        num_prefix = _PREFIX[model_type] + int(getattr(config, "num_register_tokens", 0) or 0)
        return ModelInfo(
            family=self.name,
            model_class=type(model).__name__,
            num_blocks=len(blocks),
            embed_dim=hidden,
            num_heads=num_heads,
            head_dim=head_dim,
            num_prefix=num_prefix,
            img_size=wrapper_size or to_pair(getattr(config, "image_size", None)),
            patch_size=to_pair(getattr(config, "patch_size", None)),
            in_chans=int(getattr(config, "num_channels", 3)),
        )

    def patch_attention(self, model: nn.Module, block_index: int, plan: LayerPlan, undo: list[AttrChange]) -> None:
        _register()
        attn = self._attention(self.blocks(model)[block_index], block_index)
        private = copy.copy(attn.config)
        # bypass the property setter (it would also rewrite sub-configs)
        private.__dict__["_attn_implementation_internal"] = ATTN_IMPLEMENTATION
        if getattr(private, "_attn_implementation", None) != ATTN_IMPLEMENTATION:
            raise UnsupportedModelError(
                f"{type(model).__name__}: this transformers version does not route attention through "
                "config._attn_implementation; fna-deploy needs transformers >= 4.48"
            )
        set_instance_attr(attn, "_fna_plan", plan, undo)
        set_instance_attr(attn, "config", private, undo)


def hf_forward_output(output: Any) -> Tensor:
    """The main tensor of a transformers model output (logits, else last_hidden_state)."""
    if isinstance(output, Tensor):
        return output
    for name in ("logits", "last_hidden_state"):
        value = getattr(output, name, None)
        if isinstance(value, torch.Tensor):
            return value
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    raise TypeError(f"cannot find a tensor in the model output of type {type(output).__name__}")


class HFVisionModel(nn.Module):
    """A transformers vision model as a plain image -> tensor module (what export and bench use).

    ``forward(pixel_values)`` returns the logits of a *ForImageClassification model, else the
    last hidden state; position embeddings are interpolated when ``img_size`` differs from the
    checkpoint's own. ``model`` is the wrapped transformers model; patching reaches into it.
    """

    def __init__(self, model: nn.Module, img_size: "int | tuple[int, int] | None" = None, source_dir: "str | None" = None) -> None:
        super().__init__()
        self.model = model
        self.source_dir = source_dir  # the hf:DIR it came from (its image processor config lives there)
        config = getattr(model.config, "vision_config", None) or model.config
        native = to_pair(getattr(config, "image_size", None))
        self.img_size = to_pair(img_size) or native
        import inspect

        params = inspect.signature(model.forward).parameters
        self._interpolate = self.img_size != native and "interpolate_pos_encoding" in params

    def forward(self, pixel_values: Tensor) -> Tensor:
        kwargs = {"interpolate_pos_encoding": True} if self._interpolate else {}
        return hf_forward_output(self.model(pixel_values=pixel_values, **kwargs))
