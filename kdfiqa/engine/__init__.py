"""The training engine: Trainer, its config, optimisers and schedules, EMA, DDP and evaluation."""

from __future__ import annotations

from .config import TrainConfig
from .distributed import DistContext, init_distributed, shutdown_distributed
from .ema import ModelEma
from .evaluation import Predictions, evaluate_model, predict
from .optim import create_optimizer, create_schedule
from .trainer import Callback, NonFiniteLossError, Trainer, TrainingInterrupted

__all__ = [
    "TrainConfig",
    "Trainer",
    "Callback",
    "NonFiniteLossError",
    "TrainingInterrupted",
    "ModelEma",
    "DistContext",
    "init_distributed",
    "shutdown_distributed",
    "Predictions",
    "predict",
    "evaluate_model",
    "create_optimizer",
    "create_schedule",
]
