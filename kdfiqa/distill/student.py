"""The student: the model being trained, held to a compute budget before training starts."""

from __future__ import annotations

import logging
from typing import Any, Iterable

from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel

from ..budget import VQUALA2025, Budget, BudgetExceeded, CostReport, MeasurementError, check, measure
from ..errors import ConfigError
from ..size import Size, format_size

__all__ = ["unwrap_model", "Student"]

log = logging.getLogger(__name__)


def unwrap_model(model: nn.Module) -> nn.Module:
    """The bare module inside (possibly nested) ``DistributedDataParallel``/``DataParallel`` wrappers,
    so module paths and state-dict keys are the same with and without them."""
    while isinstance(model, (DistributedDataParallel, DataParallel)):
        model = model.module
    return model


def _size_list(sizes: Any) -> list[tuple[int, int, int]]:
    """``input_sizes`` as (C, H, W) tuples: one size (``224``, ``"224x336"``, ``(224, 336)``) or an
    iterable of them."""
    one = isinstance(sizes, (int, str, Size)) or (isinstance(sizes, tuple) and all(isinstance(d, int) for d in sizes))
    return [Size.parse(s, "Student input_sizes").chw for s in ([sizes] if one else list(sizes))]


def _deploy_size(model: nn.Module) -> tuple[int, int, int] | None:
    """The size ``model`` is deployed at: its deployment config's, else its ``default_input_size``."""
    from ..models.deploy import attached_deploy_config

    attached = attached_deploy_config(model)
    return attached.input_size if attached is not None else getattr(model, "default_input_size", None)


class Student:
    """A model to train and the budget it must fit, checked at construction, before any step.

    The model (unwrapped from DDP, see :func:`unwrap_model`) is measured with
    :func:`kdfiqa.budget.check` at each of ``input_sizes``: the resolution(s) it will be evaluated at,
    by default its deployment size (:mod:`kdfiqa.models.deploy`) or the budget's where that is larger
    (:meth:`~kdfiqa.budget.Budget.sizes_for`: a model trained small is still checked at 224x224 for
    ``vquala2025``). ``budget`` is a :class:`~kdfiqa.budget.Budget`, a registered name, or ``None``
    / ``"none"`` (no limit). Over budget, or not measurable, it raises
    :class:`~kdfiqa.budget.BudgetExceeded` (or :class:`~kdfiqa.budget.MeasurementError`) unless
    ``allow_over_budget``, in which case a loud warning is logged and ``within_budget`` is false.

    Attributes: ``model`` (the bare module), ``budget``, ``input_sizes``, ``reports`` (one
    :class:`~kdfiqa.budget.CostReport` per size; empty when measurement failed), ``within_budget``,
    ``allow_over_budget``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        budget: Budget | str | None = VQUALA2025,
        input_sizes: Any | Iterable[Any] = None,
        allow_over_budget: bool = False,
    ) -> None:
        from ..budget.presets import as_budget

        self.model = unwrap_model(model)
        self.budget = as_budget(budget)
        self.allow_over_budget = allow_over_budget
        if input_sizes is None:
            own = _deploy_size(self.model)
            if own is None:
                raise ConfigError(
                    f"student {type(self.model).__name__} has no default_input_size; pass input_sizes "
                    "(the resolution(s) it will be evaluated at) so its budget can be checked"
                )
            input_sizes = self.budget.sizes_for(Size.parse(own, "Student default_input_size").chw)
        self.input_sizes = _size_list(input_sizes)
        self.reports: list[CostReport] = []
        self.within_budget = True
        name = getattr(self.model, "model_name", None) or type(self.model).__name__
        try:
            self.reports = check(self.model, self.budget, self.input_sizes, model_name=name)
        except (BudgetExceeded, MeasurementError) as exc:
            if not allow_over_budget:
                raise
            self.within_budget = False
            log.warning(
                "\n%s\nALLOW_OVER_BUDGET IS SET: TRAINING A STUDENT THAT DOES NOT FIT %s\n%s\n%s",
                "!" * 78, self.budget.describe().upper(), exc, "!" * 78,
            )
            if isinstance(exc, BudgetExceeded):
                self.reports = [measure(self.model, size) for size in self.input_sizes]

    def __repr__(self) -> str:
        costs = ", ".join(f"{format_size(r.input_size, channels=True)}: {r.gflops:.4f} GFLOPs" for r in self.reports)
        return (
            f"Student({type(self.model).__name__}, budget={self.budget.describe()}, "
            f"within_budget={self.within_budget}, params={self.reports[0].params if self.reports else '?'}, {costs})"
        )
