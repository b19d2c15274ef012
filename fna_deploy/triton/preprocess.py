"""Encoded image bytes -> model-ready pixels, exactly as the model's data config recorded at export.

A *recipe* (a JSON object, written by ``fna_deploy.images.data_config`` into the ONNX metadata
``preprocess``) says how: decode (JPEG, PNG or WebP), convert to RGB or L, resize (shortest edge
to S keeping the aspect ratio, or to an exact H x W), center-crop, rescale to [0, 1] and
normalise with the recorded mean and std. timm's eval transform (crop_pct, crop_mode) and a
Hugging Face image processor (size, crop_size, resample, image_mean, image_std) both map to it.

This file is self-contained (numpy and Pillow, nothing from fna_deploy): ``fna-deploy triton
--image-ensemble`` copies it beside the python-backend preprocessing model, and ``fna-deploy infer``
imports it for the client side, so the server and the client run the same code.
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

RECIPE_VERSION = 1
FORMATS = ("JPEG", "PNG", "WEBP")
MAX_PIXELS = 64 * 1024 * 1024  # decoded size limit per image: a small file must not expand into gigabytes
_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos", "box", "hamming")


def check_recipe(recipe: Any) -> dict:
    """The recipe, validated: ValueError names the first field that is wrong."""
    if not isinstance(recipe, dict) or recipe.get("version") != RECIPE_VERSION:
        raise ValueError(f"preprocessing recipe: expected a JSON object with version {RECIPE_VERSION}")
    channels = recipe.get("channels")
    if channels not in (1, 3):
        raise ValueError(f"preprocessing recipe: channels must be 1 or 3, got {channels!r}")
    size = recipe.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
        raise ValueError(f"preprocessing recipe: size must be [height, width], got {size!r}")
    resize = recipe.get("resize")
    if resize is not None:
        mode, value = (resize.get("mode"), resize.get("size")) if isinstance(resize, dict) else (None, None)
        if mode == "shortest_edge" and not (isinstance(value, int) and value > 0):
            raise ValueError(f"preprocessing recipe: shortest_edge resize needs a positive size, got {value!r}")
        if mode == "exact" and not (isinstance(value, list) and len(value) == 2 and all(isinstance(s, int) and s > 0 for s in value)):
            raise ValueError(f"preprocessing recipe: exact resize needs [height, width], got {value!r}")
        if mode not in ("shortest_edge", "exact"):
            raise ValueError(f"preprocessing recipe: resize mode must be shortest_edge or exact, got {mode!r}")
    crop = recipe.get("crop")
    if crop is not None and crop != size:
        raise ValueError(f"preprocessing recipe: the crop {crop} must equal the model's input size {size}")
    if crop is None and not (resize and resize["mode"] == "exact" and resize["size"] == size):
        raise ValueError("preprocessing recipe: without a crop, the resize must be exact to the model's input size")
    if recipe.get("crop_rounding", "round") not in ("round", "floor"):
        raise ValueError("preprocessing recipe: crop_rounding must be round (torchvision) or floor (Hugging Face)")
    if recipe.get("interpolation") not in _INTERPOLATIONS:
        raise ValueError(f"preprocessing recipe: interpolation must be one of {', '.join(_INTERPOLATIONS)}")
    for key in ("mean", "std"):
        values = recipe.get(key)
        if not (isinstance(values, list) and len(values) == channels and all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)):
            raise ValueError(f"preprocessing recipe: {key} must be {channels} finite numbers, got {values!r}")
    if any(v == 0 for v in recipe["std"]):
        raise ValueError("preprocessing recipe: std must not be 0")
    factor = recipe.get("rescale_factor")
    if not (isinstance(factor, (int, float)) and math.isfinite(factor) and factor > 0):
        raise ValueError(f"preprocessing recipe: rescale_factor must be a positive number, got {factor!r}")
    return recipe


def decode(data: bytes, recipe: dict):
    """A Pillow image in the recipe's mode; ValueError for a payload that is not a JPEG/PNG/WebP image."""
    from PIL import Image

    if not isinstance(data, (bytes, bytearray, memoryview)) or not len(data):
        raise ValueError("empty payload: send the encoded image file's bytes")
    try:
        image = Image.open(io.BytesIO(bytes(data)), formats=list(FORMATS))
        if image.size[0] * image.size[1] > MAX_PIXELS:
            raise ValueError(f"image of {image.size[0]}x{image.size[1]} pixels is larger than {MAX_PIXELS} pixels")
        image.load()
        return image.convert("L" if recipe["channels"] == 1 else "RGB")
    except ValueError:
        raise
    except Exception as exc:  # Pillow raises UnidentifiedImageError, OSError, SyntaxError... for broken files
        raise ValueError(f"the payload is not a readable {', '.join(FORMATS)} image ({type(exc).__name__})") from None


def _resample(name: str) -> int:
    from PIL import Image

    return getattr(Image.Resampling, name.upper())


def _resize(image, resize: dict, interpolation: str):
    width, height = image.size
    if resize["mode"] == "exact":
        new_h, new_w = resize["size"]
    else:  # torchvision Resize(int) / HF shortest_edge: the short side to S, the long side int(S * long / short)
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = resize["size"], int(resize["size"] * long / short)
        new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    if (new_w, new_h) == (width, height):
        return image
    return image.resize((new_w, new_h), resample=_resample(interpolation))


def _center_crop(array: np.ndarray, size: list, rounding: str) -> np.ndarray:
    crop_h, crop_w = size
    height, width = array.shape[:2]
    if crop_h > height or crop_w > width:  # torchvision pads with zeros first
        pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
        pads = [(pad_h // 2, (pad_h + 1) // 2), (pad_w // 2, (pad_w + 1) // 2)] + [(0, 0)] * (array.ndim - 2)
        array = np.pad(array, pads)
        height, width = array.shape[:2]
    if rounding == "round":  # torchvision: int(round((h - ch) / 2))
        top, left = int(round((height - crop_h) / 2.0)), int(round((width - crop_w) / 2.0))
    else:  # Hugging Face: (h - ch) // 2
        top, left = (height - crop_h) // 2, (width - crop_w) // 2
    return array[top:top + crop_h, left:left + crop_w]


def preprocess(data: bytes, recipe: dict) -> np.ndarray:
    """One encoded image -> float32 pixels [C, H, W] as the model expects them."""
    image = decode(data, recipe)
    if recipe.get("resize"):
        image = _resize(image, recipe["resize"], recipe["interpolation"])
    array = np.asarray(image)
    if recipe.get("crop"):
        array = _center_crop(array, recipe["crop"], recipe.get("crop_rounding", "round"))
    if array.ndim == 2:
        array = array[:, :, None]
    pixels = (array.astype(np.float64) * recipe["rescale_factor"]).astype(np.float32)
    mean = np.asarray(recipe["mean"], dtype=np.float32)
    std = np.asarray(recipe["std"], dtype=np.float32)
    pixels = (pixels - mean) / std
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))
