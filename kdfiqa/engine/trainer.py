"""``Trainer``: optimise an objective over a data set, validate, checkpoint, resume exactly.

The objective is an ``nn.Module`` with ``.model`` (the network trained and saved) and
``forward(batch) -> {"loss": scalar, other logged scalars...}``; one with a frozen part splits into
``frozen_forward(batch)`` and a ``trainable`` module (see :mod:`kdfiqa.distill.objective`). The
Trainer runs the frozen part first, outside autograd and outside DDP, and optimises (and, under
``torchrun``, wraps in DDP) the trainable module alone. It writes into ``config.output_dir``:

* ``last.pt`` after every epoch (and every ``save_every_steps`` steps, and on SIGINT/SIGTERM);
* ``best.pt`` whenever the monitored validation metric improves (:class:`BestCheckpoint`);
* ``log.jsonl``, one line per epoch (:class:`JsonlLog`).

When the validation set's transform carries its :func:`kdfiqa.data.build_transform` spec, the
model's deploy config (:mod:`kdfiqa.models.deploy`, saved in every checkpoint) records it and its
input size, so the checkpoint is evaluated, exported and budget-checked as it was validated.

Policies around the loop are callbacks (:mod:`kdfiqa.engine.callbacks`). Resuming
(``fit(resume=path)``) restores the weights, optimiser, schedule, grad scaler, EMA, the
:class:`~kdfiqa.engine.state.TrainState` (position inside the epoch, every rank's RNG streams,
the objective's own trainable state, ...) and every callback's own state, then replays the
interrupted epoch's data order and skips the batches already trained on: on CPU with the same config
a resumed run ends with the same weights, bit for bit, as an uninterrupted one. (Skipping re-reads those batches from the loader so
that augmentation randomness in data-loading workers is reproduced exactly.)
"""

from __future__ import annotations

import math
import os
import random
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from ..checkpoint import build_checkpoint, load_weights, save_checkpoint
from ..errors import CheckpointError, ConfigError, KdfiqaError, first_line, spelled
from ..metrics import COLLAPSE_SPREAD, ConstantInputWarning
from ..models.deploy import deploy_config, set_deploy_config
from .amp import autocast, grad_scaler
from .callbacks import BestCheckpoint, Callback, MonitorCallback, default_callbacks, legacy_states
from .config import FITTED_METRICS, TrainConfig
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
from .rng import set_rng_state
from .state import TrainState, load_objective_state, objective_state


__all__ = ["Trainer", "NonFiniteLossError", "TrainingInterrupted"]


class NonFiniteLossError(KdfiqaError):
    """The loss became NaN or infinite; the run stopped and the last good checkpoint was kept."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped the run after ``last.pt`` was saved; resume from it. ``signum``
    is the signal's number (the command line exits with 128 + it, as the shell does)."""

    def __init__(self, message: str, signum: int = signal.SIGINT) -> None:
        super().__init__(message)
        self.signum = int(signum)


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


def _record_eval_transform(model: nn.Module, val_data: Dataset | None) -> None:
    """Set ``model``'s deploy config to the transform it is validated with (the spec a
    :func:`kdfiqa.data.build_transform` transform carries), which brings its input size."""
    spec = getattr(getattr(val_data, "transform", None), "spec", None)
    if spec is not None:
        set_deploy_config(model, deploy_config(model).replace(eval_transform=spec))


def _split(objective: nn.Module) -> tuple[Callable[[Mapping[str, Any]], Any] | None, nn.Module]:
    """(the objective's frozen pass or None, the module holding everything it trains)."""
    frozen = getattr(objective, "frozen_forward", None)
    if frozen is None:
        return None, objective
    trainable = getattr(objective, "trainable", None)
    if not isinstance(trainable, nn.Module):
        raise TypeError("an objective with frozen_forward must have a .trainable module: the part "
                        "whose forward(batch, frozen) returns the loss")
    return frozen, trainable


class Trainer:
    """Train ``objective`` on ``train_data``, validating on ``val_data`` after every epoch.

    Everything is built here, so a Trainer is complete before :meth:`fit`: the data loader, the
    optimiser over the trainable parameters, the schedule, grad scaler, EMA, the DDP wrapper
    (:attr:`net`, around :attr:`trainable` only) and the callbacks. ``ctx`` is the process's
    :class:`DistContext` (made once by the entry point; by default ``init_distributed(config.device)``).
    ``sampler`` (optional) chooses training samples (e.g. ``SSUSSampler``); under ``torchrun`` each
    rank takes its share of its order (whole batches of a sampler that draws batches, such as
    ``TwoStreamSampler``, whose ``block_size`` must then be ``config.batch_size``). Without one, samples are shuffled per epoch from
    ``config.seed``. ``callbacks`` run after ``defaults``, which replace the default callbacks
    (:func:`~kdfiqa.engine.callbacks.default_callbacks` of ``config``) when given (``[]``: none);
    no two with state may share a ``state_key``.
    ``run_config`` (plain values: data, model and loss settings of the caller) is stored in every
    checkpoint's ``"config"`` beside the training config. See the module docstring for the files
    written and the resume guarantees.
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
        defaults: Sequence[Callback] | None = None,
        run_config: Mapping[str, Any] | None = None,
        ctx: DistContext | None = None,
    ) -> None:
        if not isinstance(getattr(objective, "model", None), nn.Module):
            raise TypeError("the objective must have a .model attribute holding the network to train")
        cfg = self.config = config or TrainConfig()
        self.objective = objective
        self.train_data = train_data
        self.val_data = val_data
        self.sampler = sampler
        self.run_config = dict(run_config or {})
        self.ctx = ctx or init_distributed(cfg.device)
        self.output_dir = Path(cfg.output_dir)
        self.last_path = self.output_dir / "last.pt"
        self.best_path = self.output_dir / "best.pt"
        self.state = TrainState()
        seed_everything(cfg.seed + self.ctx.rank)
        set_deterministic(cfg.deterministic)
        device = self.ctx.device
        objective.to(device)
        if cfg.channels_last:
            objective.model.to(memory_format=torch.channels_last)
        _record_eval_transform(objective.model, val_data)
        self._frozen_forward, self.trainable = _split(objective)
        self.params = self._trainable_params()
        self.loader = self._train_loader()
        self.optimizer = create_optimizer(self.params, cfg)
        self.schedule = create_schedule(self.optimizer, cfg, len(self.loader))
        self.scaler = grad_scaler(device, cfg.amp)
        self.ema = ModelEma(objective.model, cfg.ema_decay) if cfg.ema_decay else None
        self.net: nn.Module = self.trainable
        if self.ctx.distributed:
            self.net = DistributedDataParallel(
                self.trainable,
                device_ids=[device.index] if device.type == "cuda" else None,
                find_unused_parameters=cfg.find_unused_parameters,
            )
        self.callbacks: list[Callback] = [
            *(default_callbacks(cfg, self.output_dir) if defaults is None else defaults), *callbacks]
        _check_state_keys(self.callbacks)
        self._stop_signal: int | None = None
        self._epoch_start, self._epoch_images = time.perf_counter(), 0

    def _trainable_params(self) -> list[nn.Parameter]:
        params = [p for p in self.trainable.parameters() if p.requires_grad]
        if not params:
            raise ConfigError("the objective has no parameter that requires grad: nothing to train")
        inside = {id(p) for p in params}
        stray = [n for n, p in self.objective.named_parameters() if p.requires_grad and id(p) not in inside]
        if stray:
            raise ConfigError(f"objective parameters {stray[:4]} require grad but lie outside its "
                              "trainable module; move them there or freeze them")
        return params

    def _train_loader(self) -> DataLoader:
        cfg, ctx = self.config, self.ctx
        if self.sampler is None:
            sampler: Sampler[int] = DistributedSampler(
                self.train_data, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                seed=cfg.seed,
            )
        elif getattr(self.sampler, "block_size", cfg.batch_size) != cfg.batch_size:
            raise ConfigError(f"the sampler draws batches of {self.sampler.block_size} "  # type: ignore[attr-defined]
                              f"but batch_size is {cfg.batch_size}; build it with the same batch size")
        elif ctx.distributed:
            sampler = RankSplitSampler(self.sampler, ctx.world_size, ctx.rank)
        else:
            sampler = self.sampler
        loader = DataLoader(
            self.train_data, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
            drop_last=cfg.drop_last, pin_memory=ctx.device.type == "cuda",
        )
        if len(loader) == 0:
            raise ConfigError(
                f"the training set ({len(self.train_data)} samples on this rank's share) gives no "
                f"full batch of batch_size={cfg.batch_size}; lower batch_size or set drop_last=False"
            )
        per_epoch = len(sampler)  # type: ignore[arg-type]
        # SSAR scores a pair per sample; a BatchNorm1d needs two values per channel
        at_risk = getattr(self.objective, "images_per_sample", 1) == 1 and self._trains_batch_norm()
        if at_risk and cfg.batch_size == 1:
            raise ConfigError("batch_size 1: the model's BatchNorm1d cannot train on one sample per batch; use "
                              f"{spelled('--batch-size 2', 'train.batch_size=2')} or more")
        if at_risk and not cfg.drop_last and per_epoch % cfg.batch_size == 1:
            near = sorted((b for b in range(2, per_epoch + 1) if per_epoch % b != 1),
                          key=lambda b: (abs(b - cfg.batch_size), b))[:2]
            raise ConfigError(
                f"drop_last=False leaves a last batch of 1 of the {per_epoch} samples each epoch, and the model's "
                f"BatchNorm1d cannot train on one sample: use batch_size {' or '.join(map(str, sorted(near)))} "
                f"({spelled('--batch-size', 'train.batch_size')}), or drop it with "
                f"{spelled('--set train.drop_last=true', 'train.drop_last=True')}")
        return loader

    def _trains_batch_norm(self) -> bool:
        """Whether the trained part holds a ``BatchNorm1d`` (a FIQA head's): in training mode it needs
        two values per channel, so one sample is an error (a 2-D batch norm has a map's worth)."""
        return any(isinstance(m, nn.BatchNorm1d) for m in self.trainable.modules())

    # ----------------------------------------------------------------------------- read-outs

    @property
    def history(self) -> list[dict[str, Any]]:
        """The per-epoch records so far (as in ``log.jsonl``)."""
        return self.state.history

    @property
    def best_callback(self) -> BestCheckpoint | None:
        """The first :class:`BestCheckpoint` callback: the one the log's ``best`` flag follows."""
        return next((c for c in self.callbacks if isinstance(c, BestCheckpoint)), None)

    @property
    def best_metric(self) -> float | None:
        """The best value so far of the metric :attr:`best_callback` monitors (None without one)."""
        best = self.best_callback
        return None if best is None else best.best

    @property
    def stopped_early(self) -> bool:
        """Whether a callback (early stopping) ended training before ``config.epochs``."""
        return self.state.stopped_early

    @property
    def lr(self) -> float:
        """The current learning rate (of the first parameter group)."""
        return float(self.optimizer.param_groups[0]["lr"])

    @property
    def images_per_s(self) -> float:
        """Training images per second over the current epoch so far, all ranks together."""
        return self._epoch_images / max(time.perf_counter() - self._epoch_start, 1e-9)

    # ------------------------------------------------------------------------------ checkpoints

    def save_checkpoint(self, path: str | os.PathLike[str]) -> None:
        """Write the run's current state to ``path`` on rank 0 (a collective: call it on every rank).

        Refuses (:class:`NonFiniteLossError`) to replace a file with non-finite weights.
        """
        model = self.objective.model
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                raise NonFiniteLossError(
                    f"weight {name!r} became non-finite by step {self.state.step}; {path} was not "
                    "overwritten; lower lr or set grad_clip"
                )
        state = self.state.gathered(self.ctx, objective_state(self.trainable, model))
        ckpt = build_checkpoint(
            model, optimizer=self.optimizer, scheduler=self.schedule, scaler=self.scaler,
            ema=self.ema, epoch=state.epoch, step=state.step,
            config={**self.run_config, "train": self.config.to_dict()},
            metrics=dict(self.history[-1]["val"]) if self.history else {},
            trainer=state.state_dict(),
        )
        ckpt["callbacks"] = {c.state_key: c.state_dict() for c in self.callbacks}
        if self.ctx.is_main:
            save_checkpoint(path, ckpt)

    def _resume(self, path: str | os.PathLike[str]) -> dict[str, Any]:
        """Restore everything from ``path``; return the RNG states this rank continues from."""
        ckpt = load_weights(self.objective.model, path, weights="model")
        state = TrainState.from_checkpoint(ckpt, path)
        if ckpt.get("optimizer") is None:
            raise CheckpointError(f"{path}: has no optimiser state and cannot resume a run; start a "
                                  "new run from it instead")
        try:
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.schedule.load_state_dict(ckpt["scheduler"])
            if ckpt.get("scaler"):
                self.scaler.load_state_dict(ckpt["scaler"])
            if self.ema is not None:
                if not ckpt.get("ema"):
                    raise CheckpointError(f"{path}: has no EMA state but ema_decay is set; unset it")
                self.ema.load_state_dict(ckpt["ema"])
        except (ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(
                f"{path}: its training state does not fit this run ({exc}); resume with the same "
                "optimiser, schedule and objective"
            ) from None
        load_objective_state(self.trainable, self.objective.model, state.objective, str(path))
        self._load_callback_states(ckpt, path)
        self.state, resume_rng = state.for_rank(self.ctx)
        return resume_rng

    def _load_callback_states(self, ckpt: Mapping[str, Any], path: str | os.PathLike[str]) -> None:
        """Give each callback its state from the checkpoint's ``"callbacks"`` entry (mapped from the
        train state for files written before it existed); callbacks it lacks keep theirs."""
        states = ckpt["callbacks"] if "callbacks" in ckpt else legacy_states(self.callbacks, ckpt)
        if not isinstance(states, Mapping) or not all(isinstance(v, Mapping) for v in states.values()):
            raise CheckpointError(f"{path}: its 'callbacks' entry is not a dict of callback states; the file is "
                                  "damaged: resume from another copy (last.pt / best.pt) or start a new run")
        for callback in self.callbacks:
            if callback.state_key in states:
                try:
                    callback.load_state_dict(states[callback.state_key])
                except (KeyError, TypeError, ValueError) as exc:
                    raise CheckpointError(
                        f"{path}: the state of callback {callback.state_key!r} does not fit it "
                        f"({type(exc).__name__}: {first_line(exc)}); resume with the callbacks the run was "
                        "started with, from another copy (last.pt / best.pt), or start a new run") from None

    # ------------------------------------------------------------------------------- signals

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        previous = {}

        def request_stop(signum: int, frame: Any) -> None:
            self._stop_signal = signum
            signal.signal(signum, previous[signum])  # a second signal acts at once
            self._emit("on_interrupt", signum)

        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, request_stop)
        return previous

    def _emit(self, hook: str, *args: Any) -> None:
        for callback in self.callbacks:
            getattr(callback, hook)(self, *args)

    # ---------------------------------------------------------------------------------- loop

    def fit(self, resume: str | os.PathLike[str] | None = None) -> list[dict[str, Any]]:
        """Train until ``config.epochs`` epochs are done (continuing the run in ``resume`` if given).

        Returns the per-epoch records (as in ``log.jsonl``). Raises :class:`NonFiniteLossError` on a
        NaN/inf loss (``last.pt`` keeps the last good state) and :class:`TrainingInterrupted` after
        saving ``last.pt`` on SIGINT/SIGTERM.
        """
        resume_rng = self._resume(resume) if resume is not None else None
        previous: dict[int, Any] = {}
        try:
            self._emit("on_fit_start")
            previous = self._install_signal_handlers()
            while self.state.epoch < self.config.epochs and not self.state.stopped_early:
                self._train_epoch(resume_rng)
                resume_rng = None
                self._end_epoch()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._emit("on_fit_end")
        self.ctx.barrier()
        return self.history

    def _epoch_batches(self, resume_rng: dict | None) -> Iterator[dict]:
        """The epoch's batches from ``state.batch_in_epoch`` on, with RNGs as in an uninterrupted run."""
        state, sampler = self.state, self.loader.sampler
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(state.epoch)
        skip = state.batch_in_epoch
        if skip:
            set_rng_state(state.epoch_rng)
        else:
            if resume_rng is not None:
                set_rng_state(resume_rng)
            state.start_epoch()
        batches = iter(self.loader)
        for _ in range(skip):
            next(batches, None)
        if skip:
            set_rng_state(resume_rng)
        return batches

    def _train_epoch(self, resume_rng: dict | None) -> None:
        cfg, state = self.config, self.state
        self.objective.train()
        batches = self._epoch_batches(resume_rng)
        self._emit("on_epoch_start", state.epoch)
        self._epoch_start, self._epoch_images = time.perf_counter(), 0
        for position, batch in enumerate(batches, start=state.batch_in_epoch + 1):
            terms, stop = self._train_step(batch, position)
            self._emit("on_step_end", state.step, terms)
            if stop or (cfg.save_every_steps and state.step % cfg.save_every_steps == 0):
                self.save_checkpoint(self.last_path)
            if stop:
                raise TrainingInterrupted(
                    f"stopped by signal {self._stop_signal} at step {state.step}; resume with "
                    f"{self.last_path}", self._stop_signal)

    def _forward(self, batch: dict) -> dict[str, Tensor]:
        # The frozen part runs first (no autograd), so its temporaries are freed before the
        # trainable part keeps activations for backward.
        if self._frozen_forward is None:
            return self.net(batch)
        return self.net(batch, self._frozen_forward(batch))

    def _train_step(self, raw: Mapping[str, Any], position: int) -> tuple[dict[str, float], bool]:
        cfg = self.config
        with autocast(self.ctx.device, cfg.amp):
            out = self._forward(_to_device(raw, self.ctx.device, cfg.channels_last))
        names = list(out)
        values = torch.stack([out[n].detach().float().reshape(()) for n in names]).tolist()
        terms = dict(zip(names, values))
        bad, stop = any_rank([not math.isfinite(terms["loss"]), self._stop_signal is not None],
                             self.ctx)
        if bad:
            self._raise_non_finite(terms["loss"], raw, position)
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
        self.state.step += 1
        self.state.batch_in_epoch = position
        self.state.add_batch(terms)
        self._epoch_images += len(raw["image"]) * self.ctx.world_size
        return terms, stop

    def _raise_non_finite(self, loss: float, raw: Mapping[str, Any], position: int) -> None:
        local = list(raw.get("name", [])) if not math.isfinite(loss) else []
        names = [n for part in all_gather_objects(local, self.ctx) for n in part]
        kept = (
            f"{self.last_path} keeps the last good state"
            if self.last_path.exists()
            else "no checkpoint was written yet"
        )
        raise NonFiniteLossError(
            f"non-finite loss at step {self.state.step + 1} (epoch {self.state.epoch + 1}, batch "
            f"{position}) on images {', '.join(map(str, names)) or '?'}; {kept}; lower lr, set "
            "grad_clip or check the images"
        )

    # ----------------------------------------------------------------------------- epoch end

    def _end_epoch(self) -> None:
        record = self._epoch_record()
        self.state.epoch, self.state.batch_in_epoch = self.state.epoch + 1, 0
        self.state.history.append(record)
        self._emit("on_epoch_end", record)
        self.save_checkpoint(self.last_path)

    def _epoch_record(self) -> dict[str, Any]:
        """Average the epoch's terms over ranks, validate, step the per-epoch schedule, track the best."""
        elapsed = time.perf_counter() - self._epoch_start
        train = self.state.epoch_means(self.ctx)
        metrics = self._validate()
        self.schedule.after_epoch(metrics.get(self.config.monitor))
        collapsed = "spread" in metrics and metrics["spread"] < COLLAPSE_SPREAD
        val = _json_safe({k: float(v) if isinstance(v, (float, np.floating)) else v for k, v in metrics.items()})
        best = self.best_callback
        return _json_safe({
            "epoch": self.state.epoch + 1,
            "step": self.state.step,
            "lr": self.lr,
            "train": train,
            "val": val,
            "best": best is not None and best.improves(val, collapsed),
            "collapsed": collapsed,
            "time": elapsed,
            "images_per_s": self._epoch_images / max(elapsed, 1e-9),
        })

    def _validate(self) -> dict[str, Any]:
        """Validation metrics of the model (its EMA when kept), identical on every rank, with the
        ``spread`` (standard deviation) of its predictions."""
        cfg, ctx = self.config, self.ctx
        broadcast_state(self.objective.model, ctx)
        if self.ema is not None:
            broadcast_state(self.ema.module, ctx)
        if self.val_data is None:
            return {}
        model = self.ema.module if self.ema is not None else self.objective.model
        with warnings.catch_warnings():  # a constant prediction is flagged as a collapsed epoch instead
            warnings.simplefilter("ignore", ConstantInputWarning)
            metrics, preds = evaluate_model(
                model, self.val_data, ctx, batch_size=cfg.val_batch_size or cfg.batch_size,
                num_workers=cfg.num_workers, amp=cfg.amp, channels_last=cfg.channels_last,
                fitted=any(m in FITTED_METRICS for m in self._monitors()),
            )
        return {**metrics, "spread": float(preds.scores.double().std()) if len(preds.scores) > 1 else 0.0}

    def _monitors(self) -> set[str]:
        """The validation metrics the config and the callbacks follow."""
        return {self.config.monitor, *(c.monitor for c in self.callbacks if isinstance(c, MonitorCallback))}


def _check_state_keys(callbacks: Sequence[Callback]) -> None:
    """Refuse two callbacks with state (a non-empty ``state_dict()``) under one ``state_key``: their
    states would overwrite each other in a checkpoint."""
    seen: dict[str, Callback] = {}
    for callback in callbacks:
        key = callback.state_key
        if key in seen and callback.state_dict():
            raise ConfigError(
                f"callbacks {type(seen[key]).__name__} and {type(callback).__name__} keep their state under the "
                f"same key {key!r}; give one of them another state_key, or leave the duplicate out (defaults= "
                "replaces the default callbacks)")
        seen[key] = callback
