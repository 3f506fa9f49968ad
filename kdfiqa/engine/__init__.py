"""The training engine: Trainer, its config, state and callbacks, optimisers and schedules, EMA, DDP
and evaluation.

The names are imported on first use (PEP 562), as in :mod:`kdfiqa`: importing
:mod:`kdfiqa.engine.config` (which the command line's flags are built from) does not pay for torch.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

_EXPORTS = {
    ".callbacks": ("Callback", "EarlyStopping", "BestCheckpoint", "JsonlLog", "ProgressDisplay"),
    ".config": ("TrainConfig",),
    ".distributed": ("DistContext", "init_distributed", "shutdown_distributed"),
    ".ema": ("ModelEma",),
    ".evaluation": ("Predictions", "predict", "evaluate_model"),
    ".optim": ("create_optimizer", "create_schedule"),
    ".state": ("TrainState",),
    ".trainer": ("Trainer", "NonFiniteLossError", "TrainingInterrupted"),
}
"""Where each public name lives: ``{sub-module: names}``."""

_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = sorted(_MODULE_OF)


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
