"""Progress for every command: rich on a terminal, one plain line per stage in logs.

On a terminal (stdout and stderr both TTYs) a transient rich display shows the current stage with
a spinner, or a bar for counted work, and the elapsed time. Anywhere else (CI logs, ``| tee``,
redirects) each stage is one line on stderr with the time since the command started, e.g.::

    [   0.0s] loading the model
    [   3.1s] exporting ONNX (portable) and checking it with ONNX Runtime
    [  41.7s] done

``-q/--quiet`` turns both off. Counted work (``bar(stage, done, total)``) prints one line when a
stage starts, not one per item.
"""

from __future__ import annotations

import contextlib
import sys
import time
from typing import Any, Iterator, Optional


def interactive() -> bool:
    """Whether a live display makes sense: stdout and stderr are both terminals."""
    try:
        return sys.stdout.isatty() and sys.stderr.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


class Reporter:
    """What a command reports progress to: ``step(message)`` for a stage, ``bar(stage, done, total)``
    for counted work. Calling the reporter is ``step`` (the library's ``progress=`` callbacks)."""

    def __init__(self, *, quiet: bool = False, live: Any = None, stream: Any = None) -> None:
        self.quiet = quiet
        self.live = live  # a rich Progress, or None for plain lines
        self.stream = stream
        self.started = time.perf_counter()
        self.current: Optional[str] = None
        self._task: Any = None
        self._bars: dict[str, Any] = {}

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def step(self, message: str) -> None:
        if self.quiet or message == self.current:
            return
        _spoke()
        self.current = message
        if self.live is not None:
            if self._task is None:
                self._task = self.live.add_task(message, total=None, count="")
            else:
                self.live.update(self._task, description=message)
        else:
            self.line(message)

    __call__ = step

    def bar(self, stage: str, done: int, total: int) -> None:
        if self.quiet:
            return
        _spoke()
        if self.live is None:
            if stage != self.current and done < total:  # the finishing call is left to done()
                self.current = stage
                self.line(f"{stage} ({done + 1} of {total})" if total > 1 else stage)
            return
        if stage not in self._bars:
            self._bars[stage] = self.live.add_task(stage, total=max(total, 1), count="")
        self.live.update(self._bars[stage], completed=done, total=max(total, 1), count=f"{done}/{total}")

    def line(self, message: str) -> None:
        stream = self.stream or sys.stderr
        print(f"[{self.elapsed():7.1f}s] {message}", file=stream, flush=True)

    def done(self, message: str = "done") -> None:
        if not self.quiet and self.live is None and self.current is not None:
            self.line(message)


def _spoke() -> None:
    from ..cli import output_started  # the CLI's start notice is not needed once progress shows

    output_started()


@contextlib.contextmanager
def progress(console: Any = None, *, quiet: bool = False, live: Optional[bool] = None) -> Iterator[Reporter]:
    """A :class:`Reporter` for the duration of the block. ``console``: the rich console to draw on
    (default: stderr); ``live``: force the rich display on or off (default: :func:`interactive`)."""
    if quiet:
        yield Reporter(quiet=True)
        return
    if live is None:
        live = interactive()
    if not live:
        reporter = Reporter()
        yield reporter
        reporter.done()
        return
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = console or Console(stderr=True)
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[count]}"), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as display:
        yield Reporter(live=display)
