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
"""

from __future__ import annotations

__version__ = "0.1.0"

from .budget import VQUALA2025, Budget, BudgetExceeded, CostReport, check, measure
from .checkpoint import load_model
from .data import FIQADataset, UnlabeledImageFolder, build_transform, make_synthetic_fiqa
from .distill import Distiller, Student, Supervised, Teacher, pseudo_label
from .engine import Trainer, TrainConfig
from .errors import KdfiqaError
from .export import export_model
from .losses import WeightedSum, create_loss, list_losses
from .metrics import evaluate
from .models import (
    FIQARegressor,
    QualityHead,
    create_model,
    iiRMB,
    iRMB,
    list_models,
    register_model,
)

__all__ = [
    "__version__",
    "Budget",
    "BudgetExceeded",
    "CostReport",
    "Distiller",
    "FIQADataset",
    "FIQARegressor",
    "KdfiqaError",
    "QualityHead",
    "Student",
    "Supervised",
    "Teacher",
    "TrainConfig",
    "Trainer",
    "UnlabeledImageFolder",
    "VQUALA2025",
    "WeightedSum",
    "build_transform",
    "check",
    "create_loss",
    "create_model",
    "evaluate",
    "export_model",
    "iRMB",
    "iiRMB",
    "list_losses",
    "list_models",
    "load_model",
    "make_synthetic_fiqa",
    "measure",
    "pseudo_label",
    "register_model",
]
