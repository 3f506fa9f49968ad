"""kdfiqa: distil any face-image-quality teacher into a small student that fits a compute budget.

The public API, re-exported here:

* models: :func:`create_model`, :func:`list_models`, :func:`register_model`, :class:`QualityHead`,
  :class:`FIQARegressor`, the EMO blocks :class:`iRMB`/:class:`iiRMB`, :func:`fuse` (a model's
  inference form);
* budgets: :class:`Budget`, :data:`VQUALA2025`, :func:`measure`, :func:`check`,
  :class:`BudgetExceeded`, :class:`CostReport`;
* distillation: :class:`Teacher`, :class:`Student`, :class:`Distiller`, :class:`Supervised`;
* the pipeline's stages, shared with the command line and the demo: :mod:`kdfiqa.pipeline`
  (``pipeline.train``, ``pipeline.pseudo_label``, ``pipeline.distill``), their :class:`RunConfig`
  and what they pass on, :class:`Labels` and :class:`RunResult`;
* training and deployment: :class:`Trainer`, :class:`TrainConfig`, :func:`load_model` (a kdfiqa
  checkpoint), :class:`DeployConfig` (what a model carries to deployment), :func:`export_model`
  (TorchScript/ONNX, budget re-checked), :func:`pseudo_label`;
* losses and metrics: :func:`create_loss`, :func:`list_losses`, :class:`WeightedSum`,
  :func:`evaluate`;
* data: :class:`FIQADataset`, :class:`UnlabeledImageFolder`, :func:`build_transform`,
  :func:`make_synthetic_fiqa`;
* architecture search under a budget: :func:`search_students` and its :class:`SearchResult`.

The names are imported on first use (PEP 562), so ``import kdfiqa`` (and the ``kdfiqa --help``
command line) does not pay for torch, timm, fvcore or scipy until something needs them;
``from kdfiqa import Budget`` and ``kdfiqa.Budget`` work as with eager imports, and so does
attribute access to a sub-module (``kdfiqa.models``) after a plain ``import kdfiqa``.
"""

from __future__ import annotations

from ._lazy import lazy_exports

__version__ = "0.1.0"

_EXPORTS = {
    ".budget": ("VQUALA2025", "Budget", "BudgetExceeded", "CostReport", "SearchResult", "check", "measure",
                "search_students"),
    ".config": ("RunConfig",),
    ".data": ("FIQADataset", "UnlabeledImageFolder", "build_transform", "make_synthetic_fiqa"),
    ".distill": ("Distiller", "Student", "Supervised", "Teacher", "pseudo_label"),
    ".engine": ("Trainer", "TrainConfig"),
    ".errors": ("KdfiqaError",),
    ".export": ("export_model",),
    ".losses": ("WeightedSum", "create_loss", "list_losses"),
    ".metrics": ("evaluate",),
    ".models": ("DeployConfig", "FIQARegressor", "QualityHead", "create_model", "fuse", "iiRMB", "iRMB",
                "list_models", "register_model"),
    ".models.rebuild": ("load_model",),
    ".pipeline": ("Labels", "RunResult"),
}
"""Where each public name lives: ``{sub-module: names}``."""

__getattr__, __dir__, _NAMES = lazy_exports(__name__, globals(), _EXPORTS)

__all__ = ["__version__", *_NAMES]
