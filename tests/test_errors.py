"""One error family: every user-fixable exception is an FnaDeployError, mapped once at the CLI boundary."""

from __future__ import annotations

import pytest

from fna_deploy.cli import EXIT_USAGE, as_cli_error
from fna_deploy.errors import FnaDeployError
from fna_deploy.export.validate import InvalidOnnx
from fna_deploy.loading import ModelLoadError
from fna_deploy.native import NativeLibraryError
from fna_deploy.patching.base import UnsupportedModelError
from fna_deploy.runtimes.openvino import OpenVINOUnavailable
from fna_deploy.triton.server import ServerError
from fna_deploy.trt.rtx_child import ChildDied
from fna_deploy.trt.runtime import TensorRTUnavailable
from fna_deploy.utils import WriterBusy

FAMILY = [InvalidOnnx, ModelLoadError, NativeLibraryError, UnsupportedModelError, OpenVINOUnavailable, ServerError, ChildDied,
          TensorRTUnavailable, WriterBusy]


@pytest.mark.parametrize("cls", FAMILY, ids=lambda c: c.__name__)
def test_every_user_error_is_in_the_family_and_maps_to_one_line(cls):
    assert issubclass(cls, FnaDeployError)
    try:
        exc = cls("the input X cannot be used; do Y\nsecond line")
    except TypeError:  # a constructor with its own signature
        pytest.skip(f"{cls.__name__} takes other arguments")
    error = as_cli_error(exc)
    assert error is not None and error.exit_code == EXIT_USAGE
    assert error.format_message() == "the input X cannot be used; do Y"


def test_an_unexpected_exception_is_not_mapped():
    assert as_cli_error(KeyError("x")) is None
