"""torch.onnx (dynamo) translation of the fna custom ops into ``fna`` domain nodes."""

from __future__ import annotations

import torch

from ..contract import LandmarkAttrs
from .schemas import DOMAIN, PLUGIN_NAMESPACE, PLUGIN_VERSION, VERSION, register_schemas


def translation_table() -> dict:
    """``custom_translation_table`` for torch.onnx.export: fna::landmarks -> FnaLandmarks,
    fna::nystrom_attention -> NystromAttention, with the contract's attributes."""
    register_schemas()  # onnxscript resolves custom ops through the onnx schema registry
    import onnxscript

    fna = onnxscript.values.Opset(DOMAIN, VERSION)

    # onnxscript reads the typed signature to tell attributes from inputs, so it is the op's schema
    # written out; the node's attributes come from the one LandmarkAttrs value
    def landmarks(features, scores, num_landmarks: int, num_prefix: int, massive_ratio: float, artifact_ratio: float, method: str):
        inputs = [features] if scores is None else [features, scores]
        attrs = LandmarkAttrs(num_landmarks, num_prefix, massive_ratio, artifact_ratio, method)
        return fna.FnaLandmarks(*inputs, **attrs.attributes(), plugin_namespace=PLUGIN_NAMESPACE, plugin_version=PLUGIN_VERSION)

    def nystrom(q, k, v, idx, scale: float, pinv_iters: int):
        return fna.NystromAttention(
            q,
            k,
            v,
            idx,
            scale=float(scale),
            pinv_iters=pinv_iters,
            plugin_namespace=PLUGIN_NAMESPACE,
            plugin_version=PLUGIN_VERSION,
        )

    return {
        torch.ops.fna.landmarks.default: landmarks,
        torch.ops.fna.nystrom_attention.default: nystrom,
    }
