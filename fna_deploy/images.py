"""Images in, model-ready tensors out: ``load_images(directory, model, img_size)`` and ``random_images``.

Preprocessing follows the model: a timm model's own data config (mean, std, interpolation, via
``timm.data.resolve_data_config``), a Hugging Face model's saved image processor config
(``preprocessor_config.json``: image_mean, image_std, resample), otherwise ImageNet mean/std with
bicubic resizing. Each image is
resized so that its shorter side matches the target and then center-cropped to ``img_size``
(aspect ratio kept), the usual evaluation transform. Pillow is imported only when files are read.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Optional, Sequence

import torch
from torch import Tensor, nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm")


def _pair(size: "int | Sequence[int]") -> tuple[int, int]:
    if isinstance(size, bool):
        raise ValueError(f"img_size must be a positive int or (height, width), got {size!r}")
    if isinstance(size, int):
        size = (size, size)
    if not (isinstance(size, (tuple, list)) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
        raise ValueError(f"img_size must be a positive int or (height, width), got {size!r}")
    return int(size[0]), int(size[1])


def model_image_size(model: nn.Module, img_size: "int | Sequence[int] | None" = None) -> tuple[int, int]:
    """``img_size`` as (height, width), else the model's own input resolution."""
    if img_size is not None:
        return _pair(img_size)
    from .patching import model_info

    size = model_info(model).img_size
    if size is None:
        raise ValueError(f"{type(model).__name__} does not say its input resolution; pass img_size")
    return _pair(tuple(size))


def preprocessing(model: Optional[nn.Module]) -> dict:
    """mean, std, interpolation and channel count the model expects."""
    cfg = {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "interpolation": "bicubic", "in_chans": 3}
    if model is None:
        return cfg
    try:
        from .patching import model_info

        cfg["in_chans"] = int(model_info(model).in_chans)
    except Exception:  # not a supported ViT: keep three channels
        pass
    try:
        from timm.models.vision_transformer import VisionTransformer

        if isinstance(model, VisionTransformer):
            from timm.data import resolve_data_config

            data = resolve_data_config({}, model=model)
            cfg["mean"] = tuple(float(x) for x in data.get("mean", IMAGENET_MEAN))
            cfg["std"] = tuple(float(x) for x in data.get("std", IMAGENET_STD))
            cfg["interpolation"] = str(data.get("interpolation", "bicubic"))
    except ImportError:
        pass
    cfg.update(_hf_preprocessing(model))
    if len(cfg["mean"]) != cfg["in_chans"]:
        # e.g. a 1-channel model with 3-channel statistics: average them
        cfg["mean"] = (sum(cfg["mean"]) / len(cfg["mean"]),) * cfg["in_chans"]
        cfg["std"] = (sum(cfg["std"]) / len(cfg["std"]),) * cfg["in_chans"]
    return cfg


_PIL_RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


def _hf_preprocessing(model: nn.Module) -> dict:
    """mean/std/interpolation from the image processor config saved beside a Hugging Face model
    (``preprocessor_config.json`` in the hf:DIR folder), when there is one."""
    data = _hf_processor(model)
    if data is None:
        return {}
    out: dict = {}
    if data.get("do_normalize", True) is False:
        out["mean"], out["std"] = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    else:
        if isinstance(data.get("image_mean"), (list, tuple)):
            out["mean"] = tuple(float(x) for x in data["image_mean"])
        if isinstance(data.get("image_std"), (list, tuple)):
            out["std"] = tuple(float(x) for x in data["image_std"])
    if data.get("resample") in _PIL_RESAMPLE_NAMES:
        out["interpolation"] = _PIL_RESAMPLE_NAMES[data["resample"]]
    return out


def data_config(model: Optional[nn.Module], img_size: "int | Sequence[int]", channels: Optional[int] = None) -> dict:
    """The preprocessing recipe of ``model`` at ``img_size`` (recorded at export as ONNX metadata
    ``preprocess``; see :mod:`fna_deploy.triton.preprocess`): a Hugging Face model's saved image
    processor config, else timm's data config (``resolve_data_config``: interpolation, mean, std,
    crop_pct, crop_mode), else timm's defaults (ImageNet statistics, bicubic, crop_pct 0.875)."""
    height, width = _pair(img_size)
    cfg = preprocessing(model)
    channels = channels or cfg["in_chans"]
    if channels not in (1, 3):
        raise ValueError(f"a model with {channels} input channels does not take images")
    processor = _hf_processor(model)
    if processor is not None:
        return _hf_recipe(processor, (height, width), channels, cfg)
    from timm.data import resolve_data_config
    from timm.data.constants import DEFAULT_CROP_PCT

    data = {"interpolation": cfg["interpolation"], "crop_pct": DEFAULT_CROP_PCT, "crop_mode": "center", "source": "default"}
    if model is not None and getattr(model, "pretrained_cfg", None):
        data = {**resolve_data_config({"input_size": (channels, height, width)}, model=model), "source": "timm"}
    crop_pct, mode = float(data.get("crop_pct") or DEFAULT_CROP_PCT), data.get("crop_mode") or "center"
    scale = (math.floor(height / crop_pct), math.floor(width / crop_pct))
    if mode == "center":  # timm's transforms_imagenet_eval: the shorter side to size / crop_pct, aspect kept
        resize = {"mode": "shortest_edge", "size": scale[0]} if height == width else {"mode": "exact", "size": list(scale)}
    elif mode == "squash":
        resize = {"mode": "exact", "size": list(scale)}
    else:
        raise ValueError(f"timm crop_mode {mode!r} has no recipe here (center and squash do)")
    return {"version": 1, "source": data["source"], "channels": channels, "size": [height, width], "resize": resize,
            "crop": [height, width], "crop_rounding": "round", "interpolation": str(data.get("interpolation") or "bicubic"),
            "rescale_factor": 1 / 255, "mean": [float(x) for x in cfg["mean"]], "std": [float(x) for x in cfg["std"]]}


def _hf_processor(model: Optional[nn.Module]) -> Optional[dict]:
    from .patching.hf import HFVisionModel

    source = getattr(model, "source_dir", None) if isinstance(model, HFVisionModel) else None
    path = Path(source) / "preprocessor_config.json" if source else None
    if path is None or not path.is_file():
        return None
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ValueError(f"cannot read the image processor config {str(path)!r} ({exc})") from None


def _hf_recipe(data: dict, size: tuple[int, int], channels: int, cfg: dict) -> dict:
    """A Hugging Face image processor (do_resize/size, do_center_crop/crop_size, do_rescale,
    do_normalize) as a recipe; the model's input size wins over the processor's own size."""
    height, width = size
    wanted = data.get("size") if data.get("do_resize", True) else None
    crop = data.get("crop_size") if data.get("do_center_crop", False) else None
    crop_hw = [crop.get("height"), crop.get("width")] if isinstance(crop, dict) else ([crop, crop] if isinstance(crop, int) else None)
    if isinstance(wanted, dict) and "shortest_edge" in wanted and crop_hw == [height, width]:
        resize = {"mode": "shortest_edge", "size": int(wanted["shortest_edge"])}
    else:  # {"height", "width"} processors (ViT, DeiT ...), or a model exported at another size than the processor's
        resize, crop_hw = {"mode": "exact", "size": [height, width]}, None
    rescale = float(data.get("rescale_factor", 1 / 255)) if data.get("do_rescale", True) else 1.0
    return {"version": 1, "source": "hf", "channels": channels, "size": [height, width], "resize": resize,
            "crop": [height, width] if crop_hw else None, "crop_rounding": "floor", "interpolation": cfg["interpolation"],
            "rescale_factor": rescale, "mean": [float(x) for x in cfg["mean"]], "std": [float(x) for x in cfg["std"]]}


def _normalize(pixels: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (pixels - m) / s


def image_files(directory: "str | os.PathLike[str]") -> list[Path]:
    """The image files directly inside ``directory``, sorted by name."""
    path = Path(directory)
    if not path.exists():
        raise FileNotFoundError(2, "No such directory", str(path))
    if not path.is_dir():
        raise ValueError(f"{str(path)!r} is not a directory of images")
    files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {str(path)!r}")
    return files


def _resize_crop(image, size: tuple[int, int], resample: int):
    """Resize so the image covers ``size`` (h, w), then center-crop to it."""
    height, width = size
    w, h = image.size
    scale = max(height / h, width / w)
    new_w, new_h = max(width, round(w * scale)), max(height, round(h * scale))
    image = image.resize((new_w, new_h), resample=resample)
    left, top = (new_w - width) // 2, (new_h - height) // 2
    return image.crop((left, top, left + width, top + height))


def load_images(
    directory: "str | os.PathLike[str]",
    model: Optional[nn.Module] = None,
    img_size: "int | Sequence[int] | None" = None,
    *,
    limit: Optional[int] = None,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
) -> Tensor:
    """Read the images in ``directory`` as one float32 batch [N, C, H, W], ready for ``model``.

    ``img_size`` defaults to the model's own resolution; ``mean``/``std`` override the model's
    normalisation; ``limit`` keeps the first images (sorted by file name).
    """
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise ImportError("reading images needs Pillow (pip install pillow)") from None
    import numpy as np

    if model is None and img_size is None:
        raise ValueError("load_images: give a model or an img_size")
    size = model_image_size(model, img_size) if model is not None else _pair(img_size)  # type: ignore[arg-type]
    cfg = preprocessing(model)
    if cfg["in_chans"] not in (1, 3):
        raise ValueError(f"load_images: models with {cfg['in_chans']} input channels do not take images; pass tensors")
    files = image_files(directory)
    if limit is not None:
        if limit <= 0:
            raise ValueError(f"load_images: limit must be >= 1, got {limit}")
        files = files[:limit]
    resample = {
        "bilinear": Image.Resampling.BILINEAR,
        "nearest": Image.Resampling.NEAREST,
        "bicubic": Image.Resampling.BICUBIC,
        "lanczos": Image.Resampling.LANCZOS,
    }.get(cfg["interpolation"], Image.Resampling.BICUBIC)
    mode = "L" if cfg["in_chans"] == 1 else "RGB"
    arrays = []
    for file in files:
        try:
            with Image.open(file) as image:
                image = image.convert(mode)
                image = _resize_crop(image, size, resample)
                array = np.asarray(image, dtype=np.float32) / 255.0
        except (UnidentifiedImageError, OSError, SyntaxError) as exc:
            raise ValueError(f"cannot read image {str(file)!r} ({type(exc).__name__})") from None
        if array.ndim == 2:
            array = array[:, :, None]
        arrays.append(array.transpose(2, 0, 1))
    pixels = torch.from_numpy(np.stack(arrays))
    return _normalize(pixels, mean or cfg["mean"], std or cfg["std"])


def random_images(
    count: int,
    model: Optional[nn.Module] = None,
    img_size: "int | Sequence[int] | None" = None,
    *,
    seed: int = 0,
) -> Tensor:
    """``count`` images of uniform random pixels, normalised as ``load_images`` would: [count, C, H, W]."""
    if isinstance(count, bool) or not isinstance(count, int) or count <= 0:
        raise ValueError(f"random_images: count must be an int >= 1, got {count!r}")
    if model is None and img_size is None:
        raise ValueError("random_images: give a model or an img_size")
    size = model_image_size(model, img_size) if model is not None else _pair(img_size)  # type: ignore[arg-type]
    cfg = preprocessing(model)
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.rand((count, cfg["in_chans"], *size), generator=generator)
    return _normalize(pixels, cfg["mean"], cfg["std"])


__all__ = ["load_images", "random_images", "image_files", "model_image_size", "preprocessing", "data_config"]
