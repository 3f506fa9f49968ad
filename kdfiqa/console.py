"""The rich console every command prints through: terminal-wide on a terminal, unwrapped elsewhere.

On a terminal rich fits tables and prose to its width. Written to a pipe or a file (CI logs,
``| tee``, a test capturing the output) rich would assume 80 columns and cut table cells with an
ellipsis and hard-wrap prose in mid-sentence; :func:`make_console` gives such output a width no line
of kdfiqa reaches, so every table row and message is written whole, on one line, and flushes after
each message, so that a pipe shows the progress of a long command as it happens (Python buffers a
pipe's output in blocks of kilobytes otherwise).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["make_console", "UNWRAPPED_WIDTH"]

UNWRAPPED_WIDTH = 4096
"""Columns a console writing to something other than a terminal lays its output out in."""


def make_console(*, stderr: bool = False) -> "Console":
    """A rich console on stdout (``stderr``: on stderr): the terminal's width on a terminal, else
    :data:`UNWRAPPED_WIDTH` columns with soft wrapping, so nothing is cut or folded."""
    from rich.console import Console

    class FlushingConsole(Console):
        """A console that hands each message on to its stream at once."""

        def print(self, *objects: Any, **kwargs: Any) -> None:
            super().print(*objects, **kwargs)
            self.file.flush()

    stream = sys.stderr if stderr else sys.stdout
    isatty = getattr(stream, "isatty", None)
    if isatty is not None and isatty():
        return Console(stderr=stderr)
    return FlushingConsole(stderr=stderr, width=UNWRAPPED_WIDTH, soft_wrap=True)
