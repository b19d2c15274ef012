"""Look inside a ViT before approximating it: where are the massive and artifact tokens, how much
error does FNA add in each layer, and which layers and m meet an error budget.

    report = analyze(model, images, landmarks=(32, 64, 128), budget=0.01)
    report.recommendation.export_flags   # "--landmarks 64 --layers 6-11 --massive-ratio 10"
    write_report(report, "analysis.json"); write_plots(report, "plots/")

How it works
------------
1. One dense forward pass per batch with probes in every block: a forward pre-hook records the
   norms of the residual stream entering the block, and each attention module is routed (through
   the family adapter's own ``patch_attention``, the same hook FNA uses) to a probe that receives
   the block's q, k, v, returns exact softmax attention, and on the way measures
   * the attention each token receives (its share of all attention, averaged over heads and
     queries) -- the "sink mass";
   * the relative error ||FNA - dense|| / ||dense|| of the attention output for every m, with
     landmarks selected in that layer: plainly, with massive tokens guaranteed as landmarks, and
     with artifact tokens also excluded.
2. Token classes per layer and image, from the norm ratio r = norm / median(patch-token norms)
   (the lower median, as landmark selection computes it): *massive* r >= massive_ratio (any
   token); *artifact* a patch token with artifact_ratio <= r < massive_ratio.
3. The recommendation: for each m (where FNA saves FLOPs at this N) and each landmark variant,
   layers are added in order of increasing per-layer error, and the largest such set whose
   measured end-to-end error (1 - cosine of the model outputs, worst image) stays within the
   budget is found by bisection, each step a real patched forward pass. The candidate with the
   largest predicted FLOP saving wins; its flags are the exact ``fna-deploy export`` flags.

Per-layer errors select landmarks in that layer; a patched model selects them once, at its first
FNA layer, and reuses them. The end-to-end figures come from the real patched model, so they
include that effect.
"""

from __future__ import annotations

import io
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import FNAConfig
from .flops import dense_core_flops, fna_core_flops, landmark_flops
from .utils import write_bytes_atomic, write_text_atomic
from .ops import lower_median, nystrom_attention, select_landmarks
from .patching import find_adapter, is_patched, patch, unpatch
from .patching.base import ModelInfo

DEFAULT_LANDMARKS = (32, 64, 128, 256)
DEFAULT_BUDGET = 0.01
DEFAULT_MASSIVE_RATIO = 10.0
DEFAULT_ARTIFACT_RATIO = 4.0
VARIANTS = ("plain", "massive", "massive+artifact")

Progress = Callable[[str, int, int], None]


# --------------------------------------------------------------------------------------------
# report


@dataclass
class LayerReport:
    """What one transformer block looks like (token indices refer to the residual stream entering it)."""

    index: int
    norm_median: float  # median patch-token norm (median over images of the per-image median)
    norm_max: float  # largest token norm over all images
    norm_ratio: float  # largest max/median ratio over the images
    massive_tokens: list[int]  # tokens massive in a majority of the images
    massive_stable: bool  # every image has the same massive tokens
    artifact_tokens: list[int]  # patch tokens that are artifacts in a majority of the images
    artifact_stable: bool
    sink_mass: float  # share of the block's attention received by each image's massive tokens (mean)
    artifact_mass: float  # same for artifact tokens
    prefix_mass: float  # same for the prefix tokens (CLS, registers)
    token_share: float  # what the massive tokens would receive under uniform attention (count / N)
    fna_error: dict[int, float]  # m -> mean relative error, landmarks without guarantees
    fna_error_variants: dict[str, dict[int, float]] = field(default_factory=dict)
    norms: Optional[Tensor] = field(default=None, repr=False)  # [images, N], for the plots

    def to_dict(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "norm_median": _num(self.norm_median),
            "norm_max": _num(self.norm_max),
            "norm_ratio": _num(self.norm_ratio),
            "massive_tokens": list(self.massive_tokens),
            "massive_stable": self.massive_stable,
            "artifact_tokens": list(self.artifact_tokens),
            "artifact_stable": self.artifact_stable,
            "sink_mass": _num(self.sink_mass),
            "artifact_mass": _num(self.artifact_mass),
            "prefix_mass": _num(self.prefix_mass),
            "token_share": _num(self.token_share),
            "fna_error": {str(m): _num(e) for m, e in self.fna_error.items()},
            "fna_error_variants": {
                name: {str(m): _num(e) for m, e in errors.items()} for name, errors in self.fna_error_variants.items()
            },
        }


@dataclass
class Candidate:
    """The largest layer set that meets the budget for one m and landmark variant."""

    num_landmarks: int
    variant: str
    layers: list[int]
    end_to_end_error: float  # worst image, 1 - cosine; 0 for an empty set
    flops_saving: float  # fraction of the blocks' dense FLOPs saved
    evaluations: int  # patched forward passes spent on the search

    def to_dict(self) -> dict[str, Any]:
        return {
            "num_landmarks": self.num_landmarks,
            "variant": self.variant,
            "layers": list(self.layers),
            "end_to_end_error": _num(self.end_to_end_error),
            "flops_saving": _num(self.flops_saving),
            "evaluations": self.evaluations,
        }


@dataclass
class Recommendation:
    layers: list[int]
    num_landmarks: Optional[int]
    massive_ratio: float
    artifact_ratio: float
    export_flags: str  # "" when no FNA layer meets the budget
    budget: float
    end_to_end_error: Optional[float]  # measured with the recommended config (worst image, 1 - cos)
    end_to_end_cosine: Optional[float]  # the smallest cosine similarity over the images
    flops_dense: float  # FLOPs of the transformer blocks, dense, per image
    flops_fna: float  # the same with the recommended config
    flops_saving: float  # 1 - flops_fna / flops_dense
    reason: str
    method: str = "fps"
    pinv_iters: int = 6

    @property
    def uses_fna(self) -> bool:
        return bool(self.layers)

    def config(self, base: Optional[FNAConfig] = None) -> Optional[FNAConfig]:
        """The recommended FNAConfig (None when dense is recommended)."""
        if not self.layers or self.num_landmarks is None:
            return None
        base = base or FNAConfig(method=self.method, pinv_iters=self.pinv_iters)
        return base.replace(
            num_landmarks=self.num_landmarks,
            layers=list(self.layers),
            massive_ratio=self.massive_ratio,
            artifact_ratio=self.artifact_ratio,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers),
            "layers_spec": format_layers(self.layers) if self.layers else "",
            "num_landmarks": self.num_landmarks,
            "massive_ratio": self.massive_ratio,
            "artifact_ratio": self.artifact_ratio,
            "export_flags": self.export_flags,
            "budget": self.budget,
            "end_to_end_error": _num(self.end_to_end_error),
            "end_to_end_cosine": _num(self.end_to_end_cosine),
            "flops_dense": _num(self.flops_dense),
            "flops_fna": _num(self.flops_fna),
            "flops_saving": _num(self.flops_saving),
            "reason": self.reason,
            "method": self.method,
            "pinv_iters": self.pinv_iters,
        }


@dataclass
class AnalysisReport:
    model: dict[str, Any]
    num_images: int
    image_size: tuple[int, int]
    num_tokens: int
    num_prefix: int
    grid: Optional[tuple[int, int]]  # patch grid (rows, cols) when the patch tokens form one
    settings: dict[str, Any]
    layers: list[LayerReport]
    candidates: list[Candidate]
    recommendation: Recommendation
    skipped_landmarks: dict[int, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": dict(self.model),
            "num_images": self.num_images,
            "image_size": list(self.image_size),
            "num_tokens": self.num_tokens,
            "num_prefix": self.num_prefix,
            "grid": list(self.grid) if self.grid else None,
            "settings": dict(self.settings),
            "layers": [layer.to_dict() for layer in self.layers],
            "candidates": [c.to_dict() for c in self.candidates],
            "recommendation": self.recommendation.to_dict(),
            "skipped_landmarks": {str(m): why for m, why in self.skipped_landmarks.items()},
        }


def _num(value: Optional[float]) -> Optional[float]:
    """A JSON-safe float (None for missing or non-finite values)."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def format_layers(layers: Sequence[int]) -> str:
    """[2, 3, 4, 7, 9, 10] -> "2-4,7,9-10" (the --layers syntax)."""
    items = sorted(set(int(i) for i in layers))
    if not items:
        raise ValueError("format_layers: no layers")
    parts = []
    start = prev = items[0]
    for i in items[1:] + [None]:  # type: ignore[list-item]
        if i is not None and i == prev + 1:
            prev = i
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if i is not None:
            start = prev = i
    return ",".join(parts)


def export_flags(
    num_landmarks: int,
    layers: Sequence[int],
    *,
    massive_ratio: float = 0.0,
    artifact_ratio: float = 0.0,
    method: str = "fps",
    features: str = "q",
    pinv_iters: int = 6,
    resolution: Optional[int] = None,
) -> str:
    """The ``fna-deploy export`` flags for a config."""
    flags = []
    if resolution is not None:
        flags.append(f"--resolution {resolution}")
    flags += [f"--landmarks {num_landmarks}", f"--layers {format_layers(layers)}"]
    if method != "fps":
        flags.append(f"--method {method}")
    if features != "q":
        flags.append(f"--features {features}")
    if massive_ratio:
        flags.append(f"--massive-ratio {_ratio(massive_ratio)}")
    if artifact_ratio:
        flags.append(f"--artifact-ratio {_ratio(artifact_ratio)}")
    if pinv_iters != 6:
        flags.append(f"--pinv-iters {pinv_iters}")
    return " ".join(flags)


def _ratio(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# --------------------------------------------------------------------------------------------
# FLOPs


def block_linear_flops(block: nn.Module, num_tokens: int) -> float:
    """Multiply-add FLOPs (x2) of the block's projections and MLP for one image of N tokens."""
    total = 0.0
    for module in block.modules():
        if isinstance(module, nn.Linear):
            total += 2.0 * num_tokens * module.in_features * module.out_features
        elif isinstance(module, nn.MultiheadAttention) and module.in_proj_weight is not None:
            total += 2.0 * num_tokens * module.in_proj_weight.shape[0] * module.in_proj_weight.shape[1]
    return total


# --------------------------------------------------------------------------------------------
# probing


class _Probe:
    """Stands in for a LayerPlan: receives q, k, v, returns dense attention, measures on the way."""

    def __init__(self, analysis: "_Pass", block_index: int) -> None:
        self.analysis = analysis
        self.block_index = block_index
        self.x_in: Optional[Tensor] = None  # set by adapters whose attention function never sees its input
        self.scores: Optional[Tensor] = None  # residual-stream norms entering the block [B, N]

    def attend(self, q: Tensor, k: Tensor, v: Tensor, x_in: Optional[Tensor], scale: Optional[float]) -> Tensor:
        return self.analysis.measure(self, q, k, v, x_in, scale)


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

    def measure(self, probe: _Probe, q: Tensor, k: Tensor, v: Tensor, x_in: Optional[Tensor], scale: Optional[float]) -> Tensor:
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
        if cfg.features == "input":
            feats = x_in if x_in is not None else probe.x_in
            if feats is None:
                raise RuntimeError(f"analyze: block {index} did not expose its attention input (features='input')")
        else:
            feats = {"q": q, "k": k, "v": v}[cfg.features].mean(dim=1)
        probe.x_in = None
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
    from .patching.hf import hf_forward_output

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

            hooks.append(block.register_forward_pre_hook(record, with_kwargs=True))
        return _forward_all(model, inputs, batch_size, device, blocks[-1], progress, "probing layers")
    finally:
        for hook in hooks:
            hook.remove()
        for change in reversed(undo):
            change.restore()


def _cosine_errors(out: Tensor, ref: Tensor) -> Tensor:
    """1 - cosine similarity per image (clamped at 0); inf where an output is not finite."""
    out, ref = out.flatten(1).double(), ref.flatten(1).double()
    err = (1.0 - F.cosine_similarity(out, ref, dim=1, eps=1e-30)).clamp_min(0.0)
    return torch.where(torch.isfinite(err), err, torch.full_like(err, math.inf))


def _informative(reference: Tensor) -> bool:
    """Whether every image's output has a direction to compare (not all zeros, all finite)."""
    flat = reference.flatten(1).double()
    return bool(torch.isfinite(flat).all() and (flat.norm(dim=1) > 0).all())


def _end_to_end(
    model: nn.Module,
    inputs: Tensor,
    reference: Tensor,
    config: FNAConfig,
    batch_size: int,
    device: torch.device,
    last_block: nn.Module,
    on_features: bool,
) -> tuple[float, float]:
    """Patch ``model`` with ``config``, run it, unpatch: (worst 1 - cosine, mean 1 - cosine)."""
    patch(model, config)
    try:
        outputs, features = _forward_all(model, inputs, batch_size, device, last_block)
    finally:
        unpatch(model)
    err = _cosine_errors(features if on_features else outputs, reference)
    return float(err.max()), float(err.mean())


# --------------------------------------------------------------------------------------------
# token classes


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


# --------------------------------------------------------------------------------------------
# the analysis


def _validate(landmarks: Sequence[int], budget: float, massive_ratio: float, artifact_ratio: float, batch_size: int) -> list[int]:
    if isinstance(landmarks, int):
        landmarks = [landmarks]
    try:
        ms = sorted(set(landmarks))
    except TypeError:
        raise ValueError(f"landmarks: expected a list of ints, got {landmarks!r}") from None
    if not ms:
        raise ValueError("landmarks: give at least one number of landmarks")
    for m in ms:
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(f"landmarks: each m must be an int >= 1, got {m!r}")
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not math.isfinite(budget) or budget < 0:
        raise ValueError(f"budget: expected a number >= 0 (the allowed 1 - cosine of the outputs), got {budget!r}")
    for name, ratio in (("massive_ratio", massive_ratio), ("artifact_ratio", artifact_ratio)):
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(ratio) or ratio < 0:
            raise ValueError(f"{name}: expected a number >= 0 (0 turns it off), got {ratio!r}")
        if 0 < ratio <= 1:
            raise ValueError(f"{name}: {ratio} is not above the median; use a ratio > 1 or 0 to turn it off")
    if massive_ratio and artifact_ratio and artifact_ratio >= massive_ratio:
        raise ValueError(
            f"artifact_ratio ({artifact_ratio}) must be below massive_ratio ({massive_ratio}): artifacts are the "
            "high-norm tokens that are not massive"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1, got {batch_size!r}")
    return ms


def analyze(
    model: nn.Module,
    inputs: Tensor,
    *,
    landmarks: Sequence[int] = DEFAULT_LANDMARKS,
    budget: float = DEFAULT_BUDGET,
    massive_ratio: float = DEFAULT_MASSIVE_RATIO,
    artifact_ratio: float = DEFAULT_ARTIFACT_RATIO,
    config: Optional[FNAConfig] = None,
    batch_size: int = 8,
    progress: Optional[Progress] = None,
    resolution: Optional[int] = None,
) -> AnalysisReport:
    """Analyze ``model`` on ``inputs`` [I, C, H, W] and recommend an FNA config for ``budget``.

    ``landmarks``: the m values to measure. ``budget``: the allowed end-to-end error, 1 - cosine
    similarity between the dense and the FNA model's outputs on the worst image. ``massive_ratio``
    and ``artifact_ratio`` (x median norm) classify tokens and are the thresholds tried as landmark
    guarantees / exclusions. ``config`` supplies method, features, pinv_iters, num_prefix and scale
    (its landmarks, layers and ratios are ignored). The model must not be patched; it is left as
    it was found. ``resolution`` is the ``--resolution`` the export flags carry (default: the
    inputs' size when it differs from the model's own).
    """
    ms = _validate(landmarks, budget, massive_ratio, artifact_ratio, batch_size)
    if not isinstance(inputs, Tensor) or inputs.dim() != 4:
        raise ValueError(
            f"inputs: expected images as a tensor [I, C, H, W], got "
            f"{tuple(inputs.shape) if isinstance(inputs, Tensor) else type(inputs).__name__}"
        )
    if inputs.shape[0] < 1:
        raise ValueError("inputs: no images")
    if not inputs.is_floating_point():
        raise ValueError(f"inputs: expected float images, got {inputs.dtype}")
    config = config if config is not None else FNAConfig()
    if not isinstance(config, FNAConfig):
        raise ValueError(f"config: expected an FNAConfig, got {type(config).__name__}")
    if is_patched(model):
        raise ValueError("analyze: the model is already patched with FNA; pass the dense model (unpatch it first)")
    adapter = find_adapter(model)
    info: ModelInfo = adapter.info(model)
    num_prefix = info.num_prefix if config.num_prefix is None else config.num_prefix
    blocks = adapter.blocks(model)
    num_blocks = len(blocks)
    try:
        device = next(model.parameters()).device
    except StopIteration:
        device = torch.device("cpu")
    inputs = inputs.float()

    variants: dict[str, tuple[float, float]] = {"plain": (0.0, 0.0)}
    if massive_ratio:
        variants["massive"] = (float(massive_ratio), 0.0)
        if artifact_ratio:
            variants["massive+artifact"] = (float(massive_ratio), float(artifact_ratio))

    # N (prefix + patches at this input size) is the sequence length entering the first block
    param = next(model.parameters(), None)
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    num_tokens = _count_tokens(model, blocks, inputs[:1].to(device=device, dtype=dtype))
    skipped: dict[int, str] = {}
    usable = []
    for m in ms:
        if m > num_tokens:
            skipped[m] = f"more landmarks than the {num_tokens} tokens"
        elif m < num_prefix:
            skipped[m] = f"fewer landmarks than the {num_prefix} prefix tokens"
        else:
            usable.append(m)
    if not usable:
        raise ValueError(
            f"landmarks: none of {', '.join(map(str, ms))} fits this model at {inputs.shape[-2]}x{inputs.shape[-1]} "
            f"({num_tokens} tokens, {num_prefix} prefix tokens); use m between {max(num_prefix, 1)} and {num_tokens}"
        )
    base = config.replace(num_prefix=num_prefix, massive_ratio=0.0, artifact_ratio=0.0, layers="all")
    state = _Pass(landmarks=usable, variants=variants, config=base, num_prefix=num_prefix, num_blocks=num_blocks)
    was_training = model.training
    model.eval()
    try:
        outputs, features = _probe_model(model, inputs, state, batch_size, device, progress)
        # compare model outputs, unless they carry no direction (e.g. a zero-initialised head):
        # then the tokens leaving the last block
        on_features = not _informative(outputs) and features.numel() > 0
        reference = features if on_features else outputs
        layers = _layer_reports(state, num_prefix, num_tokens, massive_ratio, artifact_ratio)
        candidates, recommendation = _recommend(
            model, inputs, reference, layers, blocks, info, base, usable, variants, num_tokens, num_prefix,
            budget, batch_size, device, progress, resolution,
            {name: any(d.get(name, False) for d in state.differs) for name in variants}, on_features,
        )
    finally:
        model.train(was_training)

    height, width = int(inputs.shape[-2]), int(inputs.shape[-1])
    grid = None
    if info.patch_size is not None:
        rows, cols = height // info.patch_size[0], width // info.patch_size[1]
        if rows * cols == num_tokens - num_prefix:
            grid = (rows, cols)
    native = tuple(info.img_size) if info.img_size else None
    model_dict = info.to_dict()
    return AnalysisReport(
        model=model_dict,
        num_images=int(inputs.shape[0]),
        image_size=(height, width),
        num_tokens=num_tokens,
        num_prefix=num_prefix,
        grid=grid,
        settings={
            "landmarks": ms,
            "budget": float(budget),
            "massive_ratio": float(massive_ratio),
            "artifact_ratio": float(artifact_ratio),
            "method": base.method,
            "features": base.features,
            "pinv_iters": base.pinv_iters,
            "scale": base.scale,
            "error": "relative Frobenius error of the attention output; end to end: 1 - cosine of the outputs, worst image",
            "end_to_end_on": "last block output" if on_features else "model output",
            "native_img_size": list(native) if native else None,
        },
        layers=layers,
        candidates=candidates,
        recommendation=recommendation,
        skipped_landmarks=skipped,
    )


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


def _recommend(
    model: nn.Module,
    inputs: Tensor,
    reference: Tensor,
    layers: list[LayerReport],
    blocks: list[nn.Module],
    info: ModelInfo,
    base: FNAConfig,
    landmarks: list[int],
    variants: dict[str, tuple[float, float]],
    num_tokens: int,
    num_prefix: int,
    budget: float,
    batch_size: int,
    device: torch.device,
    progress: Optional[Progress],
    resolution: Optional[int],
    active: dict[str, bool],
    on_features: bool,
) -> tuple[list[Candidate], Recommendation]:
    n, h, d = num_tokens, info.num_heads, info.head_dim
    linear = [block_linear_flops(b, n) for b in blocks]
    dense_attn = dense_core_flops(n, h * d)
    flops_dense = sum(linear) + dense_attn * len(blocks)
    feature_dim = info.embed_dim if base.features == "input" else d

    def fna_flops(m: int, chosen: Sequence[int]) -> float:
        saved = len(chosen) * (dense_attn - fna_core_flops(n, h * d, m, h, base.pinv_iters))
        return flops_dense - saved + landmark_flops(n, m, num_prefix, feature_dim) + n * h * d

    def saving(m: int, chosen: Sequence[int]) -> float:
        return 1.0 - fna_flops(m, chosen) / flops_dense if chosen else 0.0

    if resolution is None and info.img_size is not None and tuple(inputs.shape[-2:]) != tuple(info.img_size):
        resolution = int(inputs.shape[-1]) if inputs.shape[-1] == inputs.shape[-2] else None

    worth = [m for m in landmarks if dense_attn - fna_core_flops(n, h * d, m, h, base.pinv_iters) > 0]
    searches = [(m, name) for m in worth for name in variants]
    candidates: list[Candidate] = []
    results: dict[tuple[int, str, int], tuple[float, float]] = {}
    done = 0

    for m, name in searches:
        massive, artifact = variants[name]
        if name != "plain" and not active.get(name, False):
            # no token reached this variant's thresholds in any layer: its landmarks are the plain ones
            plain = next(c for c in candidates if c.num_landmarks == m and c.variant == "plain")
            candidates.append(Candidate(m, name, list(plain.layers), plain.end_to_end_error, plain.flops_saving, 0))
            done += 1
            if progress:
                progress("searching layer sets", done, len(searches))
            continue
        layers_errors = [
            (layer.fna_error if name == "plain" else layer.fna_error_variants[name])[m] for layer in layers
        ]
        order = sorted(range(len(layers)), key=lambda i: (layers_errors[i], i))
        evaluations = 0

        def measure(k: int) -> tuple[float, float]:
            nonlocal evaluations
            key = (m, name, k)
            if key not in results:
                cfg = base.replace(num_landmarks=m, layers=sorted(order[:k]), massive_ratio=massive, artifact_ratio=artifact)
                results[key] = _end_to_end(model, inputs, reference, cfg, batch_size, device, blocks[-1], on_features)
                evaluations += 1
            return results[key]

        # bisection for the largest k whose measured error meets the budget (k = 0 always does)
        lo, hi = 0, len(layers)
        if measure(hi)[0] <= budget:
            lo = hi
        else:
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if measure(mid)[0] <= budget:
                    lo = mid
                else:
                    hi = mid
        chosen = sorted(order[:lo])
        error = measure(lo)[0] if lo else 0.0
        candidates.append(Candidate(m, name, chosen, error, saving(m, chosen), evaluations))
        done += 1
        if progress:
            progress("searching layer sets", done, len(searches))

    # the largest predicted saving wins; at equal saving, guarantees/exclusions only when they
    # clearly help (a 10% lower end-to-end error than the candidate listed first, plain landmarks)
    best: Optional[Candidate] = None
    for c in candidates:
        if not c.layers:
            continue
        if best is None:
            best = c
            continue
        better_saving = c.flops_saving > best.flops_saving + 1e-12
        same_saving = abs(c.flops_saving - best.flops_saving) <= 1e-12
        if better_saving or (same_saving and c.end_to_end_error < 0.9 * best.end_to_end_error):
            best = c

    if best is None:
        if not worth:
            reason = (
                f"FNA saves no FLOPs at N={n} with m in {landmarks}: use fewer landmarks or a higher resolution"
            )
        else:
            reason = f"no layer meets the budget of {budget:g} with m in {worth}: raise the budget or m"
        rec = Recommendation(
            [], None, 0.0, 0.0, "", float(budget), None, None, flops_dense, flops_dense, 0.0, reason,
            base.method, base.pinv_iters,
        )
        return candidates, rec
    massive, artifact = variants[best.variant]
    worst, _mean = results[(best.num_landmarks, best.variant, len(best.layers))]
    flags = export_flags(
        best.num_landmarks,
        best.layers,
        massive_ratio=massive,
        artifact_ratio=artifact,
        method=base.method,
        features=base.features,
        pinv_iters=base.pinv_iters,
        resolution=resolution,
    )
    reason = (
        f"FNA with m={best.num_landmarks} on {len(best.layers)} of {len(layers)} layers keeps the outputs within "
        f"1 - cos = {worst:.2e} <= {budget:g} and saves {100 * best.flops_saving:.1f}% of the blocks' FLOPs"
    )
    rec = Recommendation(
        layers=best.layers,
        num_landmarks=best.num_landmarks,
        massive_ratio=massive,
        artifact_ratio=artifact,
        export_flags=flags,
        budget=float(budget),
        end_to_end_error=worst,
        end_to_end_cosine=1.0 - worst,
        flops_dense=flops_dense,
        flops_fna=fna_flops(best.num_landmarks, best.layers),
        flops_saving=best.flops_saving,
        reason=reason,
        method=base.method,
        pinv_iters=base.pinv_iters,
    )
    return candidates, rec


# --------------------------------------------------------------------------------------------
# output


def write_report(report: AnalysisReport, path: "str | os.PathLike[str]") -> Path:
    """Write ``report.to_dict()`` as JSON, atomically (a temporary file renamed into place)."""
    target = Path(path)
    if target.is_dir():
        raise IsADirectoryError(21, "Is a directory", str(target))
    text = json.dumps(report.to_dict(), indent=2, allow_nan=False)
    target.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(target, text + "\n")


def _layers_to_map(report: AnalysisReport, limit: int = 6) -> list[int]:
    """The layers worth a token-norm map: the first, where massive/artifact tokens appear or change, the last."""
    chosen = [0]
    prev: tuple = ((), ())
    for layer in report.layers:
        key = (tuple(layer.massive_tokens), tuple(layer.artifact_tokens))
        if key != prev and layer.index not in chosen:
            chosen.append(layer.index)
        prev = key
    last = report.layers[-1].index
    if last not in chosen:
        chosen.append(last)
    if len(chosen) > limit:
        chosen = chosen[: limit - 1] + [last]
    return sorted(set(chosen))


def write_plots(report: AnalysisReport, directory: "str | os.PathLike[str]") -> list[Path]:
    """PNG plots: token-norm maps, FNA error against m per layer, predicted savings. Returns the files."""
    try:
        import matplotlib  # Figure objects draw with Agg; pyplot (and its global backend) is never used
        import matplotlib.ticker
        from matplotlib.colors import LogNorm
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plots need matplotlib (pip install matplotlib)") from None

    out = Path(directory)
    if out.exists() and not out.is_dir():
        raise ValueError(f"--plot: {str(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []

    def save(fig: "Figure", name: str) -> None:
        buffer = io.BytesIO()
        fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
        written.append(write_bytes_atomic(out / name, buffer.getvalue()))

    # 1. token-norm maps (norm / median) over the patch grid
    if report.grid is not None and report.layers and report.layers[0].norms is not None:
        rows, cols = report.grid
        chosen = _layers_to_map(report)
        images = min(3, report.num_images)
        fig = Figure(figsize=(3.2 * images + 0.8, 2.9 * len(chosen)))
        axes = fig.subplots(len(chosen), images, squeeze=False)
        for r, index in enumerate(chosen):
            layer = report.layers[index]
            ratios = token_ratios(layer.norms, report.num_prefix)[:, report.num_prefix :]  # type: ignore[arg-type]
            vmax = max(float(ratios[:images].max()), 1.01)
            vmin = max(min(float(ratios[:images].min()), 0.99), 1e-3)
            for c in range(images):
                ax = axes[r][c]
                grid = ratios[c].reshape(rows, cols).numpy()
                im = ax.imshow(grid, norm=LogNorm(vmin=vmin, vmax=vmax), cmap="magma")
                ax.set_xticks([])
                ax.set_yticks([])
                marks = ""
                if layer.massive_tokens or layer.artifact_tokens:
                    marks = f" ({len(layer.massive_tokens)} massive, {len(layer.artifact_tokens)} artifact)"
                ax.set_title(f"layer {index}, image {c}{marks}", fontsize=8)
            fig.colorbar(im, ax=list(axes[r]), fraction=0.046, pad=0.02, label="norm / median")
        fig.suptitle("residual-stream token norms entering each layer (patch grid)")
        save(fig, "token_norms.png")

    # 2. FNA error against m, one line per layer
    if report.layers and report.layers[0].fna_error:
        fig = Figure(figsize=(7, 4.5))
        ax = fig.subplots()
        cmap = matplotlib.colormaps["viridis"]
        count = len(report.layers)
        for layer in report.layers:
            ms = sorted(layer.fna_error)
            vals = [max(layer.fna_error[m], 1e-12) for m in ms]
            color = cmap(layer.index / max(1, count - 1))
            ax.plot(ms, vals, marker="o", color=color, label=f"layer {layer.index}")
            guarded = layer.fna_error_variants.get("massive")
            if layer.massive_tokens and guarded and any(guarded[m] != layer.fna_error[m] for m in ms):
                ax.plot(
                    ms, [max(guarded[m], 1e-12) for m in ms], marker="x", linestyle="--", color=color,
                    label=f"layer {layer.index}, massive kept",
                )
        ax.set_xscale("log", base=2)
        all_ms = sorted({m for layer in report.layers for m in layer.fna_error})
        ax.set_xticks(all_ms, labels=[str(m) for m in all_ms])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_yscale("log")
        ax.set_xlabel("landmarks m")
        ax.set_ylabel("relative error of the attention output")
        ax.set_title(f"FNA error per layer (N = {report.num_tokens} tokens; dashed: massive tokens kept as landmarks)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2 if count > 8 else 1, loc="best")
        save(fig, "fna_error.png")

    # 3. predicted savings of the best layer set per m (0 where FNA costs more than dense at this N)
    ms = sorted(report.layers[0].fna_error) if report.layers else []
    if ms:
        best: dict[int, Candidate] = {}
        for c in report.candidates:
            if c.num_landmarks not in best or c.flops_saving > best[c.num_landmarks].flops_saving:
                best[c.num_landmarks] = c
        fig = Figure(figsize=(7, 4.5))
        ax = fig.subplots()
        savings = [100 * best[m].flops_saving if m in best else 0.0 for m in ms]
        chosen_m = report.recommendation.num_landmarks
        colors = ["tab:orange" if m == chosen_m else "tab:blue" for m in ms]
        bars = ax.bar([str(m) for m in ms], savings, color=colors)
        for bar, m in zip(bars, ms):
            if m in best:
                c = best[m]
                label = f"{len(c.layers)} layers\n1-cos {c.end_to_end_error:.1e}" if c.layers else "over budget"
            else:
                label = "no saving\nat this N"
            ax.annotate(label, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=7)
        ax.set_xlabel("landmarks m")
        ax.set_ylabel("predicted FLOP saving of the blocks (%)")
        ax.set_title(f"largest saving within the budget {report.recommendation.budget:g} (N = {report.num_tokens})")
        ax.grid(True, axis="y", alpha=0.3)
        ax.set_ylim(0, max(max(savings) * 1.25, 1.0))
        save(fig, "savings.png")
    return written


__all__ = [
    "AnalysisReport",
    "Candidate",
    "LayerReport",
    "Recommendation",
    "analyze",
    "classify_tokens",
    "export_flags",
    "format_layers",
    "token_ratios",
    "write_plots",
    "write_report",
]
