"""fna-deploy: export and deployment toolchain for ViTs with Fast Nystrom Attention (FNA).

    import fna_deploy as fd
    model = fd.load_model("timm:vit_base_patch16_224", img_size=1024)
    fd.patch(model, fd.FNAConfig(num_landmarks=128, layers="2-11"))
"""

from ._version import __version__
from .analyze import AnalysisReport
from .analyze import analyze as analyze  # the function; ``from fna_deploy.analyze import ...`` still reaches the module
from .config import FNAConfig, parse_layers
from .export import ExportReport, export_onnx
from .loading import ModelLoadError, load_model
from .ops import nystrom_attention, select_landmarks
from .patching import UnsupportedModelError, model_info, patch, unpatch

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
