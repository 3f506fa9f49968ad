"""Distillation: a frozen teacher, a budget-checked student and the objectives that train it."""

from __future__ import annotations

from .objective import LossSpec, Supervised, as_weighted_sum

__all__ = ["LossSpec", "Supervised", "as_weighted_sum"]
