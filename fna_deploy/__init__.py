"""fna-deploy: export and deployment toolchain for ViTs with Fast Nystrom Attention (FNA).

    import fna_deploy as fd
    model = fd.load_model("timm:vit_base_patch16_224", img_size=1024)
    fd.patch(model, fd.FNAConfig(num_landmarks=128, layers="2-11"))
"""

from ._version import __version__

# The public names load on first use (PEP 562), so ``import fna_deploy`` (and every CLI start,
# ``fna-deploy --help`` included) does not pay for torch, onnx and timm before it can speak.
_LAZY = {
    "AnalysisReport": ".analyze",
    "analyze": None,  # the analyze package, callable as the analyze() function
    "FNAConfig": ".config",
    "parse_layers": ".config",
    "ExportReport": ".export",
    "export_onnx": ".export",
    "ModelLoadError": ".loading",
    "load_model": ".loading",
    "nystrom_attention": ".ops",
    "select_landmarks": ".ops",
    "UnsupportedModelError": ".patching",
    "model_info": ".patching",
    "patch": ".patching",
    "unpatch": ".patching",
}


def __getattr__(name: str):
    import importlib

    if name not in _LAZY:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _LAZY[name] is None:
        return importlib.import_module(f"{__name__}.{name}")
    return getattr(importlib.import_module(_LAZY[name], __name__), name)


__all__ = [
    "__version__",
    "AnalysisReport",
    "analyze",
    "ExportReport",
    "FNAConfig",
    "ModelLoadError",
    "UnsupportedModelError",
    "export_onnx",
    "load_model",
    "model_info",
    "nystrom_attention",
    "parse_layers",
    "patch",
    "select_landmarks",
    "unpatch",
]
