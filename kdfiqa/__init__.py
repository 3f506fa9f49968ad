"""kdfiqa: distil any face-image-quality teacher into a small student that fits a compute budget.

The public API, re-exported here:

* models: :func:`create_model`, :func:`list_models`, :func:`register_model`, :class:`QualityHead`,
  :class:`FIQARegressor`, the EMO blocks :class:`iRMB`/:class:`iiRMB`;
* budgets: :class:`Budget`, :data:`VQUALA2025`, :func:`measure`, :func:`check`,
  :class:`BudgetExceeded`, :class:`CostReport`;
* distillation: :class:`Teacher`, :class:`Student`, :class:`Distiller`, :class:`Supervised`;
* training and deployment: :class:`Trainer`, :class:`TrainConfig`, :func:`load_model` (a kdfiqa
  checkpoint), :func:`export_model` (TorchScript/ONNX, budget re-checked), :func:`pseudo_label`;
* losses and metrics: :func:`create_loss`, :func:`list_losses`, :class:`WeightedSum`,
  :func:`evaluate`;
* data: :class:`FIQADataset`, :class:`UnlabeledImageFolder`, :func:`build_transform`,
  :func:`make_synthetic_fiqa`.

The names are imported on first use (PEP 562), so ``import kdfiqa`` (and the ``kdfiqa --help``
command line) does not pay for torch, timm, fvcore or scipy until something needs them;
``from kdfiqa import Budget`` and ``kdfiqa.Budget`` work as with eager imports, and so does
attribute access to a sub-module (``kdfiqa.models``) after a plain ``import kdfiqa``.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    ".budget": ("VQUALA2025", "Budget", "BudgetExceeded", "CostReport", "check", "measure"),
    ".checkpoint": ("load_model",),
    ".data": ("FIQADataset", "UnlabeledImageFolder", "build_transform", "make_synthetic_fiqa"),
    ".distill": ("Distiller", "Student", "Supervised", "Teacher", "pseudo_label"),
    ".engine": ("Trainer", "TrainConfig"),
    ".errors": ("KdfiqaError",),
    ".export": ("export_model",),
    ".losses": ("WeightedSum", "create_loss", "list_losses"),
    ".metrics": ("evaluate",),
    ".models": ("FIQARegressor", "QualityHead", "create_model", "iiRMB", "iRMB", "list_models",
                "register_model"),
}
"""Where each public name lives: ``{sub-module: names}``."""

_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = ["__version__", *sorted(_MODULE_OF)]


def __getattr__(name: str) -> Any:
    """Import a public name (or a sub-module) on first access and keep it in the module."""
    if name in _MODULE_OF:
        value = getattr(importlib.import_module(_MODULE_OF[name], __name__), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The module's attributes and every public name, imported or not yet."""
    return sorted(set(globals()) | set(__all__))
