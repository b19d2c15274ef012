"""The one family of errors the user can act on.

Every exception the library raises for a reason the user can fix (a missing runtime, a model it
cannot load, an invalid ONNX file, a busy output, a server that did not start) derives from
:class:`FnaDeployError` as well as from the builtin it always was (ValueError, RuntimeError), so
library callers catching those keep working, and the CLI boundary (fna_deploy.cli.as_cli_error)
maps the whole family once: one line ``error: <message>``, exit 2.
"""

from __future__ import annotations


class FnaDeployError(Exception):
    """An error whose message is one sentence naming the input and what to do."""
