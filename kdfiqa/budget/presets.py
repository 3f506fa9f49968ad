"""Named compute budgets: the table ``kdfiqa budget --preset``, ``kdfiqa export --budget`` and a run's
``distill.budget`` choose from.

Register your own with ``BUDGETS.register(Budget(max_gflops=0.3, max_params=2_000_000, name="edge"),
name="edge")``. Importing this module costs no torch: command-line parsers list the names.
"""

from __future__ import annotations

from ..errors import ConfigError
from ..registry import Registry
from .limits import VQUALA2025, Budget

__all__ = ["BUDGETS", "DEFAULT_BUDGET", "NO_BUDGET", "as_budget", "get_budget"]

BUDGETS: Registry[Budget] = Registry("budget")
"""Budget name → :class:`~kdfiqa.budget.Budget`."""
BUDGETS.register(VQUALA2025, name=VQUALA2025.name)

DEFAULT_BUDGET = VQUALA2025.name
"""The budget commands check against unless told otherwise."""


def get_budget(name: str) -> Budget:
    """The budget registered as ``name``; a one-line :class:`~kdfiqa.errors.ConfigError` naming the
    closest registered names otherwise."""
    return BUDGETS.get(name)


NO_BUDGET = Budget(max_gflops=float("inf"), max_params=2**62, name="none")
"""What ``--budget none`` (``budget=None`` or ``"none"`` in Python) checks against: nothing fails it."""


def as_budget(budget: Budget | str | None) -> Budget:
    """``budget`` itself, the budget registered under that name (:func:`get_budget`), or
    :data:`NO_BUDGET` for ``None`` and ``"none"``."""
    if isinstance(budget, Budget):
        return budget
    if budget is None or budget == "none":
        return NO_BUDGET
    if isinstance(budget, str):
        return get_budget(budget)
    raise ConfigError(f"budget {budget!r} is neither a kdfiqa.Budget nor a budget name ({', '.join(BUDGETS)}, none)")
