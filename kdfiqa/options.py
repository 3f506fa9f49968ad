"""Options declared once: a config field carries its own command-line flag and help.

A section of the run configuration (:mod:`kdfiqa.config`, :class:`kdfiqa.engine.TrainConfig`) is a
dataclass whose fields are made with :func:`option`. The field's type hint, default and metadata are
the single declaration: the YAML/``--set`` loader checks values against the hint, the section's
``__post_init__`` checks their range, and :mod:`kdfiqa.cli.config_flags` generates the argparse flag
(name, type, choices, help) from the same field.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Sequence

from .errors import ConfigError

__all__ = ["option", "COMMANDS", "finite", "in_range", "one_of"]

COMMANDS = ("train", "distill")
"""The commands that build a run configuration (and that a recipe may hold sections for)."""

_MISSING = dataclasses.MISSING


def option(default: Any = _MISSING, *, factory: Callable[[], Any] | None = None, flag: str | None = None,
           help: str = "", metavar: str | None = None, choices: Sequence[Any] | None = None,
           commands: Sequence[str] = COMMANDS, repeat: bool = False) -> Any:
    """A dataclass field of a config section.

    Args:
        default / factory: the field's default value, or a callable making it (lists, dicts).
        flag: the dedicated command-line flag (``"--lr"``); ``None``: reachable through ``--set`` only.
        help: one line for ``--help``.
        metavar, choices: as in argparse; ``choices`` are also what ``__post_init__`` checks.
        commands: the commands that offer the flag.
        repeat: the flag may be repeated, each use appending one item to a list field.
    """
    metadata = {"flag": flag, "help": help, "metavar": metavar, "choices": tuple(choices) if choices else None,
                "commands": tuple(commands), "repeat": repeat}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def finite(where: str, value: float | None, *, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> None:
    """Raise a one-line :class:`ConfigError` unless ``value`` (when not None) is a finite number in
    the given range (closed ends unless ``*_open``)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: {value!r} is not a finite number")
    if low is not None and (value < low or (low_open and value == low)):
        raise ConfigError(f"{where}: {value!r} must be {'>' if low_open else '>='} {low:g}")
    if high is not None and (value > high or (high_open and value == high)):
        raise ConfigError(f"{where}: {value!r} must be {'<' if high_open else '<='} {high:g}")


MAX_SEED = 2**63 - 1
"""The largest seed: torch, numpy and Python all take seeds up to a signed 64-bit integer."""


def in_range(where: str, value: int | None, low: int, high: int | None = None) -> None:
    """Raise unless ``value`` (when not None) is an integer >= ``low`` (and <= ``high``)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"from {low} to {high}" if high is not None else f">= {low}"
        raise ConfigError(f"{where}: {value!r} must be an integer {bound}")


def one_of(where: str, value: Any, choices: Sequence[Any]) -> None:
    """Raise unless ``value`` is one of ``choices``, listing them."""
    if value not in choices:
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, choices))}")
