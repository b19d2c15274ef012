"""Names every part of the Triton package shares: the backends, the loopback address, defaults."""

from __future__ import annotations


BACKENDS = ("tensorrt", "onnxruntime", "python")


LOOPBACK = "127.0.0.1"


DEFAULT_MAX_BATCH = 8


TRITONCLIENT_HINT = "pip install 'fna-deploy[triton]' (nvidia-pytriton and tritonclient)"
