"""``TrainConfig``: every knob of a training run, validated, as one plain dataclass.

Defaults follow the challenge baseline described in the seed (Adam-family optimiser, lr 5e-4,
weight decay 1e-5, batch 64, 20 epochs). A config round-trips through a plain dict
(:meth:`TrainConfig.to_dict` / :meth:`TrainConfig.from_dict`), which is what checkpoints store.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Mapping

from ..errors import ConfigError

__all__ = ["TrainConfig", "MONITOR_MODES"]

MONITOR_MODES = {"score": "max", "srcc": "max", "plcc": "max", "krcc": "max", "rmse": "min"}
"""Validation metrics that can select the best checkpoint, and whether higher or lower is better."""

_CHOICES = {
    "optimizer": ("adam", "adamw", "sgd"),
    "scheduler": ("none", "cosine", "step", "plateau"),
    "amp": ("none", "bf16", "fp16"),
    "device": ("auto", "cpu", "cuda"),
    "monitor": tuple(MONITOR_MODES),
}


@dataclass
class TrainConfig:
    """Settings of one training run (see each field's comment)."""

    output_dir: str = "runs/train"  # best.pt, last.pt and log.jsonl go here
    epochs: int = 20
    batch_size: int = 64
    val_batch_size: int | None = None  # None: batch_size; 1 for native-resolution validation
    num_workers: int = 0
    drop_last: bool = True  # training batches only; validation always sees every sample
    optimizer: str = "adamw"  # adam | adamw | sgd
    lr: float = 5e-4
    weight_decay: float = 1e-5
    momentum: float = 0.9  # SGD only
    betas: tuple[float, float] = (0.9, 0.999)  # Adam/AdamW only
    scheduler: str = "cosine"  # none | cosine (per step, after warm-up) | step | plateau (per epoch)
    warmup_epochs: float = 0.0  # linear warm-up length (cosine only), may be fractional
    warmup_start_factor: float = 0.01  # warm-up starts at lr * this
    min_lr: float = 0.0  # floor of the cosine schedule
    step_size: int = 5  # StepLR: epochs between decays
    gamma: float = 0.1  # StepLR / plateau decay factor
    plateau_patience: int = 2  # ReduceLROnPlateau patience (epochs)
    grad_clip: float | None = None  # max global gradient norm; None: no clipping
    amp: str = "none"  # none | bf16 | fp16 (CUDA only; ignored with a note on CPU)
    channels_last: bool = False
    ema_decay: float | None = None  # e.g. 0.999: keep, validate and save a moving average
    monitor: str = "score"  # validation metric that selects best.pt and drives early stopping
    patience: int | None = None  # early stopping: epochs without improvement; None: never
    seed: int = 0
    deterministic: bool = False  # deterministic kernels (needed for bit-exact resume on GPU)
    device: str = "auto"  # auto | cpu | cuda
    save_every_steps: int | None = None  # also write last.pt every N steps (mid-epoch resume)
    find_unused_parameters: bool = False  # DDP: only when some trained parameters skip a step
    quiet: bool = False  # no progress bar, no epoch table (log.jsonl is still written)

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"train config field {name!r}: {value!r} is not one of {allowed}")
        positive = ("epochs", "batch_size", "step_size", "val_batch_size", "save_every_steps",
                    "patience")
        for name in positive:
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"train config field {name!r}: {value!r} must be an integer >= 1")
        if self.num_workers < 0 or self.plateau_patience < 0:
            raise ConfigError("train config fields 'num_workers'/'plateau_patience' must be >= 0")
        if self.lr <= 0 or self.weight_decay < 0 or self.warmup_epochs < 0 or self.min_lr < 0:
            raise ConfigError("train config: lr must be > 0; weight_decay, warmup_epochs, min_lr >= 0")
        if self.grad_clip is not None and self.grad_clip <= 0:
            raise ConfigError(f"train config field 'grad_clip': {self.grad_clip!r} must be > 0")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"train config field 'ema_decay': {self.ema_decay!r} must be in (0, 1)")
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
