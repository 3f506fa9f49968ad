"""``kdfiqa``: the command-line entry point.

Each sub-command lives in its own module exposing ``register(subparsers)``, which adds its parser and
sets ``func`` to a ``run(args) -> int`` callable. A sub-command module imports at module level only
what its parser needs, and its heavy dependencies (torch, timm, fvcore, scipy, rich) inside ``run``,
so that ``kdfiqa --help`` and ``kdfiqa COMMAND --help`` start without them.

Expected failures (bad paths, flags or files) are :class:`~kdfiqa.errors.KdfiqaError`: they print one
line on stderr and exit with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import signal
import sys
import warnings
from typing import Any, Iterator, Sequence

from .. import __version__
from ..errors import flag_spelling, user_message
from .config_flags import intra_op_threads

COMMANDS = ("train", "distill", "pseudo-label", "evaluate", "predict", "export", "budget", "search", "models",
            "recipes", "demo")
"""Sub-command modules under :mod:`kdfiqa.cli`, in the order ``--help`` lists them."""


class _Parser(argparse.ArgumentParser):
    """argparse with kdfiqa's error convention: one line on stderr, exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``kdfiqa`` parser with every sub-command of :data:`COMMANDS` registered."""
    parser = _Parser(
        prog="kdfiqa",
        description="Distil a face-image-quality teacher into a student that fits a compute budget.",
    )
    parser.add_argument("--version", action="version", version=f"kdfiqa {__version__}")
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name in COMMANDS:
        importlib.import_module(f"{__package__}.{name.replace('-', '_')}").register(subparsers)
    return parser


@contextlib.contextmanager
def warnings_as_notes() -> Iterator[None]:
    """While a command runs, each warning of kdfiqa or of the libraries it calls is one line on
    stderr, ``note: <its first line>``, said once and on rank 0 only (not Python's two-line form
    with a source path)."""
    seen: set[str] = set()

    def note(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
        from ..engine.distributed import is_main_process

        text = (str(message).strip().splitlines() or [category.__name__])[0]
        if text not in seen and is_main_process():
            seen.add(text)
            print(f"note: {text}", file=sys.stderr)

    previous = warnings.showwarning
    warnings.showwarning = note
    try:
        yield
    finally:
        warnings.showwarning = previous


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``kdfiqa`` with ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    if hasattr(signal, "SIGXFSZ"):  # a file-size limit then fails the write (one line), not the process
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        with warnings_as_notes(), flag_spelling(), intra_op_threads(getattr(args, "threads", None)):
            return int(args.func(args) or 0)
    except KeyboardInterrupt as exc:  # 128 + the signal, as a shell reports a job it stopped
        print(f"kdfiqa {args.command}: interrupted", file=sys.stderr)
        return 128 + getattr(exc, "signum", signal.SIGINT)
    except Exception as exc:  # the one place foreign exceptions become kdfiqa's one-line errors
        if args.debug:
            raise
        first, *rest = user_message(exc).splitlines()
        print(f"kdfiqa {args.command}: error: {first}", file=sys.stderr)
        for line in rest:
            print(f"  {line}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
