"""torchvision vit_b_16 and friends: nn.MultiheadAttention inside each EncoderBlock."""

from __future__ import annotations

from typing import Any, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from .base import Adapter, AttrChange, LayerPlan, ModelInfo, UnsupportedModelError, bind_forward, to_pair


class TorchvisionAdapter(Adapter):
    name = "torchvision"
    description = "torchvision VisionTransformer (vit_b_16, vit_b_32, vit_l_16, vit_l_32, vit_h_14)"

    def matches(self, model: nn.Module) -> bool:
        cls = type(model)
        return cls.__module__.startswith("torchvision.models") and cls.__name__ == "VisionTransformer"

    def blocks(self, model: nn.Module) -> list[nn.Module]:
        return list(model.encoder.layers)

    def _attention(self, block: nn.Module, index: int) -> nn.MultiheadAttention:
        attn = getattr(block, "self_attention", None)
        if not isinstance(attn, nn.MultiheadAttention) or not attn.batch_first or not attn._qkv_same_embed_dim:
            raise UnsupportedModelError(
                f"torchvision block {index}: expected a batch-first nn.MultiheadAttention with one "
                f"in-projection, got {type(attn).__name__}"
            )
        return attn

    def info(self, model: nn.Module) -> ModelInfo:
        blocks = self.blocks(model)
        attn = self._attention(blocks[0], 0)
        return ModelInfo(
            family=self.name,
            model_class=type(model).__name__,
            num_blocks=len(blocks),
            embed_dim=int(model.hidden_dim),
            num_heads=int(attn.num_heads),
            head_dim=int(attn.head_dim),
            num_prefix=1,  # the class token
            img_size=to_pair(model.image_size),
            patch_size=to_pair(model.patch_size),
            in_chans=int(model.conv_proj.in_channels),
        )

    def patch_attention(self, model: nn.Module, block_index: int, plan: LayerPlan, undo: list[AttrChange]) -> None:
        attn = self._attention(self.blocks(model)[block_index], block_index)
        bind_forward(attn, _fna_forward, plan, undo)


def _fna_forward(
    self: nn.MultiheadAttention,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    key_padding_mask: Optional[Tensor] = None,
    need_weights: bool = True,
    attn_mask: Optional[Tensor] = None,
    *args: Any,
    **kwargs: Any,
) -> tuple[Tensor, None]:
    """nn.MultiheadAttention self-attention (batch first) with FNA in place of softmax attention."""
    plan: LayerPlan = self._fna_plan
    if key_padding_mask is not None or attn_mask is not None or kwargs.get("is_causal"):
        raise ValueError(
            f"FNA layer {plan.block_index}: attention masks are not supported by Nystrom attention; "
            "leave this block dense (layers=...)"
        )
    if key is not query or value is not query:
        raise ValueError(f"FNA layer {plan.block_index}: FNA replaces self-attention only (query, key and value must be one tensor)")
    b, n, c = query.shape
    qkv = F.linear(query, self.in_proj_weight, self.in_proj_bias)
    qkv = qkv.reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    out = plan.attend(q, k, v, self.head_dim**-0.5)
    out = out.transpose(1, 2).reshape(b, n, c)
    return self.out_proj(out), None
