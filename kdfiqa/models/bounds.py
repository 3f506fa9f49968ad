"""Bounds of model factory keyword arguments: what a family declares its depths, widths and ratios
may be, checked before anything is built (see :mod:`kdfiqa.models.registry`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import ConfigError
from ..options import check_range

__all__ = ["Bound", "check_bounds"]


@dataclass(frozen=True)
class Bound:
    """The range of a numeric keyword argument: a number, or each number of a list of at most
    ``max_items`` (one per stage, say). ``at_least``/``at_most`` are closed, ``above`` open;
    ``integer`` asks for whole numbers; ``not_all_zero`` refuses a list (or number) that is all zero.
    ``None``, the factory's default, always passes."""

    at_least: float | None = None
    above: float | None = None
    at_most: float | None = None
    integer: bool = False
    max_items: int = 16
    not_all_zero: bool = False

    def check(self, where: str, value: Any) -> None:
        """Raise a one-line :class:`ConfigError` naming ``where`` unless ``value`` is within bounds."""
        if value is None:
            return
        many = isinstance(value, (list, tuple))
        if many and len(value) > self.max_items:
            raise ConfigError(f"{where}: {len(value)} entries, at most {self.max_items}")
        items = list(value) if many else [value]
        for i, item in enumerate(items):
            check_range(f"{where}[{i}]" if many else where, item, at_least=self.at_least, above=self.above,
                        at_most=self.at_most, integer=self.integer)
        if self.not_all_zero and not any(items):
            raise ConfigError(f"{where}: {value!r} must have an entry above zero")


def check_bounds(spec: str, kwargs: Mapping[str, Any], bounds: Mapping[str, Bound]) -> None:
    """Check every keyword argument of ``kwargs`` that ``bounds`` names; an error names ``spec`` and
    the argument (``model emo2_1m(...): depths[0]: 3000000 must be an integer from 0 to 64``)."""
    for key, bound in bounds.items():
        if key in kwargs:
            bound.check(f"{spec}: {key}", kwargs[key])
