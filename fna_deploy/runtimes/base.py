"""The one interface every runtime runner has: load, infer, describe, time.

A runner owns one artifact (an ONNX file, an engine, a module) on one runtime. bench times
``infer`` with the shared harness (fna_deploy.timing); verify hands runners to polygraphy's
Comparator through :func:`as_polygraphy`; ``Runner.unavailable()`` says in one sentence why the
runtime cannot run here (None when it can), so callers refuse or skip before any work.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import Any, Optional

import numpy as np


class Runner:
    """One artifact on one runtime. Subclasses set ``name`` and implement ``_load``/``_infer``."""

    name: str = "runner"

    def __init__(self) -> None:
        self.loaded = False
        self.details: dict[str, Any] = {}

    @classmethod
    def unavailable(cls, device: str = "cpu") -> Optional[str]:
        """None when this runtime can run on ``device`` here, else one sentence saying why not."""
        return None

    def load(self) -> "Runner":
        if not self.loaded:
            self._load()
            self.loaded = True
        return self

    def infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Outputs of one inference on ``feeds`` (name -> array), in the artifact's output order."""
        return self.load()._infer(feeds)

    def output_names(self) -> list[str]:
        return [f"output_{i}" for i in range(len(self.details.get("outputs", [])) or 1)]

    def input_metadata(self) -> list[tuple[str, Any, list[int]]]:
        """(name, numpy dtype, dims with -1 for dynamic) per input."""
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """What ran: the runtime, its version, the provider/precision it chose (for reports)."""
        return {"runner": self.name, **self.details}

    def time(self, feeds: dict[str, np.ndarray], *, warmup: int = 1, iters: int = 5) -> dict[str, float]:
        from ..timing import time_call

        return time_call(lambda: self.infer(feeds), warmup=warmup, iters=iters)

    def close(self) -> None:
        self.loaded = False

    def _load(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _infer(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError


def as_polygraphy(runner: Runner):
    """A polygraphy BaseRunner over ``runner`` (for verify's Comparator), named ``runner.name``."""
    from polygraphy.backend.base import BaseRunner
    from polygraphy.common import TensorMetadata

    class Adapter(BaseRunner):
        def __init__(self) -> None:
            super().__init__(name=runner.name, prefix=runner.name)
            self.runner = runner

        @property
        def details(self) -> dict[str, Any]:
            return runner.details

        def activate_impl(self) -> None:
            runner.load()

        def get_input_metadata_impl(self):
            meta = TensorMetadata()
            for name, dtype, dims in runner.input_metadata():
                meta.add(name, dtype, dims)
            return meta

        def infer_impl(self, feed_dict):
            started = time.perf_counter()
            outputs = runner.infer(dict(feed_dict))
            self.inference_time = time.perf_counter() - started
            return OrderedDict(zip(runner.output_names(), outputs))

        def deactivate_impl(self) -> None:
            runner.close()

    return Adapter()
