"""The training engine: Trainer, its config, state and callbacks, optimisers and schedules, EMA, DDP
and evaluation.

The names are imported on first use (PEP 562), as in :mod:`kdfiqa`: importing
:mod:`kdfiqa.engine.config` (which the command line's flags are built from) does not pay for torch.
"""

from __future__ import annotations

from .._lazy import lazy_exports


_EXPORTS = {
    ".callbacks": ("Callback", "MonitorCallback", "EarlyStopping", "BestCheckpoint", "JsonlLog", "ProgressDisplay",
                   "Tracker", "default_callbacks"),
    ".config": ("TrainConfig",),
    ".distributed": ("DistContext", "init_distributed", "shutdown_distributed"),
    ".ema": ("ModelEma",),
    ".evaluation": ("Predictions", "predict", "evaluate_model"),
    ".sharded": ("map_sharded",),
    ".optim": ("create_optimizer", "create_schedule"),
    ".state": ("TrainState",),
    ".trainer": ("Trainer", "NonFiniteLossError", "TrainingInterrupted"),
}
"""Where each public name lives: ``{sub-module: names}``."""

__getattr__, __dir__, _NAMES = lazy_exports(__name__, globals(), _EXPORTS)

__all__ = [*_NAMES]
