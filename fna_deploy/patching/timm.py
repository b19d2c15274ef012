"""timm VisionTransformer and its variants (vit_*, deit_*, *_dinov2, *_reg4_dinov2, ...)."""

from __future__ import annotations

from typing import Any, Optional

from torch import Tensor, nn

from .base import Adapter, AttrChange, LayerPlan, ModelInfo, UnsupportedModelError, bind_forward, to_pair


def _timm_attention_class() -> Optional[type]:
    try:
        from timm.layers import Attention
    except ImportError:  # older timm
        try:
            from timm.models.vision_transformer import Attention  # type: ignore[no-redef]
        except ImportError:
            return None
    return Attention


class TimmAdapter(Adapter):
    name = "timm"
    description = "timm VisionTransformer (vit_*, deit_*, *_dinov2, *_reg4_dinov2, ...)"

    def matches(self, model: nn.Module) -> bool:
        try:
            from timm.models.vision_transformer import VisionTransformer
        except ImportError:
            return False
        return isinstance(model, VisionTransformer)

    def blocks(self, model: nn.Module) -> list[nn.Module]:
        return list(model.blocks)

    def _attention(self, block: nn.Module, index: int) -> nn.Module:
        attn = getattr(block, "attn", None)
        attention_cls = _timm_attention_class()
        if attn is None or attention_cls is None or type(attn) is not attention_cls:
            raise UnsupportedModelError(
                f"timm block {index} ({type(block).__name__}) uses attention "
                f"{type(attn).__name__ if attn is not None else 'none'}; fna-deploy patches timm's "
                "standard Attention (qkv projection) only"
            )
        return attn

    def info(self, model: nn.Module) -> ModelInfo:
        blocks = self.blocks(model)
        attn = self._attention(blocks[0], 0)
        patch_embed = getattr(model, "patch_embed", None)
        img_size = to_pair(getattr(patch_embed, "img_size", None))
        patch_size = to_pair(getattr(patch_embed, "patch_size", None))
        return ModelInfo(
            family=self.name,
            model_class=type(model).__name__,
            num_blocks=len(blocks),
            embed_dim=int(model.embed_dim),
            num_heads=int(attn.num_heads),
            head_dim=int(attn.head_dim),
            num_prefix=int(getattr(model, "num_prefix_tokens", 1)),
            img_size=img_size,
            patch_size=patch_size,
            in_chans=int(getattr(patch_embed.proj, "in_channels", 3)) if patch_embed is not None else 3,
        )

    def patch_attention(self, model: nn.Module, block_index: int, plan: LayerPlan, undo: list[AttrChange]) -> None:
        attn = self._attention(self.blocks(model)[block_index], block_index)
        bind_forward(attn, _fna_forward, plan, undo)


def _fna_forward(self: nn.Module, x: Tensor, attn_mask: Optional[Tensor] = None, is_causal: bool = False, **_: Any) -> Tensor:
    """timm Attention.forward with the softmax attention replaced by FNA (same projections)."""
    plan: LayerPlan = self._fna_plan
    if attn_mask is not None or is_causal:
        raise ValueError(
            f"FNA layer {plan.block_index}: attention masks are not supported by Nystrom attention; "
            "leave this block dense (layers=...)"
        )
    b, n, _c = x.shape
    gate = self.gate(x).sigmoid() if getattr(self, "gate", None) is not None else None
    qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    q, k = self.q_norm(q), self.k_norm(k)
    out = plan.attend(q, k, v, self.scale)
    out = out.transpose(1, 2).reshape(b, n, self.num_heads * self.head_dim)
    out = self.norm(out)
    if gate is not None:
        out = out * gate
    out = self.proj(out)
    return self.proj_drop(out)
