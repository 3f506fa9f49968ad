"""``TrainConfig``: every knob of a training run, validated, as one plain dataclass.

Defaults follow the challenge baseline described in the seed (Adam-family optimiser, lr 5e-4,
weight decay 1e-5, batch 64, 20 epochs). A config round-trips through a plain dict
(:meth:`TrainConfig.to_dict` / :meth:`TrainConfig.from_dict`), which is what checkpoints store.
Each field is declared once with :func:`kdfiqa.options.option`: its flag on the command line
(``kdfiqa train --lr``) is generated from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import ConfigError
from ..options import MAX_SEED, finite, in_range, one_of, option

__all__ = ["TrainConfig", "MONITOR_MODES", "FITTED_METRICS", "LOG_BACKENDS"]

MONITOR_MODES = {"score": "max", "srcc": "max", "plcc": "max", "krcc": "max", "rmse": "min", "fitted_score": "max"}
"""Validation metrics that can select the best checkpoint, and whether higher or lower is better.
``fitted_score`` is (SRCC + PLCC after a fitted 4-parameter logistic) / 2, the ECNU-SJTU winner's
selection metric (:data:`FITTED_METRICS`)."""
FITTED_METRICS = ("fitted_plcc", "fitted_score")
"""Validation metrics computed on predictions mapped by a 4-parameter logistic fitted to the labels
(:func:`kdfiqa.metrics.evaluate` with ``fit="logistic4"``); measured only when one is monitored."""

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "cosine", "step", "plateau")
AMP_MODES = ("none", "bf16", "fp16")
DEVICES = ("auto", "cpu", "cuda")
LOG_BACKENDS = ("tensorboard", "mlflow", "wandb")
"""Experiment trackers of ``--log-to`` (:mod:`kdfiqa.engine.tracking`)."""


@dataclass
class TrainConfig:
    """Settings of one training run (see each field's help)."""

    output_dir: str = option("runs/train", flag="--out", metavar="RUNDIR",
                             help="folder for best.pt, last.pt and log.jsonl")
    epochs: int = option(20, flag="--epochs", metavar="N", help="training epochs")
    batch_size: int = option(64, flag="--batch-size", metavar="B", help="training images per step")
    val_batch_size: int | None = option(None, help="validation batch (None: batch_size; 1 at native resolution)")
    num_workers: int = option(0, flag="--workers", metavar="N", help="data-loading worker processes")
    drop_last: bool = option(True, help="drop the last partial training batch (validation sees every sample)")
    optimizer: str = option("adamw", flag="--optimizer", choices=OPTIMIZERS, help="optimiser")
    lr: float = option(5e-4, flag="--lr", help="peak learning rate")
    weight_decay: float = option(1e-5, flag="--weight-decay", metavar="WD", help="weight decay")
    momentum: float = option(0.9, help="SGD momentum")
    betas: tuple[float, float] = option((0.9, 0.999), help="Adam/AdamW betas")
    scheduler: str = option("cosine", flag="--scheduler", choices=SCHEDULERS,
                            help="cosine (per step, after warm-up), step or plateau (per epoch), none")
    warmup_epochs: float = option(0.0, help="linear warm-up length (cosine only), may be fractional")
    warmup_start_factor: float = option(0.01, help="warm-up starts at lr * this")
    min_lr: float = option(0.0, help="floor of the cosine schedule")
    step_size: int = option(5, help="StepLR: epochs between decays")
    gamma: float = option(0.1, help="StepLR / plateau decay factor")
    plateau_patience: int = option(2, help="ReduceLROnPlateau patience (epochs)")
    grad_clip: float | None = option(None, help="max global gradient norm; None: no clipping")
    amp: str = option("none", flag="--amp", choices=AMP_MODES, help="mixed precision on CUDA")
    channels_last: bool = option(False, help="channels-last memory format for the model and batches")
    ema_decay: float | None = option(None, flag="--ema", metavar="DECAY",
                                     help="keep, validate and save an EMA of the weights, e.g. 0.999")
    monitor: str = option("score", choices=tuple(MONITOR_MODES),
                          help="validation metric that selects best.pt and drives early stopping")
    patience: int | None = option(None, flag="--patience", metavar="N",
                                  help="early stopping: epochs without improvement")
    seed: int = option(0, flag="--seed", help="seed of the initial weights, data order and augmentation")
    deterministic: bool = option(False, help="deterministic kernels (needed for bit-exact resume on GPU)")
    device: str = option("auto", flag="--device", choices=DEVICES, help="auto: CUDA when available")
    save_every_steps: int | None = option(None, help="also write last.pt every N steps (mid-epoch resume)")
    find_unused_parameters: bool = option(False, help="DDP: only when some trained parameters skip a step")
    quiet: bool = option(False, flag="--quiet", help="warnings and errors only (log.jsonl is still written)")
    verbose: bool = option(False, flag="--verbose", help="the full table of every epoch instead of one line")
    log_to: list[str] = option(factory=list, flag="--log-to", choices=LOG_BACKENDS, repeat=True,
                               help="also stream every logged scalar to this tracker (repeatable; an optional extra)")

    def __post_init__(self) -> None:
        flags = {f.name: f.metadata.get("flag") for f in dataclasses.fields(self)}

        def where(name: str) -> str:
            return f"train config field {name!r}" + (f" ({flags[name]})" if flags[name] else "")

        for name, allowed in (("optimizer", OPTIMIZERS), ("scheduler", SCHEDULERS), ("amp", AMP_MODES),
                              ("device", DEVICES), ("monitor", tuple(MONITOR_MODES))):
            one_of(where(name), getattr(self, name), allowed)
        for name in ("epochs", "batch_size", "step_size", "val_batch_size", "save_every_steps", "patience"):
            in_range(where(name), getattr(self, name), 1)
        for name in ("num_workers", "plateau_patience"):
            in_range(where(name), getattr(self, name), 0)
        for name in self.log_to:
            one_of(where("log_to"), name, LOG_BACKENDS)
        self.log_to = list(dict.fromkeys(self.log_to))
        in_range(where("seed"), self.seed, 0, MAX_SEED)
        finite(where("lr"), self.lr, low=0.0, low_open=True)
        for name in ("weight_decay", "warmup_epochs", "min_lr", "momentum", "warmup_start_factor"):
            finite(where(name), getattr(self, name), low=0.0)
        if self.min_lr > self.lr:
            raise ConfigError(f"{where('min_lr')}: {self.min_lr!r} is above lr {self.lr!r}; the schedule decays "
                              "from lr down to min_lr")
        finite(where("gamma"), self.gamma, low=0.0, low_open=True)
        finite(where("grad_clip"), self.grad_clip, low=0.0, low_open=True)
        finite(where("ema_decay"), self.ema_decay, low=0.0, high=1.0, low_open=True, high_open=True)
        if len(tuple(self.betas)) != 2:
            raise ConfigError(f"{where('betas')}: {self.betas!r} must be two numbers")
        for beta in self.betas:
            finite(where("betas"), beta, low=0.0, high=1.0, high_open=True)
        self.betas = tuple(self.betas)  # type: ignore[assignment]

    def to_dict(self) -> dict[str, Any]:
        """The config as plain values (tuples become lists), ready for a checkpoint or YAML."""
        out = dataclasses.asdict(self)
        out["betas"] = list(self.betas)
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Build a config from a mapping, naming any unknown field."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"train config: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        return cls(**dict(values))
