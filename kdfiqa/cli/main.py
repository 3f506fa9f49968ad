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
import importlib
import signal
import sys
from typing import Sequence

from .. import __version__
from ..errors import user_message

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
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"kdfiqa {args.command}: interrupted", file=sys.stderr)
        return 130
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
