"""Image sizes: the one parser and formatter every flag, config field, model file, checkpoint, budget
and transform goes through.

:meth:`Size.parse` reads ``224``, ``"224"``, ``"224x336"``, ``"3x224x336"``, ``(224, 336)``,
``(3, 224, 336)`` and the lists YAML and JSON give; it refuses booleans, fractions, sides under 1 or
over :data:`MAX_SIDE` with one :class:`~kdfiqa.errors.ConfigError` whose text is the same wherever
the value came from, after the place it names (``--input``, ``run.yaml:12: model.input``, a model file, a checkpoint).
``str(size)`` is ``224x336``; :meth:`Size.describe` adds the channels (``3x224x336``) where they
matter.

Importing this module costs no torch: command-line parsers and configs use it freely.
"""

from __future__ import annotations

import numbers
import re
from dataclasses import dataclass
from typing import Any, Sequence, Union

from .errors import ConfigError

__all__ = ["MAX_SIDE", "RGB", "Size", "SizeLike", "format_size"]

MAX_SIDE = 16384
"""The largest height or width an input size may have (a 16384x16384 float image is 3 GiB): a larger
one is a typo, refused before anything is allocated."""
RGB = 3
"""The channels of the images kdfiqa feeds its networks."""

_TEXT = re.compile(r"[0-9]+(x[0-9]+){0,2}")


def _error(where: str, detail: str) -> ConfigError:
    """The error about a size: ``detail`` after ``where`` (the flag, file and key, model file or
    argument the value came from; left out when empty, as argparse names the flag itself)."""
    return ConfigError(f"{where}: {detail}" if where else detail)


def _refuse(where: str, value: Any, reason: str) -> ConfigError:
    return _error(where, f"{value!r} is not an input size ({reason}): give 224, 224x336 or [224, 336], "
                         f"sides of 1 to {MAX_SIDE} pixels")


@dataclass(frozen=True)
class Size:
    """An image size: ``height`` x ``width`` pixels of ``channels`` channels (3 unless told)."""

    height: int
    width: int
    channels: int = RGB

    @classmethod
    def parse(cls, value: SizeLike, where: str = "input size", *, rgb: bool = False) -> "Size":
        """``value`` as a :class:`Size` (see the module docstring for what is accepted); ``where``
        names its origin in the error. ``rgb`` also refuses a channel count other than 3 (where
        kdfiqa feeds RGB images)."""
        if isinstance(value, Size):
            size = value
        else:
            dims = _dims(value, where)
            if len(dims) not in (1, 2, 3):
                raise _refuse(where, value, f"{len(dims)} numbers; a size is H, (H, W) or (C, H, W)")
            if len(dims) == 1:
                dims = (dims[0], dims[0])
            if min(dims) < 1:
                raise _refuse(where, value, "a side under 1 pixel")
            if max(dims[-2:]) > MAX_SIDE:
                raise _refuse(where, value, f"a side over {MAX_SIDE} pixels")
            size = cls(dims[-2], dims[-1], dims[0] if len(dims) == 3 else RGB)
        if rgb and size.channels != RGB:
            raise _error(where, f"{value!r} has {size.channels} channels; kdfiqa feeds RGB images: "
                                   "give HxW or [height, width], e.g. 224x336")
        return size

    @property
    def hw(self) -> tuple[int, int]:
        """(height, width)."""
        return self.height, self.width

    @property
    def chw(self) -> tuple[int, int, int]:
        """(channels, height, width): the input shape of a network, batch left out."""
        return self.channels, self.height, self.width

    def as_list(self) -> list[int]:
        """``[height, width]``: how transform specs and model files write a size."""
        return [self.height, self.width]

    def as_config(self) -> int | list[int]:
        """``224`` for a square, else ``[224, 336]``: how a run config writes a resolution."""
        return self.height if self.height == self.width else self.as_list()

    def describe(self, channels: bool = False) -> str:
        """``224x336``, or ``3x224x336`` with ``channels``."""
        return "x".join(map(str, self.chw if channels else self.hw))

    def __str__(self) -> str:
        return self.describe()


SizeLike = Union[int, str, Sequence[int], Size]
"""What :meth:`Size.parse` reads."""


def _dims(value: Any, where: str) -> tuple[int, ...]:
    """The numbers of ``value``: an int, text such as ``224x336``, or a sequence of ints."""
    if isinstance(value, bool):
        raise _refuse(where, value, "a boolean")
    if isinstance(value, numbers.Integral):
        return (int(value),)
    if isinstance(value, str):
        text = value.strip().lower()
        if not _TEXT.fullmatch(text):
            raise _refuse(where, value, "not of the form 224, 224x336 or 3x224x336")
        return tuple(int(part) for part in text.split("x"))
    if isinstance(value, Sequence):
        if not all(isinstance(d, numbers.Integral) and not isinstance(d, bool) for d in value):
            raise _refuse(where, value, "every side must be a whole number")
        return tuple(int(d) for d in value)
    if isinstance(value, numbers.Number):
        raise _refuse(where, value, "a side must be a whole number")
    raise _refuse(where, value, f"a {type(value).__name__}, not a number, text or list")


def format_size(value: SizeLike, channels: bool = False) -> str:
    """``value`` (any :data:`SizeLike`, e.g. a report's (C, H, W)) written ``224x336``, or
    ``3x224x336`` with ``channels``."""
    return Size.parse(value).describe(channels)
