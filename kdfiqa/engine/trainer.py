"""``Trainer``: optimise an objective over a data set, validate, checkpoint, resume exactly.

The objective is an ``nn.Module`` with ``.model`` (the network trained and saved) and
``forward(batch) -> {"loss": scalar, other logged scalars...}`` (see :mod:`kdfiqa.distill`). The
Trainer optimises the objective's parameters that require grad and writes, into
``config.output_dir``:

* ``last.pt`` after every epoch (and every ``save_every_steps`` steps, and on SIGINT/SIGTERM);
* ``best.pt`` whenever the monitored validation metric improves;
* ``log.jsonl``, one line per epoch.

Resuming (``fit(resume=path)``) restores the weights, optimiser, schedule, grad scaler, EMA, the
position inside the epoch and every RNG (each rank's own under ``torchrun`` with the same number
of processes), then replays the interrupted epoch's data order and skips
the batches already trained on: on CPU with the same config a resumed run ends with the same
weights, bit for bit, as an uninterrupted one. (Skipping re-reads those batches from the loader so
that augmentation randomness in data-loading workers is reproduced exactly.) Parameters that only
the objective owns (e.g. distillation projectors) are checkpointed under ``"trainer"`` for
resuming; ``"state_dict"`` holds the model alone.
"""

from __future__ import annotations

import math
import os
import random
import signal
import threading
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..checkpoint import build_checkpoint, load_weights, rng_state, save_checkpoint, set_rng_state
from ..errors import CheckpointError, ConfigError, KdfiqaError
from .amp import autocast, grad_scaler
from .config import MONITOR_MODES, TrainConfig
from .distributed import (
    DistContext,
    RankSplitSampler,
    all_gather_objects,
    any_rank,
    broadcast_state,
    init_distributed,
)
from .ema import ModelEma
from .evaluation import evaluate_model
from .optim import create_optimizer, create_schedule
from .progress import EpochLog, TrainProgress, epoch_table

__all__ = ["Trainer", "Callback", "NonFiniteLossError", "TrainingInterrupted"]


class NonFiniteLossError(KdfiqaError):
    """The loss became NaN or infinite; the run stopped and the last good checkpoint was kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the run after ``last.pt`` was saved; resume from it."""


class Callback:
    """Hooks the Trainer calls on rank 0 and others alike; override the ones you need."""

    def on_step_end(self, trainer: "Trainer", step: int, terms: Mapping[str, float]) -> None:
        """After optimiser step ``step`` (1-based, global) with this step's logged terms."""

    def on_epoch_end(self, trainer: "Trainer", record: Mapping[str, Any]) -> None:
        """After an epoch was validated, checkpointed and logged (``record`` as in log.jsonl)."""


def seed_everything(seed: int) -> None:
    """Seed torch (CPU and CUDA), numpy and Python's ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def set_deterministic(enabled: bool) -> None:
    """Deterministic kernels (cuDNN, cuBLAS, torch ops) when ``enabled``; cuDNN autotuning otherwise."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled


def _to_device(batch: Mapping[str, Any], device: torch.device, channels_last: bool) -> dict:
    out = {}
    for key, value in batch.items():
        if isinstance(value, Tensor):
            value = value.to(device, non_blocking=True)
            if channels_last and value.dim() == 4 and value.is_floating_point():
                value = value.contiguous(memory_format=torch.channels_last)
        out[key] = value
    return out


def _json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {k: _json_safe(v) for k, v in value.items()}
    return value


def _objective_own_state(objective: nn.Module) -> dict[str, Tensor]:
    """Parameters and buffers of modules outside ``objective.model`` that own trainable parameters.

    These (projectors and the like) are needed to resume a run exactly; frozen parts such as a
    teacher own no trainable parameter and are left out.
    """
    inside = {id(m) for m in objective.model.modules()}
    state: dict[str, Tensor] = {}
    for prefix, module in objective.named_modules():
        if id(module) in inside:
            continue
        own = dict(module.named_parameters(recurse=False))
        if not any(p.requires_grad for p in own.values()):
            continue
        own.update(module.named_buffers(recurse=False))
        for name, tensor in own.items():
            if tensor is not None:
                state[f"{prefix}.{name}" if prefix else name] = tensor.detach()
    return state


class Trainer:
    """Train ``objective`` on ``train_data``, validating on ``val_data`` after every epoch.

    ``sampler`` (optional) chooses training samples (e.g. ``SSUSSampler``); under ``torchrun`` each
    rank takes its share of its order. Without one, samples are shuffled per epoch from
    ``config.seed``. ``run_config`` (plain values: data, model and loss settings of the caller) is
    stored in every checkpoint's ``"config"`` beside the training config. See the module docstring
    for the files written and the resume guarantees.
    """

    def __init__(
        self,
        objective: nn.Module,
        train_data: Dataset,
        val_data: Dataset | None = None,
        config: TrainConfig | None = None,
        *,
        sampler: Sampler[int] | None = None,
        callbacks: Sequence[Callback] = (),
        run_config: Mapping[str, Any] | None = None,
    ) -> None:
        if not isinstance(getattr(objective, "model", None), nn.Module):
            raise TypeError("the objective must have a .model attribute holding the network to train")
        self.objective = objective
        self.train_data = train_data
        self.val_data = val_data
        self.config = config or TrainConfig()
        self.sampler = sampler
        self.callbacks = list(callbacks)
        self.run_config = dict(run_config or {})
        self.output_dir = Path(self.config.output_dir)
        self.last_path = self.output_dir / "last.pt"
        self.best_path = self.output_dir / "best.pt"
        self.history: list[dict[str, Any]] = []
        self.best_metric: float | None = None
        self.stopped_early = False
        self._stop_signal: int | None = None

    # ----------------------------------------------------------------------------------- setup

    def _setup(self) -> None:
        cfg = self.config
        self.ctx: DistContext = init_distributed(cfg.device)
        seed_everything(cfg.seed + self.ctx.rank)
        set_deterministic(cfg.deterministic)
        device = self.ctx.device
        self.objective.to(device)
        if cfg.channels_last:
            self.objective.model.to(memory_format=torch.channels_last)
        self.loader = self._train_loader()
        if len(self.loader) == 0:
            raise ConfigError(
                f"the training set ({len(self.train_data)} samples on this rank's share) gives no "
                f"full batch of batch_size={cfg.batch_size}; lower batch_size or set drop_last=False"
            )
        params = [p for p in self.objective.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("the objective has no parameter that requires grad: nothing to train")
        self.params = params
        self.optimizer = create_optimizer(params, cfg)
        self.schedule = create_schedule(self.optimizer, cfg, len(self.loader))
        self.scaler = grad_scaler(device, cfg.amp)
        self.ema = ModelEma(self.objective.model, cfg.ema_decay) if cfg.ema_decay else None
        self.net: nn.Module = self.objective
        if self.ctx.distributed:
            self.net = DistributedDataParallel(
                self.objective,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=cfg.find_unused_parameters,
            )
        main = self.ctx.is_main
        self.progress = TrainProgress(enabled=main and not cfg.quiet)
        self.log = EpochLog(self.output_dir / "log.jsonl") if main else None
        if main and cfg.amp != "none" and device.type != "cuda" and not cfg.quiet:
            self.progress.console.print(f"note: amp={cfg.amp!r} is ignored on {device.type}")

    def _train_loader(self) -> DataLoader:
        cfg, ctx = self.config, self.ctx
        if self.sampler is None:
            sampler: Sampler[int] = DistributedSampler(
                self.train_data, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                seed=cfg.seed,
            )
        elif ctx.distributed:
            sampler = RankSplitSampler(self.sampler, ctx.world_size, ctx.rank)
        else:
            sampler = self.sampler
        return DataLoader(
            self.train_data,
            batch_size=cfg.batch_size,
            sampler=sampler,
            num_workers=cfg.num_workers,
            drop_last=cfg.drop_last,
            pin_memory=ctx.device.type == "cuda",
        )

    # ------------------------------------------------------------------------------ checkpoints

    def _checkpoint(self, epoch: int, batch_in_epoch: int, metrics: Mapping[str, Any]) -> dict:
        return build_checkpoint(
            self.objective.model,
            optimizer=self.optimizer,
            scheduler=self.schedule,
            scaler=self.scaler,
            ema=self.ema,
            epoch=epoch,
            step=self.step,
            config={**self.run_config, "train": self.config.to_dict()},
            metrics=dict(metrics),
            trainer={
                "batch_in_epoch": batch_in_epoch,
                "epoch_rng": self._epoch_rng,
                "epoch_terms": dict(self._sums),
                "epoch_batches": self._count,
                "best_metric": self.best_metric,
                "bad_epochs": self._bad_epochs,
                "stopped_early": self.stopped_early,
                "history": [dict(r) for r in self.history],
                "objective": _objective_own_state(self.objective),
                "world_size": self.ctx.world_size,
                "rank_rng": self._rank_rngs(),
            },
        )

    def _rank_rngs(self) -> list[dict[str, Any]]:
        """Every rank's RNG states (epoch start and now), so each rank resumes its own streams.

        A collective under ``torchrun``: every rank builds each checkpoint. Empty in one process,
        where the checkpoint's ``"rng"`` is the only stream.
        """
        if not self.ctx.distributed:
            return []
        return all_gather_objects({"epoch": self._epoch_rng, "now": rng_state()}, self.ctx)

    def _save(self, path: Path, ckpt: dict) -> None:
        """Write ``ckpt`` on rank 0, refusing to replace a good file with non-finite weights."""
        for name, tensor in ckpt["state_dict"].items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise NonFiniteLossError(
                    f"weight {name!r} became non-finite by step {self.step}; {path} was not "
                    "overwritten; lower lr or set grad_clip"
                )
        if self.ctx.is_main:
            save_checkpoint(path, ckpt)

    def _resume(self, path: str | os.PathLike[str]) -> tuple[int, int, dict | None]:
        """Restore everything from ``path``; return (epoch, batches done in it, the RNG to restore)."""
        ckpt = load_weights(self.objective.model, path, weights="model")
        state = ckpt.get("trainer")
        if not isinstance(state, Mapping) or ckpt.get("optimizer") is None:
            raise CheckpointError(
                f"{path}: holds weights only (no training state) and cannot resume a run; start a "
                "new run from it instead"
            )
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.schedule.load_state_dict(ckpt["scheduler"])
            if ckpt.get("scaler"):
                self.scaler.load_state_dict(ckpt["scaler"])
            if self.ema is not None:
                if not ckpt.get("ema"):
                    raise CheckpointError(f"{path}: has no EMA state but ema_decay is set; unset it")
                self.ema.load_state_dict(ckpt["ema"])
            missing = set(_objective_own_state(self.objective)) - set(state["objective"])
            if missing:
                raise CheckpointError(
                    f"{path}: lacks this objective's trainable state {sorted(missing)[:4]}; resume "
                    "with the objective (losses, projectors) the run was started with"
                )
            self.objective.load_state_dict(state["objective"], strict=False)
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(
                f"{path}: its training state does not fit this run ({exc}); resume with the same "
                "optimiser, schedule and objective"
            ) from None
        self.step = int(ckpt["step"])
        self.best_metric = state["best_metric"]
        self._bad_epochs = int(state["bad_epochs"])
        self.stopped_early = bool(state["stopped_early"])
        self.history = [dict(r) for r in state["history"]]
        self._epoch_rng = state["epoch_rng"]
        resume_rng = ckpt["rng"]
        ranks = state.get("rank_rng") or []
        if self.ctx.distributed and len(ranks) == self.ctx.world_size:
            self._epoch_rng, resume_rng = ranks[self.ctx.rank]["epoch"], ranks[self.ctx.rank]["now"]
        self._sums = dict(state["epoch_terms"])
        self._count = int(state["epoch_batches"])
        return int(ckpt["epoch"]), int(state["batch_in_epoch"]), resume_rng

    # ------------------------------------------------------------------------------- signals

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}

        def request_stop(signum: int, frame: Any) -> None:
            self._stop_signal = signum
            signal.signal(signum, previous[signum])  # a second signal acts at once

        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, request_stop)
        return previous

    # ---------------------------------------------------------------------------------- loop

    def fit(self, resume: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
        """Train for ``config.epochs`` epochs (continuing the run in ``resume`` if given).

        Returns the per-epoch records (as in ``log.jsonl``). Raises :class:`NonFiniteLossError` on a
        NaN/inf loss (``last.pt`` keeps the last good state) and :class:`TrainingInterrupted` after
        saving ``last.pt`` on SIGINT/SIGTERM.
        """
        self._setup()
        self.step = 0
        self._bad_epochs = 0
        self._epoch_rng: dict | None = None
        self._sums: dict[str, float] = {}
        self._count = 0
        start_epoch, skip, resume_rng = 0, 0, None
        if resume is not None:
            start_epoch, skip, resume_rng = self._resume(resume)
        if self.log is not None:
            self.log.rewrite(self.history)
        previous = self._install_signal_handlers()
        try:
            for epoch in range(start_epoch, self.config.epochs):
                if self.stopped_early:
                    break
                self._train_epoch(epoch, skip if epoch == start_epoch else 0,
                                  resume_rng if epoch == start_epoch else None)
                self._end_epoch(epoch)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self.progress.end_epoch()
        self.ctx.barrier()
        return self.history

    def _epoch_batches(self, epoch: int, skip: int, resume_rng: dict | None) -> Iterator[dict]:
        """The epoch's batches from number ``skip`` on, with RNGs as in an uninterrupted run."""
        sampler = self.loader.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)
        if skip:
            set_rng_state(self._epoch_rng)
        else:
            if resume_rng is not None:
                set_rng_state(resume_rng)
            self._epoch_rng = rng_state()
            self._sums, self._count = {}, 0
        batches = iter(self.loader)
        for _ in range(skip):
            next(batches, None)
        if skip:
            set_rng_state(resume_rng)
        return batches

    def _train_epoch(self, epoch: int, skip: int, resume_rng: dict | None) -> None:
        cfg, device = self.config, self.ctx.device
        self.net.train()
        batches = self._epoch_batches(epoch, skip, resume_rng)
        self.progress.start_epoch(epoch, cfg.epochs, len(self.loader), done=skip)
        self._epoch_start = time.perf_counter()
        self._epoch_images = 0
        for position, batch in enumerate(batches, start=skip + 1):
            terms, stop = self._train_step(_to_device(batch, device, cfg.channels_last), batch,
                                           epoch, position)
            for name, value in terms.items():
                self._sums[name] = self._sums.get(name, 0.0) + value
            self._count += 1
            self._epoch_images += len(batch["image"]) * self.ctx.world_size
            elapsed = max(time.perf_counter() - self._epoch_start, 1e-9)
            self.progress.update(loss=terms["loss"], lr=self._lr(),
                                 images_per_s=self._epoch_images / elapsed)
            for callback in self.callbacks:
                callback.on_step_end(self, self.step, terms)
            if stop or (cfg.save_every_steps and self.step % cfg.save_every_steps == 0):
                self._save(self.last_path, self._checkpoint(epoch, position, self._last_metrics()))
            if stop:
                self.progress.end_epoch()
                raise TrainingInterrupted(
                    f"stopped by signal {self._stop_signal} at step {self.step}; resume with "
                    f"{self.last_path}"
                )
        self.progress.end_epoch()

    def _train_step(self, batch: dict, raw: Mapping[str, Any], epoch: int, position: int
                    ) -> tuple[dict[str, float], bool]:
        cfg = self.config
        with autocast(self.ctx.device, cfg.amp):
            out = self.net(batch)
        names = list(out)
        values = torch.stack([out[n].detach().float().reshape(()) for n in names]).tolist()
        terms = dict(zip(names, values))
        bad, stop = any_rank([not math.isfinite(terms["loss"]), self._stop_signal is not None],
                             self.ctx)
        if bad:
            self._raise_non_finite(terms["loss"], raw, epoch, position)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(out["loss"]).backward()
        if cfg.grad_clip is not None:
            self.scaler.unscale_(self.optimizer)
            nn.utils.clip_grad_norm_(self.params, cfg.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.schedule.after_step()
        if self.ema is not None:
            self.ema.update(self.objective.model)
        self.step += 1
        return terms, stop

    def _raise_non_finite(self, loss: float, raw: Mapping[str, Any], epoch: int, position: int
                          ) -> None:
        local = list(raw.get("name", [])) if not math.isfinite(loss) else []
        names = [n for part in all_gather_objects(local, self.ctx) for n in part]
        kept = (
            f"{self.last_path} keeps the last good state"
            if self.last_path.exists()
            else "no checkpoint was written yet"
        )
        raise NonFiniteLossError(
            f"non-finite loss at step {self.step + 1} (epoch {epoch + 1}, batch {position}) on images "
            f"{', '.join(map(str, names)) or '?'}; {kept}; lower lr, set grad_clip or check the images"
        )

    def _lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _last_metrics(self) -> dict[str, Any]:
        return dict(self.history[-1]["val"]) if self.history else {}

    # ----------------------------------------------------------------------------- epoch end

    def _end_epoch(self, epoch: int) -> None:
        cfg, ctx = self.config, self.ctx
        elapsed = time.perf_counter() - self._epoch_start
        sums = all_gather_objects((self._sums, self._count), ctx)
        count = sum(c for _, c in sums)
        train = {k: sum(s.get(k, 0.0) for s, _ in sums) / max(count, 1) for k in self._sums}
        broadcast_state(self.objective.model, ctx)
        if self.ema is not None:
            broadcast_state(self.ema.module, ctx)
        metrics: dict[str, Any] = {}
        if self.val_data is not None:
            model = self.ema.module if self.ema is not None else self.objective.model
            metrics, _ = evaluate_model(
                model, self.val_data, ctx, batch_size=cfg.val_batch_size or cfg.batch_size,
                num_workers=cfg.num_workers, amp=cfg.amp, channels_last=cfg.channels_last,
            )
        monitored = metrics.get(cfg.monitor) if metrics else None
        self.schedule.after_epoch(monitored)
        improved = self._improved(monitored)
        if improved:
            self.best_metric, self._bad_epochs = float(monitored), 0
        elif monitored is not None:
            self._bad_epochs += 1
        if cfg.patience is not None and self._bad_epochs >= cfg.patience:
            self.stopped_early = True
        record = _json_safe({
            "epoch": epoch + 1,
            "step": self.step,
            "lr": self._lr(),
            "train": train,
            "val": {k: float(v) if isinstance(v, (float, np.floating)) else v
                    for k, v in metrics.items()},
            "best": improved,
            "time": elapsed,
            "images_per_s": self._epoch_images / max(elapsed, 1e-9),
        })
        self.history.append(record)
        ckpt = self._checkpoint(epoch + 1, 0, record["val"])
        if improved:
            self._save(self.best_path, ckpt)
        self._save(self.last_path, ckpt)
        if self.log is not None:
            self.log.append(record)
            if not cfg.quiet:
                self.progress.console.print(epoch_table(record))
        for callback in self.callbacks:
            callback.on_epoch_end(self, record)

    def _improved(self, value: Any) -> bool:
        if value is None or not math.isfinite(float(value)):
            return False
        if self.best_metric is None:
            return True
        if MONITOR_MODES[self.config.monitor] == "max":
            return float(value) > self.best_metric
        return float(value) < self.best_metric
