"""Experiment logs: every scalar a run logs, streamed to TensorBoard, MLflow or Weights & Biases.

``train.log_to`` (``--log-to tensorboard|mlflow|wandb``, repeatable) adds one
:class:`~kdfiqa.engine.callbacks.Tracker` to the default callbacks
(:func:`~kdfiqa.engine.callbacks.default_callbacks`); this module holds its backends. On rank 0 it logs

* after every optimiser step, at that step: the step's loss and its terms (``step/loss``,
  ``step/<term>``) and the learning rate (``step/lr``);
* after every epoch, at the epoch's last step: the epoch's mean loss terms (``train/<term>``), the
  validation metrics (``val/<metric>``), the learning rate (``lr``), ``images_per_s``, the epoch's
  wall time (``time``) and ``epoch``: the numbers of a ``log.jsonl`` record.

Backends (:data:`BACKENDS`), each an optional extra of the package:

``tensorboard``  ``torch.utils.tensorboard.SummaryWriter`` event files in ``RUN/tensorboard``
                 (``pip install 'kdfiqa[tensorboard]'``).
``mlflow``       an MLflow run in experiment ``kdfiqa`` (``MLFLOW_EXPERIMENT_NAME`` to change), with the run
                 configuration as the artifact ``config.json``, stored at ``MLFLOW_TRACKING_URI`` when set,
                 else in a file store ``RUN/mlruns`` (``pip install 'kdfiqa[mlflow]'``).
``wandb``        a W&B run in project ``kdfiqa`` (``WANDB_PROJECT`` to change) with the run configuration,
                 files in ``RUN/wandb``, offline unless ``WANDB_MODE`` says otherwise (``wandb sync``
                 uploads it later; ``pip install 'kdfiqa[wandb]'``).

A missing package is one line naming the extra to install (:func:`check_backends`), raised when the
config is checked, before the run folder is touched. A resumed run continues the same MLflow and W&B
runs (their ids are the tracker's resumable state, saved in every checkpoint).
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Protocol

from ..errors import ConfigError, spelled

__all__ = ["BACKENDS", "Backend", "Sink", "check_backends", "epoch_scalars", "step_scalars"]


class Sink(Protocol):
    """An open run of one backend."""

    run_id: str | None

    def log(self, scalars: Mapping[str, float], step: int) -> None: ...

    def close(self) -> None: ...


class TensorBoardSink:
    """Event files of ``torch.utils.tensorboard.SummaryWriter`` in ``RUN/tensorboard``."""

    run_id = None

    def __init__(self, output_dir: Path, config: Mapping[str, Any], run_id: str | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(output_dir / "tensorboard"))

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, global_step=step)

    def close(self) -> None:
        self.writer.close()


class MlflowSink:
    """An MLflow run through ``MlflowClient`` (no process-wide active run is set)."""

    def __init__(self, output_dir: Path, config: Mapping[str, Any], run_id: str | None) -> None:
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:  # the file store under the run folder (mlflow >= 3 asks for this opt-in)
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = (output_dir / "mlruns").resolve().as_uri()
        self.metric = Metric
        self.client = MlflowClient(tracking_uri=uri)
        if run_id is None:
            name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "kdfiqa")
            experiment = self.client.get_experiment_by_name(name)
            experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(name)
            run_id = self.client.create_run(experiment_id, run_name=output_dir.name).info.run_id
            self.client.log_dict(run_id, dict(config), "config.json")
        else:
            self.client.update_run(run_id, status="RUNNING")
        self.run_id = run_id

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[self.metric(k, v, now, step) for k, v in scalars.items()])

    def close(self) -> None:
        self.client.set_terminated(self.run_id)


class WandbSink:
    """A W&B run, offline unless ``WANDB_MODE`` says otherwise."""

    def __init__(self, output_dir: Path, config: Mapping[str, Any], run_id: str | None) -> None:
        import wandb

        self.run = wandb.init(
            project=os.environ.get("WANDB_PROJECT", "kdfiqa"), name=output_dir.name, dir=str(output_dir),
            mode=os.environ.get("WANDB_MODE", "offline"), config=dict(config), id=run_id, resume="allow",
            reinit="create_new", settings=wandb.Settings(console="off", silent=True, disable_git=True))
        self.run_id = self.run.id

    def log(self, scalars: Mapping[str, float], step: int) -> None:
        self.run.log(dict(scalars), step=step)

    def close(self) -> None:
        self.run.finish()


@dataclass(frozen=True)
class Backend:
    """One ``--log-to`` choice: the package it needs (``module``), the extra that installs it, and
    ``open(output_dir, run_config, run_id)`` starting (or, given a stored ``run_id``, continuing) a run."""

    module: str
    extra: str
    open: Callable[[Path, Mapping[str, Any], "str | None"], Sink]


BACKENDS: dict[str, Backend] = {
    "tensorboard": Backend("tensorboard", "tensorboard", TensorBoardSink),
    "mlflow": Backend("mlflow", "mlflow", MlflowSink),
    "wandb": Backend("wandb", "wandb", WandbSink),
}
"""``--log-to`` choices (:data:`~kdfiqa.engine.config.LOG_BACKENDS`) and how each logs."""


def check_backends(names: Iterable[str]) -> None:
    """Raise a one-line :class:`ConfigError` for the first backend in ``names`` that is unknown or
    whose package is not installed, naming the extra to install."""
    for name in names:
        backend = BACKENDS.get(name)
        if backend is None:
            raise ConfigError(f"{spelled(f'--log-to {name} (train.log_to)', f'train.log_to {name}')}: not one of {', '.join(BACKENDS)}")
        if importlib.util.find_spec(backend.module) is None:
            raise ConfigError(f"{spelled(f'--log-to {name} (train.log_to)', f'train.log_to {name}')} needs the {backend.module} package: "
                              f"pip install 'kdfiqa[{backend.extra}]'")


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def step_scalars(terms: Mapping[str, float], lr: float) -> dict[str, float]:
    """The numbers of one optimiser step: ``step/<term>`` for its loss terms and ``step/lr``."""
    return {**{f"step/{key}": float(value) for key, value in terms.items() if _number(value)}, "step/lr": float(lr)}


def epoch_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of an epoch's record (as in ``log.jsonl``): ``train/<term>``, ``val/<metric>``,
    ``lr``, ``images_per_s``, ``time`` and ``epoch`` (flags and non-finite values left out)."""
    flat = {f"{section}/{key}": value for section in ("train", "val")
            for key, value in (record.get(section) or {}).items()}
    flat.update({key: record[key] for key in ("lr", "images_per_s", "time", "epoch") if key in record})
    return {key: float(value) for key, value in flat.items() if _number(value)}
