"""Callbacks: the policies around the training loop, called by the Trainer at fixed points of ``fit``.

:func:`default_callbacks` builds the default ones from a :class:`~kdfiqa.engine.TrainConfig`, in
this order; the Trainer appends the caller's (or takes others in place of the defaults):

* :class:`EarlyStopping` (when ``patience`` is set): stop after ``patience`` epochs without
  improvement of the monitored metric;
* :class:`BestCheckpoint`: write ``best.pt`` whenever the monitored metric improves (the log's
  ``best`` flag and ``Trainer.best_metric`` are the first BestCheckpoint's);
* :class:`JsonlLog`: ``log.jsonl``, one JSON object per epoch (epoch, step, lr, the training loss
  terms, the validation metrics, whether it was the best so far, the epoch's wall time and images
  per second);
* :class:`ProgressDisplay`: the live progress bar, one line per epoch (the full table with
  ``verbose``) and notes (rank 0, unless ``quiet``); a collapsed epoch's warning always;
* :class:`Tracker` (when ``log_to`` names backends): every logged scalar streamed to TensorBoard,
  MLflow or W&B (:mod:`kdfiqa.engine.tracking`).

Resumable state
---------------
A callback keeps what it needs to resume in its own attributes and returns it from
:meth:`Callback.state_dict` (plain values and tensors). Every checkpoint the Trainer writes holds
``{callback.state_key: callback.state_dict()}`` under ``"callbacks"``; on resume each callback
whose key is there gets :meth:`Callback.load_state_dict` before ``on_fit_start``. The keys of the
callbacks with state are unique in a trainer (the Trainer refuses two under one key). Checkpoints
written before callbacks kept their own state held the best value and the bad-epoch count in the
train state (``best_metric``, ``bad_epochs``): :func:`legacy_states` maps them.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

from ..console import make_console
from ..errors import ConfigError, first_line, spelled
from .amp import amp_dtype
from .config import MONITOR_MODES, TrainConfig
from .progress import TrainProgress, epoch_line, epoch_table
from .tracking import BACKENDS, Sink, check_backends, epoch_scalars, step_scalars

if TYPE_CHECKING:
    from rich.console import Console

    from .trainer import Trainer

__all__ = ["Callback", "MonitorCallback", "EarlyStopping", "BestCheckpoint", "JsonlLog", "ProgressDisplay",
           "Tracker", "default_callbacks"]

MODES = ("max", "min")


class Callback:
    """Hooks the Trainer calls on every rank; override the ones you need.

    Each hook runs before the checkpoint of the point it marks is written (``on_step_end`` before
    a ``save_every_steps`` checkpoint, ``on_epoch_end`` before ``last.pt``), so the state a callback
    returns from :meth:`state_dict` then is saved and restored on resume (see the module docstring).
    Setting ``trainer.state.stopped_early`` ends training after the current epoch. A hook that
    saves checkpoints must run on every rank.
    """

    @property
    def state_key(self) -> str:
        """The key of this callback's state in a checkpoint, unique among a trainer's callbacks with
        state (default: the class name; override it to run two of one class)."""
        return type(self).__name__

    def state_dict(self) -> dict[str, Any]:
        """What this callback needs to resume, as plain values and tensors (default: nothing)."""
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (on resume, before ``on_fit_start``)."""

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


class MonitorCallback(Callback):
    """A callback that follows one validation metric, ``monitor``, and keeps its best value
    (:attr:`best`, resumable) in ``mode``: ``"max"`` or ``"min"`` (default: the metric's own,
    :data:`~kdfiqa.engine.config.MONITOR_MODES`). Its :attr:`state_key` names the class, the metric
    and the mode, so a resumed run that monitors another metric starts that one afresh."""

    def __init__(self, monitor: str = "score", mode: str | None = None) -> None:
        name = type(self).__name__
        mode = MONITOR_MODES.get(monitor) if mode is None else mode
        if mode is None:
            raise ConfigError(f"{name}: metric {monitor!r} has no known mode; pass mode='max' or mode='min'")
        if mode not in MODES:
            raise ConfigError(f"{name}: mode {mode!r} is not 'max' or 'min'")
        self.monitor = monitor
        self.mode = mode
        self.best: float | None = None

    @property
    def state_key(self) -> str:
        return f"{type(self).__name__}[{self.monitor},{self.mode}]"

    def improves(self, val: Mapping[str, Any], collapsed: bool = False) -> bool:
        """Whether the validation metrics ``val`` beat :attr:`best` on :attr:`monitor` (a collapsed
        epoch, a missing or non-finite value never does)."""
        value = val.get(self.monitor)
        if collapsed or value is None or not math.isfinite(float(value)):
            return False
        return self.best is None or (value > self.best if self.mode == "max" else value < self.best)

    def update(self, record: Mapping[str, Any]) -> bool:
        """Take an epoch's ``record`` (as in log.jsonl): keep its value as :attr:`best` when it
        :meth:`improves` on it, and say whether it did."""
        improved = self.improves(record["val"], bool(record.get("collapsed")))
        if improved:
            self.best = float(record["val"][self.monitor])
        return improved

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = None if state["best"] is None else float(state["best"])


class EarlyStopping(MonitorCallback):
    """Stop training once ``patience`` validated epochs in a row brought no improvement of
    ``monitor`` (epochs without that metric do not count); resumable state: the best value and
    the count of epochs without improvement, :attr:`bad_epochs`."""

    def __init__(self, patience: int, monitor: str = "score", mode: str | None = None) -> None:
        super().__init__(monitor, mode)
        self.patience = patience
        self.bad_epochs = 0

    def on_epoch_end(self, trainer: "Trainer", record: Mapping[str, Any]) -> None:
        if self.update(record):
            self.bad_epochs = 0
        elif self.monitor in record["val"]:
            self.bad_epochs += 1
        if self.bad_epochs >= self.patience:
            trainer.state.stopped_early = True

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        bad = state["bad_epochs"]
        if isinstance(bad, bool) or not isinstance(bad, int) or bad < 0:
            raise ValueError(f"bad_epochs is {bad!r}, expected an integer >= 0")
        super().load_state_dict(state)
        self.bad_epochs = bad


class BestCheckpoint(MonitorCallback):
    """Write a checkpoint to ``path`` after every epoch that improved ``monitor`` (in ``mode``);
    resumable state: the best value."""

    def __init__(self, path: str | os.PathLike[str], monitor: str = "score", mode: str | None = None) -> None:
        super().__init__(monitor, mode)
        self.path = Path(path)

    def on_epoch_end(self, trainer: "Trainer", record: Mapping[str, Any]) -> None:
        if self.update(record):
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
        self.console = console or make_console(stderr=True)
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
                f"best.pt; lower {spelled('--lr', 'train.lr')}, train longer or check the labels", markup=False, highlight=False,
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
                f"stopping after this step; resume with {spelled('--resume', 'resume=True')} (last.pt: {trainer.last_path})",
                markup=False, highlight=False, soft_wrap=True,
            )


class Tracker(Callback):
    """Stream every logged scalar of a run to the ``backends`` (names of
    :data:`~kdfiqa.engine.tracking.BACKENDS`) from rank 0, their files under ``output_dir`` (see
    :mod:`kdfiqa.engine.tracking`); the runs opened by ``on_fit_start`` are closed by ``on_fit_end``,
    which ``fit`` calls on every way out. Resumable state: the MLflow and W&B run ids, so a resumed
    run logs into the same runs."""

    def __init__(self, backends: Iterable[str], output_dir: str | os.PathLike[str]) -> None:
        self.backends = list(dict.fromkeys(backends))
        check_backends(self.backends)
        self.output_dir = Path(output_dir)
        self.sinks: dict[str, Sink] = {}
        self.run_ids: dict[str, str] = {}

    def state_dict(self) -> dict[str, Any]:
        return {"run_ids": dict(self.run_ids)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        ids = state["run_ids"]
        if not isinstance(ids, Mapping) or not all(isinstance(v, str) for v in ids.values()):
            raise ValueError(f"run_ids is {ids!r}, expected backend names to run ids")
        self.run_ids = dict(ids)

    def on_fit_start(self, trainer: "Trainer") -> None:
        if not trainer.ctx.is_main:
            return
        config = json.loads(json.dumps({**trainer.run_config, "train": trainer.config.to_dict()}, default=str))
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for name in self.backends:
            try:
                sink = BACKENDS[name].open(self.output_dir, config, self.run_ids.get(name))
            except Exception as exc:  # a backend's own failure: a bad tracking URI, a refused login
                raise ConfigError(f"{spelled(f'--log-to {name}', f'train.log_to {name}')}: cannot start a run ({type(exc).__name__}: {first_line(exc)}); "
                                  "check its settings (environment variables) or drop it") from exc
            self.sinks[name] = sink
            if sink.run_id is not None:
                self.run_ids[name] = sink.run_id

    def _log(self, scalars: Mapping[str, float], step: int) -> None:
        for sink in self.sinks.values():
            sink.log(scalars, step)

    def on_step_end(self, trainer: "Trainer", step: int, terms: Mapping[str, float]) -> None:
        if self.sinks:
            self._log(step_scalars(terms, trainer.lr), step)

    def on_epoch_end(self, trainer: "Trainer", record: Mapping[str, Any]) -> None:
        if self.sinks:
            self._log(epoch_scalars(record), int(record["step"]))

    def on_fit_end(self, trainer: "Trainer") -> None:
        sinks, self.sinks = self.sinks, {}
        for sink in sinks.values():
            sink.close()


def default_callbacks(config: TrainConfig, output_dir: str | os.PathLike[str]) -> list[Callback]:
    """The callbacks a Trainer runs unless given others (see the module docstring): early stopping
    when ``config.patience`` is set, ``best.pt``, ``log.jsonl``, the progress display, and the
    experiment tracker when ``config.log_to`` names backends; the first two on ``config.monitor``."""
    out = Path(output_dir)
    early = [EarlyStopping(config.patience, config.monitor)] if config.patience is not None else []
    tracker = [Tracker(config.log_to, out)] if config.log_to else []
    return [*early, BestCheckpoint(out / "best.pt", config.monitor), JsonlLog(out / "log.jsonl"),
            ProgressDisplay(quiet=config.quiet), *tracker]


def legacy_states(callbacks: Sequence[Callback], ckpt: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The callback states of a checkpoint written before callbacks kept their own: its train
    state's ``best_metric`` and ``bad_epochs``, for the monitoring callbacks that follow the metric
    (in its default mode) that run monitored."""
    entry = ckpt.get("trainer") or {}
    monitor = ((ckpt.get("config") or {}).get("train") or {}).get("monitor", "score")
    state = {"best": entry.get("best_metric"), "bad_epochs": entry.get("bad_epochs", 0)}
    return {c.state_key: dict(state) for c in callbacks
            if isinstance(c, MonitorCallback) and c.monitor == monitor and c.mode == MONITOR_MODES.get(monitor)}
