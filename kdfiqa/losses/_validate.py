"""Shared argument checks for the loss modules: batch shapes and hyper-parameter ranges."""

from __future__ import annotations

import math

import torch

from ..errors import ConfigError


def as_scores(x: torch.Tensor, name: str) -> torch.Tensor:
    """``x`` of shape (B,) or (B, 1) as a (B,) tensor; ValueError naming ``name`` otherwise."""
    if x.dim() == 2 and x.shape[1] == 1:
        return x[:, 0]
    if x.dim() != 1:
        raise ValueError(f"{name} must have shape (B,) or (B, 1), got {tuple(x.shape)}")
    return x


def as_score_pair(
    a: torch.Tensor, b: torch.Tensor, names: tuple[str, str]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Two score batches as (B,) tensors of the same length (at least one) and dtype (that of ``a``)."""
    a, b = as_scores(a, names[0]), as_scores(b, names[1])
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} has {a.shape[0]} scores but {names[1]} has {b.shape[0]}")
    if a.shape[0] == 0:
        raise ValueError(f"{names[0]} and {names[1]} are empty: a loss needs a batch of at least one score")
    return a, b.to(a.dtype)


def check_range(
    name: str, value: float, low: float, high: float = math.inf, *, open_low: bool = False
) -> float:
    """``value`` as a float if ``low <= value <= high`` (``low < value`` if ``open_low``).

    Raises :class:`ConfigError` naming the loss parameter and the allowed interval otherwise.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"loss parameter {name}={value!r} must be a number")
    value = float(value)
    too_low = value <= low if open_low else value < low
    if too_low or value > high or math.isnan(value):
        interval = ("(" if open_low else "[") + f"{low}, {high}" + ("]" if high < math.inf else ")")
        raise ConfigError(f"loss parameter {name}={value} is outside {interval}")
    return value
