"""What every model-family adapter shares: model facts, the per-forward FNA state, the FNA call.

An adapter knows one family's module layout (where the blocks and attention modules are, how
q/k/v are produced). It swaps a chosen attention module's behaviour by setting instance
attributes only (``forward``, or a per-module config for Hugging Face), and records how to undo
it, so ``unpatch`` restores the original model bit for bit and state dicts never change.
"""

from __future__ import annotations

from ..errors import FnaDeployError

import types
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch import Tensor, nn

from ..config import FNAConfig
from ..ops import nystrom_attention, select_landmarks


class UnsupportedModelError(FnaDeployError, ValueError):
    """The model (or one of its attention modules) is not of a family fna-deploy can patch."""


@dataclass
class ModelInfo:
    """Facts about a ViT that patching, export and analysis need."""

    family: str
    model_class: str
    num_blocks: int
    embed_dim: int
    num_heads: int
    head_dim: int
    num_prefix: int
    img_size: Optional[tuple[int, int]] = None
    patch_size: Optional[tuple[int, int]] = None
    in_chans: int = 3

    def num_tokens(self, img_size: "int | tuple[int, int] | None" = None) -> Optional[int]:
        """Tokens per image (prefix + patches) at ``img_size`` (default: the model's own)."""
        size = img_size if img_size is not None else self.img_size
        if size is None or self.patch_size is None:
            return None
        if isinstance(size, int):
            size = (size, size)
        return self.num_prefix + (size[0] // self.patch_size[0]) * (size[1] // self.patch_size[1])

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        return asdict(self)


class FNAState:
    """Carries landmark indices, and what the selecting block's input gave (activation norms, the
    residual stream itself for ``features="input"``), between the FNA layers of one forward."""

    def __init__(self, *, wants_scores: bool = True, wants_residual: bool = False) -> None:
        self.wants_scores = wants_scores
        self.wants_residual = wants_residual
        self.idx: Optional[Tensor] = None
        self.scores: Optional[Tensor] = None
        self.residual: Optional[Tensor] = None  # [B, N, C] entering the block, before its first norm

    def clear(self) -> None:
        self.idx = None
        self.scores = None
        self.residual = None


@dataclass
class LayerPlan:
    """What one patched attention module does inside a forward pass."""

    block_index: int
    config: FNAConfig
    num_prefix: int
    state: FNAState
    selects: bool  # computes landmarks (first FNA layer, or every one when resampling)
    last: bool  # clears the shared state afterwards

    def attend(self, q: Tensor, k: Tensor, v: Tensor, scale: Optional[float]) -> Tensor:
        """FNA attention for q, k, v [B,H,N,d].

        Landmarks are selected on ``config.features``: q, k or v averaged over heads, or (``input``,
        as the official FNA code) the residual stream entering the block, before its first norm.
        """
        cfg = self.config
        if self.selects:
            if cfg.features == "input":
                feats = self.state.residual
                if feats is None:
                    raise RuntimeError(
                        f"FNA layer {self.block_index}: the residual stream entering the block was not recorded; "
                        "was the block's forward bypassed?"
                    )
            else:
                feats = {"q": q, "k": k, "v": v}[cfg.features].mean(dim=1)
            scores = self.state.scores if cfg.uses_scores else None
            if cfg.uses_scores and scores is None:
                raise RuntimeError(
                    f"FNA layer {self.block_index}: activation norms were not recorded; "
                    "was the block's forward bypassed?"
                )
            idx = select_landmarks(
                feats,
                cfg.num_landmarks,
                num_prefix=self.num_prefix,
                scores=scores,
                massive_ratio=cfg.massive_ratio,
                artifact_ratio=cfg.artifact_ratio,
                method=cfg.method,
            )
            self.state.idx = idx
        else:
            idx = self.state.idx
            if idx is None:
                raise RuntimeError(
                    f"FNA layer {self.block_index} runs before the layer that selects landmarks; "
                    "blocks must run in order (or set resample_every_layer=True)"
                )
        out = nystrom_attention(q, k, v, idx, scale=cfg.scale or scale, pinv_iters=cfg.pinv_iters)
        if self.last:
            self.state.clear()
        return out


@dataclass
class PatchRecord:
    """Stored on a patched model as ``_fna_patch``: enough to describe and undo the patch."""

    adapter: "Adapter"
    config: FNAConfig
    layers: list[int]
    num_prefix: int
    state: FNAState
    undo: list[AttrChange] = field(default_factory=list)


@dataclass
class AttrChange:
    """One instance attribute set by a patch, and what was there before (plain data, so a
    ``copy.deepcopy`` of a patched model carries changes that point at the copied modules)."""

    module: nn.Module
    name: str
    had_previous: bool
    previous: Any = None

    def restore(self) -> None:
        if self.had_previous:
            object.__setattr__(self.module, self.name, self.previous)
        else:
            self.module.__dict__.pop(self.name, None)


def set_instance_attr(module: nn.Module, name: str, value: Any, undo: list[AttrChange]) -> None:
    """Set ``module.name`` as an instance attribute and record how to restore the old state exactly."""
    had = name in module.__dict__
    undo.append(AttrChange(module, name, had, module.__dict__.get(name)))
    object.__setattr__(module, name, value)


def bind_forward(module: nn.Module, function: Callable[..., Any], plan: Any, undo: list[AttrChange]) -> None:
    """Make ``function(module, ...)`` the module's forward, with ``plan`` at ``module._fna_plan``.

    Both are instance attributes (a bound method, not a closure), so ``copy.deepcopy`` of a
    patched model rebinds them to the copy, and removing them restores the class forward.
    """
    set_instance_attr(module, "_fna_plan", plan, undo)
    set_instance_attr(module, "forward", types.MethodType(function, module), undo)


def _block_input_forward(self: nn.Module, *args: Any, **kwargs: Any) -> Any:
    """A block forward that first records the residual stream entering it (its norms, and/or the
    stream itself, as the FNAState at ``_fna_plan`` wants)."""
    if args:
        hidden = args[0]
    else:
        hidden = next((kwargs[n] for n in ("hidden_states", "x", "input") if n in kwargs), None)
    if isinstance(hidden, tuple):  # some layers receive (hidden_states, ...) tuples
        hidden = hidden[0]
    if not isinstance(hidden, Tensor):
        raise RuntimeError(f"FNA: cannot find the residual stream among the inputs of {type(self).__name__}")
    state: FNAState = self._fna_plan
    if state.wants_scores:
        state.scores = hidden.float().norm(dim=-1)
    if state.wants_residual:
        state.residual = hidden
    return type(self).forward(self, *args, **kwargs)


def record_block_input(block: nn.Module, state: FNAState, undo: list[AttrChange]) -> None:
    """Make ``block`` record the residual stream entering it in ``state`` (``scores``: its norms;
    ``residual``: the stream itself), as ``state.wants_scores`` / ``wants_residual`` say."""
    bind_forward(block, _block_input_forward, state, undo)


class Adapter:
    """One model family. Subclasses implement discovery and the attention swap."""

    name: str = "base"
    description: str = ""

    def matches(self, model: nn.Module) -> bool:
        raise NotImplementedError

    def info(self, model: nn.Module) -> ModelInfo:
        raise NotImplementedError

    def blocks(self, model: nn.Module) -> list[nn.Module]:
        """The transformer blocks in order (their input is the residual stream)."""
        raise NotImplementedError

    def patch_attention(self, model: nn.Module, block_index: int, plan: LayerPlan, undo: list[AttrChange]) -> None:
        """Route block ``block_index``'s attention through ``plan.attend``."""
        raise NotImplementedError


def to_pair(value: Any) -> Optional[tuple[int, int]]:
    if value is None:
        return None
    if isinstance(value, int):
        return (value, value)
    if isinstance(value, torch.Size):
        value = tuple(value)
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return (int(value[0]), int(value[1]))
    return None
