"""Budget checks in a project's own tests, in one line.

::

    from kdfiqa.testing import assert_fits

    def test_student_fits():
        assert_fits("my_models.py:build_student", "vquala2025", sizes=[224, "224x336"])

:func:`assert_fits` builds the target as ``kdfiqa budget`` does (a registered name, ``timm:NAME``,
``file.py:factory``, ``package.module:factory`` or a checkpoint, or an ``nn.Module`` itself), measures
it with fvcore at every size (default: where the budget says it is deployed,
:meth:`~kdfiqa.budget.Budget.sizes_for`) and fails with the measured and allowed figures and the
costliest modules. ``.pre-commit-hooks.yaml`` at the repository root runs ``kdfiqa budget`` as a
pre-commit hook for the same check before every commit.
"""

from __future__ import annotations

from typing import Any, Sequence

__all__ = ["assert_fits"]


def assert_fits(target: Any, budget: Any = "vquala2025", *, sizes: Sequence[Any] | None = None) -> list[Any]:
    """Measure ``target`` against ``budget`` (a name or a :class:`~kdfiqa.budget.Budget`) at ``sizes``
    and raise ``AssertionError`` when it is over at any of them; return the cost reports."""
    from torch import nn

    from .budget import Budget, BudgetExceeded, check
    from .budget.presets import get_budget
    from .models.deploy import deploy_config
    from .targets import load_target

    model = target if isinstance(target, nn.Module) else load_target(str(target))
    chosen = budget if isinstance(budget, Budget) else get_budget(str(budget))
    checked = list(sizes) if sizes else chosen.sizes_for(deploy_config(model).input_size)
    try:
        return check(model, chosen, checked, model_name=str(target) if not isinstance(target, nn.Module) else None)
    except BudgetExceeded as exc:
        raise AssertionError(str(exc)) from None
