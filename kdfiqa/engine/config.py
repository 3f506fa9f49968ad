"""``TrainConfig``: every knob of a training run, validated, as one plain dataclass.

Defaults follow the challenge baseline described in the seed (Adam-family optimiser, lr 5e-4,
weight decay 1e-5, batch 64, 20 epochs). A config round-trips through a plain dict
(:meth:`TrainConfig.to_dict` / :meth:`TrainConfig.from_dict`), which is what checkpoints store.
Each field is declared once with :func:`kdfiqa.options.option`: its flag on the command line
(``kdfiqa train --lr``) is generated from it, and its choices, range and ``--resume`` rule are
checked from it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import ConfigError
from ..options import MAX_SEED, check_options, option

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

    output_dir: str = option("runs/train", resume="allow", flag="--out", metavar="RUNDIR",
                             help="folder for best.pt, last.pt and log.jsonl")
    epochs: int = option(20, resume="refuse", flag="--epochs", metavar="N", at_least=1, help="training epochs")
    batch_size: int = option(64, resume="refuse", flag="--batch-size", metavar="B", at_least=1,
                             help="training images per step")
    val_batch_size: int | None = option(None, resume="allow", at_least=1,
                                        help="validation batch (None: batch_size; 1 at native resolution)")
    num_workers: int = option(0, resume="allow", flag="--workers", metavar="N", at_least=0,
                              help="data-loading worker processes")
    drop_last: bool = option(True, resume="refuse",
                             help="drop the last partial training batch (validation sees every sample)")
    optimizer: str = option("adamw", resume="refuse", flag="--optimizer", choices=OPTIMIZERS, help="optimiser")
    lr: float = option(5e-4, resume="refuse", flag="--lr", above=0, help="peak learning rate")
    weight_decay: float = option(1e-5, resume="refuse", flag="--weight-decay", metavar="WD", at_least=0,
                                 help="weight decay")
    momentum: float = option(0.9, resume="refuse", at_least=0, help="SGD momentum")
    betas: tuple[float, float] = option((0.9, 0.999), resume="refuse", at_least=0, below=1, help="Adam/AdamW betas")
    scheduler: str = option("cosine", resume="refuse", flag="--scheduler", choices=SCHEDULERS,
                            help="cosine (per step, after warm-up), step or plateau (per epoch), none")
    warmup_epochs: float = option(0.0, resume="refuse", at_least=0,
                                  help="linear warm-up length (cosine only), may be fractional")
    warmup_start_factor: float = option(0.01, resume="refuse", at_least=0, help="warm-up starts at lr * this")
    min_lr: float = option(0.0, resume="refuse", at_least=0, help="floor of the cosine schedule")
    step_size: int = option(5, resume="refuse", at_least=1, help="StepLR: epochs between decays")
    gamma: float = option(0.1, resume="refuse", above=0, help="StepLR / plateau decay factor")
    plateau_patience: int = option(2, resume="refuse", at_least=0, help="ReduceLROnPlateau patience (epochs)")
    grad_clip: float | None = option(None, resume="refuse", above=0, help="max global gradient norm; None: no clipping")
    amp: str = option("none", resume="allow", flag="--amp", choices=AMP_MODES, help="mixed precision on CUDA")
    channels_last: bool = option(False, resume="allow", help="channels-last memory format for the model and batches")
    ema_decay: float | None = option(None, resume="refuse", flag="--ema", metavar="DECAY", above=0, below=1,
                                     help="keep, validate and save an EMA of the weights, e.g. 0.999")
    monitor: str = option("score", resume="refuse", choices=tuple(MONITOR_MODES),
                          help="validation metric that selects best.pt and drives early stopping")
    patience: int | None = option(None, resume="allow", flag="--patience", metavar="N", at_least=1,
                                  help="early stopping: epochs without improvement")
    seed: int = option(0, resume="refuse", flag="--seed", at_least=0, at_most=MAX_SEED,
                       help="seed of the initial weights, data order and augmentation")
    deterministic: bool = option(False, resume="allow",
                                 help="deterministic kernels (needed for bit-exact resume on GPU)")
    device: str = option("auto", resume="allow", flag="--device", choices=DEVICES, help="auto: CUDA when available")
    save_every_steps: int | None = option(None, resume="allow", at_least=1,
                                          help="also write last.pt every N steps (mid-epoch resume)")
    find_unused_parameters: bool = option(False, resume="allow",
                                          help="DDP: only when some trained parameters skip a step")
    quiet: bool = option(False, resume="allow", flag="--quiet",
                         help="warnings and errors only (log.jsonl is still written)")
    verbose: bool = option(False, resume="allow", flag="--verbose",
                           help="the full table of every epoch instead of one line")
    log_to: list[str] = option(factory=list, resume="allow", flag="--log-to", choices=LOG_BACKENDS, repeat=True,
                               help="also stream every logged scalar to this tracker (repeatable; an optional extra)")

    def __post_init__(self) -> None:
        check_options(self, "train")
        self.log_to = list(dict.fromkeys(self.log_to))
        if self.min_lr > self.lr:
            raise ConfigError(f"train.min_lr: {self.min_lr!r} is above lr {self.lr!r}; the schedule decays "
                              "from lr down to min_lr")

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
