"""Token classes (massive, artifact) from residual-stream norms, and the per-layer reports."""

from __future__ import annotations

import torch
from torch import Tensor

from ..ops import lower_median
from .probe import _Pass
from .report import LayerReport


def token_ratios(norms: Tensor, num_prefix: int) -> Tensor:
    """norm / lower median of the patch-token norms, per image: [I, N]."""
    patch_norms = norms[:, num_prefix:] if num_prefix < norms.shape[1] else norms
    med = lower_median(patch_norms, dim=1).clamp_min(1e-30).unsqueeze(1)
    return norms / med


def classify_tokens(norms: Tensor, num_prefix: int, massive_ratio: float, artifact_ratio: float) -> tuple[Tensor, Tensor]:
    """(massive, artifact) boolean masks [I, N] from residual-stream norms [I, N]."""
    ratios = token_ratios(norms, num_prefix)
    massive = ratios >= massive_ratio if massive_ratio > 0 else torch.zeros_like(ratios, dtype=torch.bool)
    artifact = torch.zeros_like(massive)
    if artifact_ratio > 0:
        artifact = (ratios >= artifact_ratio) & ~massive
        artifact[:, :num_prefix] = False
    return massive, artifact


def _majority(mask: Tensor) -> tuple[list[int], bool]:
    counts = mask.sum(0)
    tokens = [int(i) for i in torch.nonzero(counts * 2 > mask.shape[0]).flatten()]
    stable = bool((mask == mask[:1]).all())
    return tokens, stable


def _layer_reports(state: _Pass, num_prefix: int, num_tokens: int, massive_ratio: float, artifact_ratio: float) -> list[LayerReport]:
    reports = []
    for index in range(len(state.norms)):
        if not state.norms[index]:
            raise RuntimeError(f"analyze: block {index} never ran its attention")
        norms = torch.cat(state.norms[index])  # [I, N]
        received = torch.cat(state.received[index])  # [I, N]
        ratios = token_ratios(norms, num_prefix)
        massive, artifact = classify_tokens(norms, num_prefix, massive_ratio, artifact_ratio)
        massive_tokens, massive_stable = _majority(massive)
        artifact_tokens, artifact_stable = _majority(artifact)
        patch_norms = norms[:, num_prefix:] if num_prefix < norms.shape[1] else norms
        errors = {
            name: {m: float(torch.cat(values).mean()) for m, values in per_m.items()}
            for name, per_m in state.errors[index].items()
        }
        reports.append(
            LayerReport(
                index=index,
                norm_median=float(lower_median(lower_median(patch_norms, dim=1), dim=0)),
                norm_max=float(norms.max()),
                norm_ratio=float(ratios.max(dim=1).values.max()),
                massive_tokens=massive_tokens,
                massive_stable=massive_stable,
                artifact_tokens=artifact_tokens,
                artifact_stable=artifact_stable,
                sink_mass=float((received * massive).sum(1).mean()),
                artifact_mass=float((received * artifact).sum(1).mean()),
                prefix_mass=float(received[:, :num_prefix].sum(1).mean()),
                token_share=float(massive.sum(1).float().mean() / num_tokens),
                fna_error=errors.pop("plain"),
                fna_error_variants=errors,
                norms=norms,
            )
        )
    return reports
