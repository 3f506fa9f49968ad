"""Compute budgets, as the challenge counts them (fvcore: eval mode, batch 1, one multiply-add = one FLOP).

* :mod:`~kdfiqa.budget.limits`: :class:`Budget`, :data:`VQUALA2025`, :class:`CostReport`, the
  verdict errors and the input-size parser;
* :mod:`~kdfiqa.budget.presets`: the named budgets (``--budget``, ``distill.budget``);
* :mod:`~kdfiqa.budget.core`: :func:`measure` and :func:`check`, on fvcore's count as
  :mod:`~kdfiqa.budget.fvcore_count` runs it;
* :mod:`~kdfiqa.budget.crosscheck`: a second, independent counter (torch's ``FlopCounterMode``);
* :mod:`~kdfiqa.budget.fill`: the largest input size that fits (``kdfiqa budget --fill``);
* :mod:`~kdfiqa.budget.search`: students of a family that fit, and their Pareto front
  (``kdfiqa search``).

Names are imported on first use, so ``from kdfiqa.budget import Budget`` costs no torch.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    ".limits": ("Budget", "VQUALA2025", "CostReport", "BudgetExceeded", "MeasurementError", "InputSize",
                "MAX_SIDE", "parse_input_size"),
    ".presets": ("BUDGETS", "DEFAULT_BUDGET", "NO_BUDGET", "as_budget", "get_budget"),
    ".core": ("measure", "check"),
    ".crosscheck": ("CrossCheck", "cross_check"),
    ".fill": ("FillResult", "fill_budget"),
    ".search": ("SearchResult", "search_students"),
}

__getattr__, __dir__, _NAMES = lazy_exports(__name__, globals(), _EXPORTS)

__all__ = _NAMES
