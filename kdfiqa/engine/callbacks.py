"""Callbacks: the policies around the training loop, called by the Trainer at fixed points of ``fit``.

The Trainer builds the default ones from its :class:`~kdfiqa.engine.TrainConfig`, in this order, and
appends the caller's:

* :class:`EarlyStopping` (when ``patience`` is set): stop after ``patience`` epochs without
  improvement of the monitored metric;
* :class:`BestCheckpoint`: write ``best.pt`` whenever the monitored metric improves;
* :class:`JsonlLog`: ``log.jsonl``, one JSON object per epoch (epoch, step, lr, the training loss
  terms, the validation metrics, whether it was the best so far, the epoch's wall time and images
  per second);
* :class:`ProgressDisplay`: the live progress bar, one line per epoch (the full table with
  ``verbose``) and notes (rank 0, unless ``quiet``); a collapsed epoch's warning always.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from rich.console import Console

from .amp import amp_dtype
from .progress import TrainProgress, epoch_line, epoch_table

if TYPE_CHECKING:
    from .trainer import Trainer

__all__ = ["Callback", "EarlyStopping", "BestCheckpoint", "JsonlLog", "ProgressDisplay"]


class Callback:
    """Hooks the Trainer calls on every rank; override the ones you need.

    Each hook runs before the checkpoint of the point it marks is written (``on_step_end`` before
    a ``save_every_steps`` checkpoint, ``on_epoch_end`` before ``last.pt``), so whatever a callback
    keeps in ``trainer.state`` (a :class:`~kdfiqa.engine.TrainState`) is saved and restored on
    resume; attributes of the callback itself are not. Setting ``trainer.state.stopped_early``
    ends training after the current epoch. A hook that saves checkpoints must run on every rank.
    """

    def on_fit_start(self, trainer: "Trainer") -> None:
        """``fit`` begins, after a resumed run's state was restored into ``trainer.state``."""

    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None:
        """Epoch ``epoch`` (0-based) begins, ``trainer.state.batch_in_epoch`` batches in."""

    def on_step_end(self, trainer: "Trainer", step: int, terms: Mapping[str, float]) -> None:
        """After optimiser step ``step`` (1-based, global) with this step's logged terms."""

    def on_epoch_end(self, trainer: "Trainer", record: Mapping[str, Any]) -> None:
        """After an epoch was validated (``record`` as in log.jsonl, already in ``trainer.history``)."""

    def on_fit_end(self, trainer: "Trainer") -> None:
        """``fit`` ends: after the last epoch, or on its way out with an error or an interrupt."""

    def on_interrupt(self, trainer: "Trainer", signum: int) -> None:
        """SIGINT or SIGTERM arrived (called from the signal handler); training stops after the
        current step, saving ``last.pt``."""


class EarlyStopping(Callback):
    """Stop training once ``patience`` validated epochs in a row brought no improvement of
    ``monitor`` (epochs without that metric do not count); state in ``trainer.state.bad_epochs``."""

    def __init__(self, patience: int, monitor: str = "score") -> None:
        self.patience = patience
        self.monitor = monitor

    def on_epoch_end(self, trainer: "Trainer", record: Mapping[str, Any]) -> None:
        state = trainer.state
        if record["best"]:
            state.bad_epochs = 0
        elif self.monitor in record["val"]:
            state.bad_epochs += 1
        if state.bad_epochs >= self.patience:
            state.stopped_early = True


class BestCheckpoint(Callback):
    """Write a checkpoint to ``path`` after every epoch that improved the monitored metric
    (``record["best"]``; the Trainer tracks the best value in ``trainer.state.best_metric``)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def on_epoch_end(self, trainer: "Trainer", record: Mapping[str, Any]) -> None:
        if record["best"]:
            trainer.save_checkpoint(self.path)


class JsonlLog(Callback):
    """``path`` (``log.jsonl``): one JSON object per finished epoch, each line flushed to disk when
    written, by rank 0. A resumed run first rewrites it from its checkpoint's history."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def on_fit_start(self, trainer: "Trainer") -> None:
        if trainer.ctx.is_main:
            self._write("w", trainer.history)

    def on_epoch_end(self, trainer: "Trainer", record: Mapping[str, Any]) -> None:
        if trainer.ctx.is_main:
            self._write("a", [record])

    def _write(self, mode: str, records: list[Mapping[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, mode, encoding="utf-8") as f:
            f.writelines(json.dumps(record) + "\n" for record in records)
            f.flush()
            os.fsync(f.fileno())


class ProgressDisplay(Callback):
    """What rank 0 shows on ``console`` (stderr by default) unless ``quiet``: a note when AMP is
    ignored, the progress bar of every epoch (on a terminal), each epoch's table, and at once on
    SIGINT/SIGTERM the line saying training stops after this step and how to resume."""

    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        self.quiet = quiet
        self.console = console or Console(stderr=True)
        self.bar = TrainProgress(self.console)

    def _shown(self, trainer: "Trainer") -> bool:
        return trainer.ctx.is_main and not self.quiet

    def on_fit_start(self, trainer: "Trainer") -> None:
        amp, device = trainer.config.amp, trainer.ctx.device
        if self._shown(trainer) and amp != "none" and amp_dtype(device, amp) is None:
            self.console.print(f"note: amp={amp!r} is ignored on {device.type}")

    def on_epoch_start(self, trainer: "Trainer", epoch: int) -> None:
        if self._shown(trainer):
            self.bar.start_epoch(epoch, trainer.config.epochs, len(trainer.loader),
                                 done=trainer.state.batch_in_epoch)

    def on_step_end(self, trainer: "Trainer", step: int, terms: Mapping[str, float]) -> None:
        self.bar.update(loss=terms["loss"], lr=trainer.lr, images_per_s=trainer.images_per_s)
        if trainer.state.batch_in_epoch == len(trainer.loader):
            self.bar.end_epoch()  # before validation starts

    def on_epoch_end(self, trainer: "Trainer", record: Mapping[str, Any]) -> None:
        if trainer.ctx.is_main and record.get("collapsed"):  # a warning: shown even when quiet
            from ..metrics import COLLAPSE_SPREAD

            self.console.print(
                f"warning: epoch {record['epoch']}: the validation predictions have collapsed (spread "
                f"{record['val']['spread']:.2e} < {COLLAPSE_SPREAD:g}): a near-constant model, not kept as "
                "best.pt; lower --lr, train longer or check the labels", markup=False, highlight=False,
                soft_wrap=True)
        if self._shown(trainer):
            if trainer.config.verbose:
                self.console.print(epoch_table(record))
            else:
                self.console.print(epoch_line(record, trainer.config.epochs), markup=False, highlight=False,
                                   soft_wrap=True)

    def on_fit_end(self, trainer: "Trainer") -> None:
        self.bar.end_epoch()

    def on_interrupt(self, trainer: "Trainer", signum: int) -> None:
        if self._shown(trainer):
            self.console.print(
                f"stopping after this step; resume with --resume (last.pt: {trainer.last_path})",
                markup=False, highlight=False, soft_wrap=True,
            )
