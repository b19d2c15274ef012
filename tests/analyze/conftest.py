"""analyze test helpers. Random-init models have no natural sinks, so the fixture plants them: a forward
hook on block 0 scales chosen tokens of its output, so they enter block 1 and every later block with a
large norm. The query/key projections are scaled up so that attention is far from uniform (otherwise
Nystrom is nearly exact at any m and the error curves say nothing)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from fna_deploy import patch, unpatch
from fna_deploy.analyze import analyze

from ..conftest import tiny_timm


MASSIVE = [5, 40]  # planted massive tokens (x100)


ARTIFACT = [20]  # planted artifact token (x6: between the artifact ratio 4 and the massive ratio 10)


PLANT_AFTER = 0  # planted at block 0's output: they enter block 1 and stay


LANDMARKS = (8, 16, 32, 65)  # 65 = N at 32 px with 4 px patches (+ CLS)


N_TOKENS = 65


def sharp_model(depth: int = 4, plant: bool = True):
    torch.manual_seed(0)
    model = tiny_timm("vit_tiny_patch16_224", 32, patch_size=4, depth=depth)
    dim = model.embed_dim
    with torch.no_grad():
        for block in model.blocks:
            block.attn.qkv.weight[: 2 * dim] *= 3.0
    if plant:

        def hook(module, args, out):
            out = out.clone()
            out[:, MASSIVE] *= 100.0
            out[:, ARTIFACT] *= 6.0
            return out

        model.blocks[PLANT_AFTER].register_forward_hook(hook)
    return model


def images(count: int = 3) -> torch.Tensor:
    return torch.randn(count, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="package")  # one analysis for every module here
def planted():
    model = sharp_model()
    x = images()
    report = analyze(model, x, landmarks=LANDMARKS, budget=0.01)
    return model, x, report


def block_inputs(model, x):
    """The residual stream entering each block, recorded independently of analyze."""
    seen = []
    handles = [b.register_forward_pre_hook(lambda m, a: seen.append(a[0].detach())) for b in model.blocks]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return seen


def qkv_of(block, hidden):
    """q, k, v [B, H, N, d] of a timm block from the residual stream entering it (by hand)."""
    attn = block.attn
    b, n, _ = hidden.shape
    with torch.no_grad():
        y = block.norm1(hidden)
        qkv = F.linear(y, attn.qkv.weight, attn.qkv.bias).reshape(b, n, 3, attn.num_heads, attn.head_dim)
    q, k, v = qkv.permute(2, 0, 3, 1, 4)
    return q, k, v, attn.scale


def end_to_end(model, x, config):
    with torch.no_grad():
        ref = model(x)
        patch(model, config)
        try:
            out = model(x)
        finally:
            unpatch(model)
    return float((1 - F.cosine_similarity(out.double(), ref.double(), dim=1)).max())
