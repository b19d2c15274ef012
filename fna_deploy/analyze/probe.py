"""The probing pass: one dense forward per batch with a probe in every block that records the residual
stream's norms, the attention each token receives and the FNA error of the attention output."""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..config import FNAConfig
from ..ops import lower_median, nystrom_attention, select_landmarks
from ..patching import find_adapter


Progress = Callable[[str, int, int], None]


class _Probe:
    """Stands in for a LayerPlan: receives q, k, v, returns dense attention, measures on the way."""

    def __init__(self, analysis: "_Pass", block_index: int) -> None:
        self.analysis = analysis
        self.block_index = block_index
        self.residual: Optional[Tensor] = None  # the residual stream entering the block [B, N, C]
        self.scores: Optional[Tensor] = None  # its norms [B, N]

    def attend(self, q: Tensor, k: Tensor, v: Tensor, scale: Optional[float]) -> Tensor:
        return self.analysis.measure(self, q, k, v, scale)


def _received_attention(q: Tensor, k: Tensor, scale: float, max_elements: int = 1 << 24) -> Tensor:
    """Share of all attention each key token receives: mean over heads and queries of softmax(s q k^T). [B, N]"""
    b, h, n, _ = q.shape
    total = torch.zeros(b, n, dtype=torch.float32, device=q.device)
    chunk = max(1, max_elements // max(1, b * n))
    qf, kf = q.float(), k.float()
    for head in range(h):
        kt = kf[:, head].transpose(-1, -2)
        for start in range(0, n, chunk):
            logits = (qf[:, head, start : start + chunk] @ kt) * scale
            total += logits.softmax(dim=-1).sum(dim=1)
    return total / (h * n)


class _Pass:
    """State of the probing pass: settings and what every block measured, per image."""

    def __init__(
        self,
        *,
        landmarks: Sequence[int],
        variants: dict[str, tuple[float, float]],
        config: FNAConfig,
        num_prefix: int,
        num_blocks: int,
    ) -> None:
        self.landmarks = list(landmarks)
        self.variants = variants
        self.config = config
        self.num_prefix = num_prefix
        self.norms: list[list[Tensor]] = [[] for _ in range(num_blocks)]
        self.received: list[list[Tensor]] = [[] for _ in range(num_blocks)]
        self.errors: list[dict[str, dict[int, list[Tensor]]]] = [
            {name: {m: [] for m in self.landmarks} for name in variants} for _ in range(num_blocks)
        ]
        # per block: whether a variant's thresholds were reached (so its landmarks can differ from plain)
        self.differs: list[dict[str, bool]] = [{} for _ in range(num_blocks)]

    def measure(self, probe: _Probe, q: Tensor, k: Tensor, v: Tensor, scale: Optional[float]) -> Tensor:
        cfg = self.config
        model_scale = float(scale or q.shape[-1] ** -0.5)
        s = float(cfg.scale or model_scale)  # what a patched layer would use (as LayerPlan.attend)
        dense = F.scaled_dot_product_attention(q, k, v, scale=model_scale)  # the model's own attention
        index = probe.block_index
        scores = probe.scores
        if scores is None or tuple(scores.shape) != (q.shape[0], q.shape[2]):
            raise RuntimeError(f"analyze: the residual stream entering block {index} was not recorded")
        self.norms[index].append(scores.detach().float().cpu())
        self.received[index].append(_received_attention(q, k, model_scale).cpu())
        if cfg.features == "input":  # as a patched layer: the residual stream entering the block
            feats = probe.residual
            if feats is None:
                raise RuntimeError(f"analyze: the residual stream entering block {index} was not recorded (features='input')")
        else:
            feats = {"q": q, "k": k, "v": v}[cfg.features].mean(dim=1)
        probe.residual = None
        dense_norm = dense.float().flatten(1).norm(dim=1).clamp_min(1e-30)
        patch_scores = scores.float()[:, self.num_prefix :]
        median = lower_median(patch_scores, dim=1).unsqueeze(1) if patch_scores.shape[1] else None
        plain: Optional[dict[int, Tensor]] = None
        for name, (massive_ratio, artifact_ratio) in self.variants.items():
            # a variant whose thresholds no patch token reaches (the comparison token_masks makes)
            # selects exactly the plain landmarks: reuse the plain errors
            lowest = min(r for r in (massive_ratio, artifact_ratio, math.inf) if r > 0)
            reaches = median is not None and math.isfinite(lowest) and bool((patch_scores >= lowest * median).any())
            if name != "plain" and not reaches and plain is not None:
                for m in self.landmarks:
                    self.errors[index][name][m].append(plain[m])
                continue
            self.differs[index][name] = self.differs[index].get(name, False) or reaches
            idx_all = None
            if cfg.method == "fps":
                # FPS is greedy: the first m landmarks of the largest set are the set for m
                idx_all = self._select(feats, max(self.landmarks), scores, massive_ratio, artifact_ratio)
            current: dict[int, Tensor] = {}
            for m in self.landmarks:
                idx = idx_all[:, :m].contiguous() if idx_all is not None else self._select(
                    feats, m, scores, massive_ratio, artifact_ratio
                )
                out = nystrom_attention(q, k, v, idx, scale=s, pinv_iters=cfg.pinv_iters)
                err = ((out.float() - dense.float()).flatten(1).norm(dim=1) / dense_norm).cpu()
                current[m] = err
                self.errors[index][name][m].append(err)
            if name == "plain":
                plain = current
        return dense

    def _select(self, feats: Tensor, m: int, scores: Tensor, massive_ratio: float, artifact_ratio: float) -> Tensor:
        return select_landmarks(
            feats,
            m,
            num_prefix=self.num_prefix,
            scores=scores if (massive_ratio or artifact_ratio) else None,
            massive_ratio=massive_ratio,
            artifact_ratio=artifact_ratio,
            method=self.config.method,
        )


def _residual(args: tuple, kwargs: dict) -> Optional[Tensor]:
    hidden = args[0] if args else next((kwargs[n] for n in ("hidden_states", "x", "input") if n in kwargs), None)
    if isinstance(hidden, tuple):
        hidden = hidden[0]
    return hidden if isinstance(hidden, Tensor) else None


def _model_output(output: Any) -> Tensor:
    from ..patching.hf import hf_forward_output

    return hf_forward_output(output)


def _batches(inputs: Tensor, batch_size: int) -> list[Tensor]:
    return [inputs[i : i + batch_size] for i in range(0, inputs.shape[0], batch_size)]


def _forward_all(
    model: nn.Module,
    inputs: Tensor,
    batch_size: int,
    device: torch.device,
    last_block: nn.Module,
    progress: Optional[Progress] = None,
    stage: str = "",
) -> tuple[Tensor, Tensor]:
    """Run every batch: (model outputs [I, ...], last block's output tokens [I, N, C]), on the CPU."""
    outputs, features = [], []

    def keep(module: nn.Module, args: tuple, output: Any) -> None:
        hidden = output[0] if isinstance(output, (tuple, list)) else output
        if isinstance(hidden, Tensor):
            features.append(hidden.detach().float().cpu())

    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    handle = last_block.register_forward_hook(keep)
    try:
        batches = _batches(inputs, batch_size)
        for b, batch in enumerate(batches):
            if progress:
                progress(stage, b, len(batches))
            with torch.no_grad():
                outputs.append(_model_output(model(batch.to(device=device, dtype=dtype))).detach().float().cpu())
        if progress:
            progress(stage, len(batches), len(batches))
    finally:
        handle.remove()
    feats = torch.cat(features) if len(features) == len(outputs) else torch.empty(0)
    return torch.cat(outputs), feats


def _probe_model(
    model: nn.Module, inputs: Tensor, state: _Pass, batch_size: int, device: torch.device, progress: Optional[Progress]
) -> tuple[Tensor, Tensor]:
    """Run the probing pass (dense attention throughout): (model outputs, last block's output tokens)."""
    adapter = find_adapter(model)
    blocks = adapter.blocks(model)
    undo: list = []
    hooks = []
    probes = [_Probe(state, i) for i in range(len(blocks))]
    try:
        for i, block in enumerate(blocks):
            adapter.patch_attention(model, i, probes[i], undo)  # type: ignore[arg-type]

            def record(module: nn.Module, args: tuple, kwargs: dict, probe: _Probe = probes[i]) -> None:
                hidden = _residual(args, kwargs)
                if hidden is None:
                    raise RuntimeError(f"analyze: cannot find the residual stream among the inputs of {type(module).__name__}")
                probe.scores = hidden.detach().float().norm(dim=-1)
                probe.residual = hidden.detach()

            hooks.append(block.register_forward_pre_hook(record, with_kwargs=True))
        return _forward_all(model, inputs, batch_size, device, blocks[-1], progress, "probing layers")
    finally:
        for hook in hooks:
            hook.remove()
        for change in reversed(undo):
            change.restore()


def _count_tokens(model: nn.Module, blocks: list[nn.Module], image: Tensor) -> int:
    """Tokens per image: the sequence length entering the first block (stops the forward there)."""

    class _Stop(Exception):
        pass

    seen: list[int] = []

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        hidden = _residual(args, kwargs)
        if hidden is None or hidden.dim() != 3:
            raise RuntimeError(f"analyze: cannot find the residual stream among the inputs of {type(module).__name__}")
        seen.append(int(hidden.shape[1]))
        raise _Stop

    handle = blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            model(image)
    except _Stop:
        pass
    except Exception as exc:  # the first forward is where a wrong input size shows
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ValueError(
            f"inputs: the model cannot run on images of shape {tuple(image.shape[1:])} ({detail}); "
            "give images at the model's resolution"
        ) from None
    finally:
        handle.remove()
    if not seen:
        raise RuntimeError("analyze: the model's first transformer block never ran")
    return seen[0]
