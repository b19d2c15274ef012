"""``analyze()``: validate the request, probe the model, classify tokens, recommend a config."""

from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

from ..config import ARTIFACT_DETECTION_RATIO, FNAConfig
from ..config import DEFAULT_MASSIVE_RATIO as CONFIG_MASSIVE_RATIO
from ..patching import find_adapter, is_patched
from ..patching.base import ModelInfo
from .errors import _informative
from .probe import Progress, _Pass, _count_tokens, _probe_model
from .recommend import DEFAULT_BREAK_EVEN_TOKENS, DEFAULT_MIN_SAVING, _recommend
from .report import AnalysisReport
from .tokens import _layer_reports


DEFAULT_LANDMARKS = (32, 64, 128, 256)


DEFAULT_BUDGET = 0.01


# the one FNA default (config.py) for massive tokens; artifacts are looked for at the detection ratio
DEFAULT_MASSIVE_RATIO = CONFIG_MASSIVE_RATIO


DEFAULT_ARTIFACT_RATIO = ARTIFACT_DETECTION_RATIO


VARIANTS = ("plain", "massive", "massive+artifact")


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
    min_saving: float = DEFAULT_MIN_SAVING,
    break_even_tokens: int = DEFAULT_BREAK_EVEN_TOKENS,
) -> AnalysisReport:
    """Analyze ``model`` on ``inputs`` [I, C, H, W] and recommend an FNA config for ``budget``.

    ``landmarks``: the m values to measure. ``budget``: the allowed end-to-end error, 1 - cosine
    similarity between the dense and the FNA model's outputs on the worst image. ``massive_ratio``
    and ``artifact_ratio`` (x median norm) classify tokens and are the thresholds tried as landmark
    guarantees / exclusions. ``config`` supplies method, features, pinv_iters, num_prefix and scale
    (its landmarks, layers and ratios are ignored). The model must not be patched; it is left as
    it was found. ``resolution`` is the ``--resolution`` the export flags carry (default: the
    inputs' size when it differs from the model's own). ``min_saving`` (a fraction of the blocks'
    FLOPs) and ``break_even_tokens``: below either, the advice is to stay dense (the best FNA
    config is still reported); 0 turns a check off. The defaults are measured (docs/benchmarks.md).
    """
    for name, value in (("min_saving", min_saving), ("break_even_tokens", break_even_tokens)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{name}: expected a number >= 0 (0 turns the check off), got {value!r}")
    if min_saving >= 1:
        raise ValueError(f"min_saving: {min_saving} is a fraction of the FLOPs; use a value below 1 (e.g. 0.1)")
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
            min_saving=float(min_saving), break_even_tokens=int(break_even_tokens),
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
            "min_saving": float(min_saving),
            "break_even_tokens": int(break_even_tokens),
        },
        layers=layers,
        candidates=candidates,
        recommendation=recommendation,
        skipped_landmarks=skipped,
    )
