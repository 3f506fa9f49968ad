"""Fill the budget: the largest input size at which a model still fits, found by bisection.

fvcore's count grows with the input size (every counted op scales with the feature maps), so the
sizes on a model's stride grid that fit a budget form a prefix: :func:`fill_budget` finds its end by
doubling, then bisecting, on exact counts (:func:`kdfiqa.budget.measure`), and reports the boundary:
the largest size that fits and the next one up, which does not, with both counts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from ..errors import ConfigError, spelled
from .core import measure
from .limits import Budget, CostReport

__all__ = ["FillResult", "fill_budget"]


@dataclass
class FillResult:
    """The boundary :func:`fill_budget` found: ``fits`` (None when not even the smallest size fits)
    and ``over`` (None when the search limit fits too), and how many traces it took."""

    fits: CostReport | None
    over: CostReport | None
    traces: int
    stride: int
    aspect: tuple[int, int]


def fill_budget(model: nn.Module, budget: Budget, *, stride: int = 32, aspect: tuple[int, int] = (1, 1),
                max_side: int = 4096, measure_fn: Callable[[nn.Module, tuple[int, int, int]], CostReport] = measure
                ) -> FillResult:
    """The largest size ``(3, H, W)`` with H a multiple of ``stride``, ``H:W = aspect`` (W rounded to
    the stride grid) and H at most ``max_side``, at which ``model`` fits ``budget``.

    The parameter count does not depend on the size: a model over the parameter limit fits nowhere.
    """
    if stride < 1 or min(aspect) < 1:
        raise ConfigError(f"{spelled('--fill', 'fill_budget')} needs a positive stride and aspect ratio, got {stride} and {aspect}")
    reports: dict[int, CostReport] = {}

    def size(k: int) -> tuple[int, int, int]:
        height = k * stride
        return (3, height, max(stride, round(height * aspect[1] / aspect[0] / stride) * stride))

    def fits(k: int) -> bool:
        if k not in reports:
            reports[k] = measure_fn(model, size(k))
        return budget.fits(reports[k])

    top = max_side // stride
    if top < 1:
        raise ConfigError(f"{spelled('--fill', 'fill_budget')}: no size on a {stride}-pixel grid is at most {max_side}")
    if not fits(1):
        return FillResult(None, reports[1], len(reports), stride, aspect)
    low, high = 1, 2
    while high <= top and fits(high):  # double until a size does not fit
        low, high = high, high * 2
    if high > top:
        if fits(top):
            return FillResult(reports[top], None, len(reports), stride, aspect)
        high = top
    while high - low > 1:  # fits(low), not fits(high)
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return FillResult(reports[low], reports[high], len(reports), stride, aspect)
