"""Optimisers and learning-rate schedules named in a :class:`~kdfiqa.engine.config.TrainConfig`.

Optimisers: Adam, AdamW and SGD (momentum). Schedules, as used by the seed's teams:

* ``step``: StepLR, lr x ``gamma`` every ``step_size`` epochs (e.g. x0.1 every 5 epochs, the
  seed's 2077Agent teacher and MobileNetV3 recipes);
* ``plateau``: ReduceLROnPlateau on the monitored validation metric (seed, Conquerit team);
* ``cosine``: linear warm-up from ``lr * warmup_start_factor`` to ``lr`` over ``warmup_epochs``,
  then half a cosine down to ``min_lr``, stepped after every optimiser step;
* ``none``: constant lr.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import nn

from .config import MONITOR_MODES, TrainConfig

__all__ = ["create_optimizer", "create_schedule", "Schedule", "warmup_cosine_factor"]


def create_optimizer(params: Iterable[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """The optimiser ``config.optimizer`` over ``params`` with the config's lr and weight decay."""
    params = list(params)
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
        )
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay)


def warmup_cosine_factor(step: int, warmup_steps: int, total_steps: int, start: float,
                         floor: float) -> float:
    """Multiplier of the base lr at optimiser step ``step`` (0-based) for the ``cosine`` schedule.

    Linear from ``start`` to 1 over ``warmup_steps``, then ``floor + (1 - floor) * (1 + cos(pi t))/2``
    with ``t`` going from 0 to 1 over the remaining steps (SGDR's cosine annealing without restarts).
    """
    if step < warmup_steps:
        return start + (1.0 - start) * step / warmup_steps
    span = max(1, total_steps - warmup_steps)
    t = min(1.0, (step - warmup_steps) / span)
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))


class Schedule:
    """A torch lr scheduler plus when to step it: after each optimiser step or after each epoch.

    The Trainer calls :meth:`after_step` after every optimiser step and :meth:`after_epoch` with the
    epoch's monitored metric (used by ``plateau`` only); the state round-trips through checkpoints.
    """

    def __init__(self, scheduler: Any | None, per_step: bool) -> None:
        self.scheduler = scheduler
        self.per_step = per_step

    def after_step(self) -> None:
        if self.scheduler is not None and self.per_step:
            self.scheduler.step()

    def after_epoch(self, metric: float | None) -> None:
        if self.scheduler is None or self.per_step:
            return
        if isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            if metric is not None:
                self.scheduler.step(metric)
        else:
            self.scheduler.step()

    def state_dict(self) -> dict[str, Any] | None:
        return None if self.scheduler is None else self.scheduler.state_dict()

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scheduler is not None and state is not None:
            self.scheduler.load_state_dict(state)


def create_schedule(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> Schedule:
    """The schedule ``config.scheduler`` for ``config.epochs`` epochs of ``steps_per_epoch`` steps."""
    sched = torch.optim.lr_scheduler
    if config.scheduler == "step":
        return Schedule(sched.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma), False)
    if config.scheduler == "plateau":
        plateau = sched.ReduceLROnPlateau(
            optimizer, mode=MONITOR_MODES[config.monitor], factor=config.gamma,
            patience=config.plateau_patience,
        )
        return Schedule(plateau, False)
    if config.scheduler == "cosine":
        total = config.epochs * steps_per_epoch
        warmup = round(config.warmup_epochs * steps_per_epoch)
        floor = config.min_lr / config.lr

        def factor(step: int) -> float:
            return warmup_cosine_factor(step, warmup, total, config.warmup_start_factor, floor)

        return Schedule(sched.LambdaLR(optimizer, factor), True)
    return Schedule(None, True)
