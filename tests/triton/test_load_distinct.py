"""The load mode sends distinct inputs and checks each answer against its own input's reference:
a server that answers a request with another request's result is caught (with one input for every
request, as before, it could not be)."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from fna_deploy.triton.load import distinct_inputs, run_load


def _model(x: np.ndarray) -> np.ndarray:
    """A stand-in for the served model: a fixed random projection of the image."""
    weight = np.random.default_rng(1).standard_normal((x[0].size, 10)).astype(np.float32)
    return x.reshape(len(x), -1) @ weight


class SwappingServer:
    """Answers each request with the answer to the request before it (across all clients): the
    wrong-request delivery a concurrency bug in a server or a batcher would cause."""

    previous = None
    lock = threading.Lock()

    def __init__(self, swap: bool) -> None:
        self.swap, self.url = swap, "fake:1"

    def infer(self, model, inputs):
        answer = _model(next(iter(inputs.values())))
        with SwappingServer.lock:
            given = SwappingServer.previous if (self.swap and SwappingServer.previous is not None) else answer
            SwappingServer.previous = answer
        return SimpleNamespace(outputs={"output": given})

    def close(self):
        pass


def _checks(arrays):
    def check_against(reference):
        return lambda answer: None if np.allclose(answer, reference, atol=1e-4) else "differs"
    return [check_against(_model(a)) for a in arrays]


def test_distinct_inputs_differ_and_keep_shape():
    x = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)
    arrays = distinct_inputs(x, 8)
    assert len(arrays) == 8 and arrays[0] is x
    assert all(a.shape == x.shape and a.dtype == x.dtype and a.flags.c_contiguous for a in arrays)
    assert len({a.tobytes() for a in arrays}) == 8
    with pytest.raises(ValueError):
        distinct_inputs(x, 0)


@pytest.mark.parametrize("swap", [False, True])
def test_answers_delivered_to_the_wrong_request_are_mismatches(swap):
    SwappingServer.previous = None
    x = np.random.default_rng(0).standard_normal((1, 3, 8, 8)).astype(np.float32)
    arrays = distinct_inputs(x, 8)
    report = run_load("fake:1", "m", [{"images": a} for a in arrays], _checks(arrays), concurrency=4, duration=5.0,
                      max_requests=64, client_factory=lambda url: SwappingServer(swap))
    assert report.requests == 64 and report.errors == 0 and report.distinct_inputs == 8
    if swap:
        assert report.mismatches >= 60 and not report.passed  # only a request that happens to follow its own input passes
        assert report.first_mismatch.startswith("input ") and " of 8: differs" in report.first_mismatch
    else:
        assert report.mismatches == 0 and report.passed
    # the old way, one input for all: the same swapping server looks perfect
    SwappingServer.previous = None
    blind = run_load("fake:1", "m", {"images": x}, _checks([x])[0], concurrency=4, duration=5.0, max_requests=64,
                     client_factory=lambda url: SwappingServer(swap))
    assert blind.mismatches == 0


def test_one_check_per_input():
    x = np.zeros((1, 3, 8, 8), np.float32)
    with pytest.raises(ValueError, match="one check per input"):
        run_load("fake:1", "m", [{"images": x}, {"images": x}], [lambda a: None], client_factory=lambda url: SwappingServer(False))
