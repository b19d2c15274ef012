"""fna_deploy.images: image folders and random images as model-ready tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fna_deploy.images import IMAGENET_MEAN, IMAGENET_STD, load_images, model_image_size, preprocessing, random_images

from .conftest import tiny_timm

Image = pytest.importorskip("PIL.Image")


def write_images(directory, sizes=((40, 30), (30, 50), (32, 32))):
    rng = np.random.default_rng(0)
    for i, (w, h) in enumerate(sizes):
        pixels = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(directory / f"img{i}.png")
    return sorted(directory.glob("*.png"))


def by_hand(path, size, mean, std):
    """Shorter side to ``size``, center crop, scale to [0, 1], normalise: written out independently."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        w, h = image.size
        if w < h:
            new = (size, round(h * size / w))
        else:
            new = (round(w * size / h), size)
        image = image.resize(new, resample=Image.Resampling.BICUBIC)
        left, top = (new[0] - size) // 2, (new[1] - size) // 2
        image = image.crop((left, top, left + size, top + size))
        array = np.asarray(image, dtype=np.float32) / 255.0
    x = torch.from_numpy(array).permute(2, 0, 1)
    return (x - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)


def test_timm_model_uses_its_data_config(tmp_path):
    files = write_images(tmp_path)
    model = tiny_timm("vit_tiny_patch16_224", 32)
    batch = load_images(tmp_path, model)  # the model's own 32 px
    assert batch.shape == (3, 3, 32, 32) and batch.dtype == torch.float32
    cfg = preprocessing(model)
    from timm.data import resolve_data_config

    data = resolve_data_config({}, model=model)
    assert cfg["mean"] == tuple(data["mean"]) and cfg["std"] == tuple(data["std"])
    for i, f in enumerate(files):
        assert torch.allclose(batch[i], by_hand(f, 32, data["mean"], data["std"]), atol=1e-6)


def test_explicit_size_mean_std_and_limit(tmp_path):
    files = write_images(tmp_path)
    (tmp_path / "notes.txt").write_text("not an image")
    batch = load_images(tmp_path, None, 48, limit=2, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert batch.shape == (2, 3, 48, 48)
    assert torch.allclose(batch[1], by_hand(files[1], 48, IMAGENET_MEAN, IMAGENET_STD), atol=1e-6)


def test_grayscale_and_rgba_files_become_rgb(tmp_path):
    Image.new("L", (20, 20), color=128).save(tmp_path / "a.png")
    Image.new("RGBA", (20, 20), color=(10, 20, 30, 40)).save(tmp_path / "b.png")
    batch = load_images(tmp_path, None, 16, mean=(0, 0, 0), std=(1, 1, 1))
    assert batch.shape == (2, 3, 16, 16)
    assert torch.allclose(batch[0], torch.full((3, 16, 16), 128 / 255))
    assert torch.allclose(batch[1, :, 0, 0], torch.tensor([10, 20, 30]) / 255.0)


def test_model_image_size():
    model = tiny_timm("vit_tiny_patch16_224", 64)
    assert model_image_size(model) == (64, 64)
    assert model_image_size(model, 96) == (96, 96)
    assert model_image_size(model, (32, 48)) == (32, 48)
    with pytest.raises(ValueError, match="img_size"):
        model_image_size(model, 0)


def test_random_images_are_seeded_and_normalised():
    model = tiny_timm("vit_tiny_patch16_224", 32)
    a = random_images(4, model)
    b = random_images(4, model)
    c = random_images(4, model, seed=1)
    assert a.shape == (4, 3, 32, 32)
    assert torch.equal(a, b) and not torch.equal(a, c)
    mean, std = preprocessing(model)["mean"], preprocessing(model)["std"]
    pixels = a * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    assert float(pixels.min()) >= -1e-6 and float(pixels.max()) <= 1 + 1e-6
    with pytest.raises(ValueError, match="count"):
        random_images(0, model)


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_images(tmp_path / "missing", None, 32)
    with pytest.raises(ValueError, match="no images"):
        load_images(tmp_path, None, 32)
    (tmp_path / "broken.jpg").write_bytes(b"not really a jpeg")
    with pytest.raises(ValueError, match="broken.jpg"):
        load_images(tmp_path, None, 32)
    file = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(file)
    with pytest.raises(ValueError, match="not a directory"):
        load_images(file, None, 32)
    with pytest.raises(ValueError, match="model or an img_size"):
        load_images(tmp_path)


def test_hf_model_uses_its_saved_image_processor_config(tmp_path):
    import json

    transformers = pytest.importorskip("transformers")
    from fna_deploy.loading import load_model

    config = transformers.ViTConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8)
    transformers.ViTModel(config).save_pretrained(tmp_path / "vit")
    model = load_model(f"hf:{tmp_path / 'vit'}")
    assert preprocessing(model)["mean"] == (0.485, 0.456, 0.406)  # no processor config: ImageNet statistics
    (tmp_path / "vit" / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25], "resample": 2, "do_normalize": True})
    )
    cfg = preprocessing(load_model(f"hf:{tmp_path / 'vit'}"))
    assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["std"] == (0.25, 0.25, 0.25) and cfg["interpolation"] == "bilinear"
