"""Server-side numbers from Triton's Prometheus metrics endpoint (``/metrics`` on the metrics port,
127.0.0.1:8002 under ``fna-deploy serve``): two scrapes around the client's requests, and per model
the requests served, their queue time and compute time (input, infer, output), so a user sees
where time goes: in the network and client, waiting in the server's queue, or computing."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass
from typing import Any, Optional

from .client import normalise_url

_LINE = re.compile(r'^(nv_inference_[a-z_]+)\{([^}]*)\}\s+([0-9.eE+-]+)\s*$')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
# the cumulative counters used (microseconds, or counts)
COUNTERS = ("request_success", "request_failure", "count", "exec_count", "request_duration_us", "queue_duration_us",
            "compute_input_duration_us", "compute_infer_duration_us", "compute_output_duration_us")


def metrics_url(url: str) -> str:
    """``http://HOST:PORT/metrics`` for ``HOST:PORT`` (or a full http URL, /metrics added when missing)."""
    text = url.strip()
    path = "/metrics"
    if text.startswith("http://") and text.rstrip("/").endswith("/metrics"):
        text = text.rstrip("/")[: -len("/metrics")]
    return f"http://{normalise_url(text)}{path}"


def default_metrics_url(http_url: str) -> str:
    """Triton's default layout: the metrics port is the HTTP port + 2 (8000 -> 8002), as serve's defaults."""
    host, port = normalise_url(http_url).rsplit(":", 1)
    return metrics_url(f"{host}:{int(port) + 2}")


Snapshot = dict[tuple[str, str], float]  # (model, counter) -> value, summed over versions and failure reasons


def parse_metrics(text: str) -> Snapshot:
    """The nv_inference_* counters of a Prometheus text exposition, per model."""
    values: Snapshot = {}
    for line in text.splitlines():
        match = _LINE.match(line)
        if not match:
            continue
        counter = match.group(1)[len("nv_inference_"):]
        if counter not in COUNTERS:
            continue
        labels = dict(_LABEL.findall(match.group(2)))
        model = labels.get("model")
        if model is None:
            continue
        key = (model, counter)
        values[key] = values.get(key, 0.0) + float(match.group(3))
    return values


def scrape(url: str, timeout: float = 5.0) -> Snapshot:
    """One scrape of the metrics endpoint ``url``; ValueError says why there is none."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            text = response.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ValueError(f"no Triton metrics at {url} ({getattr(exc, 'reason', None) or type(exc).__name__})") from None
    values = parse_metrics(text)
    if not values:
        raise ValueError(f"{url} answers but shows no nv_inference metrics (is it a Triton metrics port?)")
    return values


@dataclass
class ModelTimes:
    """What one model did between two scrapes; times are averages per request, in milliseconds."""

    model: str
    requests: int
    failures: int
    inferences: int  # batch items
    executions: int  # batches the backend ran (fewer than requests when the dynamic batcher joined them)
    request_ms: Optional[float]
    queue_ms: Optional[float]
    compute_input_ms: Optional[float]
    compute_infer_ms: Optional[float]
    compute_output_ms: Optional[float]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def line(self) -> str:
        if not self.requests:
            return f"{self.model}: no successful requests ({self.failures} failed)"
        compute = (self.compute_input_ms or 0) + (self.compute_infer_ms or 0) + (self.compute_output_ms or 0)
        return (f"{self.model}: {self.requests} requests ({self.executions} executions, {self.failures} failed), per request "
                f"{self.request_ms:.2f} ms in the server = queue {self.queue_ms:.2f} ms + compute {compute:.2f} ms "
                f"(input {self.compute_input_ms:.2f}, infer {self.compute_infer_ms:.2f}, output {self.compute_output_ms:.2f})")


def server_times(before: Snapshot, after: Snapshot) -> list[ModelTimes]:
    """Per model with requests between the scrapes (success or failure), sorted by name."""
    def delta(model: str, counter: str) -> float:
        return max(0.0, after.get((model, counter), 0.0) - before.get((model, counter), 0.0))

    out = []
    for model in sorted({m for m, _ in after}):
        requests, failures = int(delta(model, "request_success")), int(delta(model, "request_failure"))
        if not requests and not failures:
            continue
        per = (lambda counter: round(delta(model, counter) / requests / 1e3, 4)) if requests else (lambda counter: None)
        out.append(ModelTimes(model, requests, failures, int(delta(model, "count")), int(delta(model, "exec_count")),
                              per("request_duration_us"), per("queue_duration_us"), per("compute_input_duration_us"),
                              per("compute_infer_duration_us"), per("compute_output_duration_us")))
    return out


def scrape_after(url: str, before: Snapshot, model: str, expected: int, wait: float = 2.0) -> Snapshot:
    """Scrape until ``model`` shows ``expected`` more requests than ``before`` (the server counts a
    request just after answering it), or ``wait`` seconds passed."""
    import time

    deadline = time.monotonic() + wait
    while True:
        after = scrape(url)
        done = sum(after.get((model, c), 0.0) - before.get((model, c), 0.0) for c in ("request_success", "request_failure"))
        if done >= expected or time.monotonic() >= deadline:
            return after
        time.sleep(0.05)
