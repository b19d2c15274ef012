"""An HTTP client for a running server (tritonclient): readiness, model config, inference."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any, Optional, Sequence

from .common import TRITONCLIENT_HINT


def _tritonclient_http():
    try:
        import tritonclient.http as httpclient
    except ImportError:
        raise ImportError(f"fna-deploy infer needs tritonclient: {TRITONCLIENT_HINT}") from None
    return httpclient


def normalise_url(url: str) -> str:
    """tritonclient wants host:port; accept http://host:port[/] too."""
    url = url.strip()
    for prefix in ("http://", "https://"):
        if url.startswith(prefix):
            if prefix == "https://":
                raise ValueError("https URLs are not supported here; the local server speaks plain HTTP")
            url = url[len(prefix):]
    url = url.rstrip("/")
    if not re.fullmatch(r"[A-Za-z0-9.\-\[\]:]+:\d+", url):
        raise ValueError(f"server URL {url!r} should be host:port (e.g. 127.0.0.1:8000)")
    return url


@dataclass
class InferResult:
    outputs: dict[str, Any]
    seconds: float
    model_config: dict[str, Any]


class TritonHttpClient:
    """A thin tritonclient HTTP wrapper: model metadata/config and numpy inference."""

    def __init__(self, url: str, *, timeout: float = 60.0) -> None:
        httpclient = _tritonclient_http()
        self.url = normalise_url(url)
        self._http = httpclient
        self.client = httpclient.InferenceServerClient(self.url, connection_timeout=timeout, network_timeout=timeout)
        self._configs: dict[str, dict[str, Any]] = {}  # model configs, fetched once per client

    def _call(self, what: str, func, *args, **kwargs):
        from tritonclient.utils import InferenceServerException

        try:
            return func(*args, **kwargs)
        except InferenceServerException as exc:
            raise ValueError(f"{what}: {exc.message() or exc}") from None
        except (ConnectionError, OSError) as exc:
            raise ValueError(f"cannot reach a Triton server at {self.url} ({type(exc).__name__})") from None
        except Exception as exc:  # geventhttpclient raises its own connection and protocol errors
            if "connect" in type(exc).__name__.lower() or "connect" in str(exc).lower():
                raise ValueError(f"cannot reach a Triton server at {self.url} ({type(exc).__name__})") from None
            # not HTTP (HTTPParseError), or HTTP whose body is not Triton's JSON (a JSON parse error)
            detail = (str(exc).strip().splitlines() or [""])[0][:120]
            raise ValueError(f"{what}: the server at {self.url} did not answer as a Triton HTTP server "
                             f"({type(exc).__name__}{': ' + detail if detail else ''}); check the host and port") from None

    def model_config(self, name: str) -> dict[str, Any]:
        if not self._call("model readiness", self.client.is_model_ready, name):
            raise ValueError(f"model {name!r} is not ready on {self.url} (is the name right? see the server's log)")
        return self._call(f"model {name!r}", self.client.get_model_config, name)

    def infer(self, name: str, inputs: dict[str, Any], outputs: Optional[Sequence[str]] = None) -> InferResult:
        import numpy as np

        config = self._configs.get(name) or self._configs.setdefault(name, self.model_config(name))
        requested_inputs = []
        for spec in config.get("input", []):
            if spec["name"] not in inputs:
                raise ValueError(f"model {name!r} needs input {spec['name']!r}; got {', '.join(inputs) or 'none'}")
            dtype = spec["data_type"].replace("TYPE_", "").replace("STRING", "BYTES")  # config STRING is BYTES on the wire
            array = np.ascontiguousarray(inputs[spec["name"]])
            from tritonclient.utils import triton_to_np_dtype

            array = array.astype(triton_to_np_dtype(dtype), copy=False)
            tensor = self._http.InferInput(spec["name"], list(array.shape), dtype)
            tensor.set_data_from_numpy(array, binary_data=True)
            requested_inputs.append(tensor)
        names = list(outputs) if outputs else [o["name"] for o in config.get("output", [])]
        requested = [self._http.InferRequestedOutput(n, binary_data=True) for n in names]
        started = time.perf_counter()
        result = self._call(f"inference on {name!r}", self.client.infer, name, requested_inputs, outputs=requested)
        seconds = time.perf_counter() - started
        return InferResult({n: result.as_numpy(n) for n in names}, seconds, config)

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "TritonHttpClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
