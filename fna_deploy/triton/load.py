"""A bounded load generator for a served model: N concurrent clients for S seconds (or R requests),
every answer checked against a local reference; requests, errors, mismatches, latency percentiles
and throughput. Loopback-friendly: one HTTP connection per worker, no request left in flight.

Requests carry distinct inputs (request i sends input i mod K) and each answer is checked against
the reference of its own input, so an answer delivered to the wrong request is a mismatch."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np


@dataclass
class LoadReport:
    url: str
    model: str
    concurrency: int
    duration_s: float  # asked for
    elapsed_s: float  # measured, first request sent to last answer received
    batch: int
    requests: int
    errors: int
    mismatches: int
    p50_ms: Optional[float]
    p90_ms: Optional[float]
    p99_ms: Optional[float]
    requests_per_s: float
    images_per_s: float
    reference: str  # what every answer was checked against
    first_error: Optional[str] = None
    first_mismatch: Optional[str] = None
    max_requests: Optional[int] = None
    distinct_inputs: int = 1  # how many different inputs the requests cycled through
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.requests > 0 and self.errors == 0 and self.mismatches == 0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}

    def write_json(self, path: "str | Path") -> None:
        from ..utils import write_text_atomic

        write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def summary(self) -> str:
        lat = "-" if self.p50_ms is None else f"p50 {self.p50_ms:.1f} ms, p90 {self.p90_ms:.1f} ms, p99 {self.p99_ms:.1f} ms"
        return (f"{self.requests} requests in {self.elapsed_s:.1f} s at concurrency {self.concurrency}: {self.errors} errors, "
                f"{self.mismatches} mismatches (vs {self.reference}); {lat}; {self.requests_per_s:.1f} req/s, "
                f"{self.images_per_s:.1f} images/s")


Check = Callable[[np.ndarray], Optional[str]]


def distinct_inputs(array: np.ndarray, count: int) -> list[np.ndarray]:
    """``count`` different inputs of ``array``'s shape and dtype: the array itself, then copies
    rolled along the last axis and flipped (every image of a batch changes, and so does its answer)."""
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count!r}")
    width = array.shape[-1]
    out = [array]
    for k in range(1, count):
        shifted = np.roll(array, shift=max(1, k * width // count), axis=-1)
        out.append(np.ascontiguousarray(shifted[..., ::-1, :] if k % 2 and array.ndim >= 2 else shifted))
    return out


def run_load(
    url: str,
    model: str,
    inputs: "Union[dict[str, np.ndarray], Sequence[dict[str, np.ndarray]]]",
    check: "Union[Check, Sequence[Check]]",
    *,
    concurrency: int = 4,
    duration: float = 10.0,
    max_requests: Optional[int] = None,
    reference: str = "a local reference",
    timeout: float = 60.0,
    client_factory: Optional[Callable[[str], Any]] = None,
) -> LoadReport:
    """Send ``inputs`` to ``model`` from ``concurrency`` workers until ``duration`` seconds have
    passed (or ``max_requests`` were sent); ``check(first_output)`` returns None for a correct
    answer, else why it is wrong. Each worker waits for its answer before the next request.

    ``inputs`` and ``check`` may be equal-length sequences: request i sends ``inputs[i % K]`` and its
    answer goes to ``check[i % K]``, so answers swapped between concurrent requests are caught."""
    cases = list(inputs) if isinstance(inputs, (list, tuple)) else [inputs]
    checks = list(check) if isinstance(check, (list, tuple)) else [check]
    if not cases or len(cases) != len(checks):
        raise ValueError(f"give one check per input, got {len(cases)} inputs and {len(checks)} checks")
    if isinstance(concurrency, bool) or not isinstance(concurrency, int) or concurrency < 1:
        raise ValueError(f"concurrency must be an int >= 1, got {concurrency!r}")
    if not duration > 0 or duration != duration or duration == float("inf"):
        raise ValueError(f"duration must be a positive number of seconds, got {duration!r}")
    if max_requests is not None and max_requests < 1:
        raise ValueError(f"max_requests must be >= 1, got {max_requests!r}")
    from .client import TritonHttpClient

    make_client = client_factory or (lambda u: TritonHttpClient(u, timeout=timeout))
    lock = threading.Lock()
    latencies: list[float] = []
    counts = {"requests": 0, "errors": 0, "mismatches": 0}
    first: dict[str, Optional[str]] = {"error": None, "mismatch": None}
    stop = threading.Event()
    batch = int(next(iter(cases[0].values())).shape[0])

    def take_ticket() -> Optional[int]:
        with lock:
            if stop.is_set() or (max_requests is not None and counts["requests"] >= max_requests):
                return None
            counts["requests"] += 1
            return counts["requests"] - 1

    def worker(client: Any) -> None:
        while (ticket := take_ticket()) is not None:
            started = time.perf_counter()
            try:
                result = client.infer(model, cases[ticket % len(cases)])
                answer = next(iter(result.outputs.values()))
                problem = check_of(ticket)(answer)
            except Exception as exc:  # counted, not raised: a load test reports every failure
                with lock:
                    counts["errors"] += 1
                    first["error"] = first["error"] or f"{type(exc).__name__}: {exc}"
                continue
            elapsed = (time.perf_counter() - started) * 1e3
            with lock:
                latencies.append(elapsed)
                if problem is not None:
                    counts["mismatches"] += 1
                    where = f"input {ticket % len(cases)} of {len(cases)}: " if len(cases) > 1 else ""
                    first["mismatch"] = first["mismatch"] or where + problem

    def check_of(ticket: int) -> Check:
        return checks[ticket % len(checks)]

    clients = [make_client(url) for _ in range(concurrency)]
    threads = [threading.Thread(target=worker, args=(c,), daemon=True) for c in clients]
    begun = time.perf_counter()
    try:
        for thread in threads:
            thread.start()
        deadline = begun + duration
        while any(t.is_alive() for t in threads) and time.perf_counter() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()  # also on Ctrl-C: workers finish the request in flight and stop
        for thread in threads:
            thread.join()
        for client in clients:
            try:
                client.close()
            except Exception:
                pass
    elapsed = time.perf_counter() - begun
    answered = len(latencies)
    pct = (lambda q: round(float(np.percentile(latencies, q)), 3)) if latencies else (lambda q: None)
    return LoadReport(
        url=getattr(clients[0], "url", url), model=model, concurrency=concurrency, duration_s=duration, elapsed_s=round(elapsed, 3),
        batch=batch, requests=counts["requests"], errors=counts["errors"], mismatches=counts["mismatches"],
        p50_ms=pct(50), p90_ms=pct(90), p99_ms=pct(99), requests_per_s=round(answered / elapsed, 2) if elapsed > 0 else 0.0,
        images_per_s=round(answered * batch / elapsed, 2) if elapsed > 0 else 0.0, reference=reference,
        first_error=first["error"], first_mismatch=first["mismatch"], max_requests=max_requests, distinct_inputs=len(cases),
    )
