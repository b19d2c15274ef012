"""Shared fixtures: small random-init models and seeded inputs (nothing is downloaded)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import settings

# Property tests compare implementations whose float rounding differs (fp32 vs fp64, ONNX Runtime
# vs torch reductions); a fixed example sequence keeps CI reproducible: the same examples every run.
settings.register_profile("fna", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("fna")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def tiny_timm(name: str = "vit_tiny_patch16_224", img_size: int = 64, **kwargs):
    """A small timm ViT with random weights (img 64 -> 16 patches + prefix tokens)."""
    import timm

    model = timm.create_model(name, pretrained=False, img_size=img_size, **kwargs)
    return model.eval()


@pytest.fixture
def timm_model():
    return tiny_timm()
