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

Layout (one module per job): ``analysis`` (``analyze()``), ``probe`` (the probing pass), ``tokens``
(token classes, per-layer reports), ``errors`` (end-to-end error), ``recommend`` (the budgeted
search), ``report`` (the report and its JSON), ``plots`` (PNG plots).
"""

from __future__ import annotations

from .report import LayerReport, Candidate, Recommendation, AnalysisReport, format_layers, export_flags, write_report
from .probe import Progress
from .tokens import token_ratios, classify_tokens
from .recommend import DEFAULT_BREAK_EVEN_TOKENS, DEFAULT_MIN_SAVING, block_linear_flops, expected_speedup
from .plots import write_plots
from .analysis import DEFAULT_LANDMARKS, DEFAULT_BUDGET, DEFAULT_MASSIVE_RATIO, DEFAULT_ARTIFACT_RATIO, VARIANTS, analyze

import sys as _sys
import types as _types


class _AnalyzeModule(_types.ModuleType):
    """``fna_deploy.analyze`` is both this package and, called, the ``analyze()`` function: the
    package namespace loads lazily (``fd.analyze`` may resolve to the package), so ``fd.analyze(...)``
    keeps working whichever of the two it is."""

    def __call__(self, *args, **kwargs):
        return analyze(*args, **kwargs)


_sys.modules[__name__].__class__ = _AnalyzeModule

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
