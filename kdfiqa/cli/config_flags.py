"""Command-line flags generated from the run configuration's fields.

Each field of a :class:`~kdfiqa.config.RunConfig` section declared with a ``flag``
(:func:`kdfiqa.options.option`) becomes one argparse option of ``kdfiqa train``/``distill``: its type
follows the field's hint (ints, finite floats, input sizes, on/off switches, repeatable list items),
its choices and help come from the field. :func:`config_from_args` turns the parsed flags back into a
layer of the config, applied after the recipe and ``--config`` file and before ``--set``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import sys
import typing
from typing import Any, Callable, Iterator

from ..errors import ConfigError
from ..size import Size

__all__ = ["add_config_flags", "add_threads_flag", "config_from_args", "image_size_arg", "input_size_arg",
           "finite_float", "intra_op_threads"]

_DEST = "_config_flags"
"""Where the parser keeps ``dest -> section.field`` for :func:`config_from_args`."""


def image_size_arg(text: str) -> tuple[int, int, int]:
    """argparse type of an image size: ``224``, ``224x336`` or ``3x224x336`` → (3, H, W), read by
    :meth:`kdfiqa.size.Size.parse` (sides of 1 to :data:`~kdfiqa.size.MAX_SIDE` pixels, 3 channels:
    kdfiqa feeds RGB images); its error is argparse's, after the flag."""
    return _rgb_size(text).chw


def input_size_arg(text: str) -> Any:
    """argparse type of a resolution for a config field: ``224`` → 224, ``224x336`` → [224, 336]
    (checked as :func:`image_size_arg`)."""
    return _rgb_size(text).as_config()


def _rgb_size(text: str) -> Size:
    try:
        return Size.parse(text, "", rgb=True)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def finite_float(text: str) -> float:
    """argparse type of a finite float (``nan`` and ``inf`` are refused at parse time)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid float value: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def at_least(low: int) -> Callable[[str], int]:
    """argparse type of an integer >= ``low`` (a batch size, a worker count)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{value} must be >= {low}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse


THREADS_HELP = ("torch's intra-op CPU threads (default: torch's choice, one per core); on a machine shared with "
                "other jobs, fewer threads than cores can run several times faster")
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
"""What torch reads at import for its intra-op threads, and what child processes inherit."""


def add_threads_flag(p: argparse.ArgumentParser) -> None:
    """``--threads N`` of a training or scoring command (:func:`intra_op_threads` applies it)."""
    p.add_argument("--threads", type=at_least(1), metavar="N", help=THREADS_HELP)


@contextlib.contextmanager
def intra_op_threads(threads: int | None) -> Iterator[None]:
    """While a command runs, torch uses ``threads`` intra-op threads (``None``: unchanged), the
    earlier setting restored afterwards. Before torch is imported this sets ``OMP_NUM_THREADS`` and
    ``MKL_NUM_THREADS``, which torch reads at import (so a refusal still answers without torch),
    and which worker processes inherit; after, ``torch.set_num_threads``."""
    if threads is None:
        yield
        return
    saved = {name: os.environ.get(name) for name in _THREAD_VARIABLES}
    torch = sys.modules.get("torch")
    before = torch.get_num_threads() if torch is not None else None
    os.environ.update({name: str(threads) for name in _THREAD_VARIABLES})
    if torch is not None:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        if before is not None:
            sys.modules["torch"].set_num_threads(before)


def _converter(section: str, field: dataclasses.Field, hint: Any) -> Callable[[str], Any] | None:
    """The argparse ``type`` for a field, from its hint (``None`` for switches)."""
    if field.name in ("input", "teacher_input", "deploy_input"):
        return input_size_arg
    options = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    base = typing.get_origin(options[0]) or options[0]
    if base is bool:
        return None
    if base is int:
        return int
    if base is float:
        return finite_float
    return str


def _sections() -> list[tuple[str, type]]:
    from ..config import SECTIONS

    return list(SECTIONS.items())


def add_config_flags(parser: argparse.ArgumentParser, command: str) -> None:
    """Add every flag ``command`` offers, one argument group per config section."""
    table: dict[str, str] = {}
    for section, cls in _sections():
        hints = typing.get_type_hints(cls)
        fields = [f for f in dataclasses.fields(cls)
                  if f.metadata.get("flag") and command in f.metadata.get("commands", ())]
        if not fields:
            continue
        group = parser.add_argument_group(section)
        for field in fields:
            meta = field.metadata
            dest = f"cfg_{section}_{field.name}"
            kwargs: dict[str, Any] = {"dest": dest, "help": meta.get("help") or None, "default": None}
            convert = _converter(section, field, hints[field.name])
            if convert is None:
                kwargs["action"] = "store_true"
            else:
                kwargs["type"] = convert
                if meta.get("choices"):
                    kwargs["choices"] = meta["choices"]
                else:
                    kwargs["metavar"] = meta.get("metavar") or field.name.upper()
                if meta.get("repeat"):
                    kwargs["action"] = "append"
            group.add_argument(meta["flag"], **kwargs)
            table[dest] = f"{section}.{field.name}"
    parser.set_defaults(**{_DEST: table})


def config_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The given flags as ``{"section.field": value}`` (flags left out are absent), the ``flags``
    layer of :func:`kdfiqa.config.build_layers`."""
    table = getattr(args, _DEST, {})
    return {key: getattr(args, dest) for dest, key in table.items() if getattr(args, dest, None) is not None}
