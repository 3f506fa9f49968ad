"""The ``train`` stage and the fit every training stage ends in (Trainer, run files, resume)."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from torch import nn
from torch.utils.data import Dataset, Sampler

from ..budget.presets import NO_BUDGET
from ..config import RunConfig
from ..engine.distributed import DistContext
from ..size import format_size
from .building import build_model, build_student, resolve_transforms, run_budget
from .checks import check_unchanged, preflight
from .data import labeled_data, sampler_of
from .locking import holds_run_folder
from .results import Labels, RunResult

if TYPE_CHECKING:
    from ..engine.callbacks import Callback

__all__ = ["train", "fit"]

log = logging.getLogger("kdfiqa.pipeline")


def fit(objective: nn.Module, train_set: Dataset, val: Dataset | None, config: RunConfig, ctx: DistContext, *,
         sampler: Sampler[int] | None = None, resume: bool = False, allow_changes: bool = False,
         callbacks: Sequence["Callback"] = ()) -> RunResult:
    """Train ``objective`` with the Trainer into ``config.train.output_dir`` (continuing its
    ``last.pt`` when ``resume``), ``callbacks`` running after the default ones."""
    from ..engine import Trainer
    from ..outputs import RUN_FILES

    train_config = config.train
    if (config.data.eval_transform or {}).get("mode") == "native" and train_config.val_batch_size is None:
        train_config = dataclasses.replace(train_config, val_batch_size=1)
    config = dataclasses.replace(config, train=train_config)
    output_dir = Path(train_config.output_dir)
    last = output_dir / "last.pt"
    resume_from = last if resume and last.is_file() else None
    if resume_from is not None and not allow_changes:
        check_unchanged(config, resume_from)
    if resume_from is None and ctx.is_main:  # a new run: no file of an earlier one may pass for its own
        for name in RUN_FILES:
            (output_dir / name).unlink(missing_ok=True)
    ctx.barrier()
    if ctx.is_main:
        size = format_size(config.model.input)
        log.info("%s: %s at %s on %s; %d training and %d validation images; %d epochs of batch %d; "
                 "output %s%s", type(objective).__name__.lower(), config.model.name, size, ctx.device,
                 len(train_set), len(val) if val is not None else 0, train_config.epochs, train_config.batch_size,
                 output_dir, " (resuming)" if resume_from is not None else "")
    trainer = Trainer(objective, train_set, val, train_config, sampler=sampler, ctx=ctx, callbacks=callbacks,
                      run_config={k: v for k, v in config.to_dict().items() if k != "train"})
    history = trainer.fit(resume=resume_from)
    best = output_dir / "best.pt"
    return RunResult(output_dir, best if best.is_file() else last, history, config)


def _stage(config: RunConfig, name: str, **train_changes: Any) -> RunConfig:
    out = str(Path(config.train.output_dir) / name)
    return dataclasses.replace(config, train=dataclasses.replace(config.train, output_dir=out, **train_changes))


def _ssar_pretrain(config: RunConfig, model: nn.Module, val: Dataset, ctx: DistContext, resume: bool) -> Path:
    """SSAR stage (seed §2): rank (I, T_s(I)) pairs with the adaptive margin λ·s, no labels used."""
    from ..data import FIQADataset, UnlabeledImageFolder, build_transform
    from ..distill import SSARObjective
    from ..distill.ssar import SSARPairs

    transform = build_transform(config.data.train_transform)
    if config.data.unlabeled:
        images = UnlabeledImageFolder(config.data.unlabeled, transform=transform)
    else:
        images = FIQADataset(config.data.root, config.data.csv, transform=transform)
    kinds = {"kinds": tuple(config.ssar.degradations)} if config.ssar.degradations else {}
    pairs = SSARPairs(images, seed=config.train.seed, **kinds)
    stage = _stage(config, "ssar", epochs=config.ssar.epochs, lr=config.ssar.lr or config.train.lr)
    result = fit(SSARObjective(model, margin_scale=config.ssar.margin), pairs, val, stage, ctx, resume=resume)
    return result.output_dir / "last.pt"


@holds_run_folder
def train(config: RunConfig, *, pseudo: Labels | None = None, ctx: DistContext | None = None,
          resume: bool = False, allow_changes: bool = False, overwrite: bool = False,
          callbacks: Sequence["Callback"] = ()) -> RunResult:
    """Train ``config.model`` on the labeled data (and ``pseudo``) with the task loss ``loss.task``.

    With ``ssar.epochs > 0`` the model is first pretrained by SSAR (``output_dir/ssar``) and the
    supervised run starts from those weights. ``resume`` continues the run in ``train.output_dir``
    (refusing a changed schedule or data setting unless ``allow_changes``). ``callbacks`` run in
    the supervised run after the default ones (:class:`~kdfiqa.engine.Trainer`). The run folder is
    this call's alone while it runs (:func:`~kdfiqa.pipeline.locking.holds_run_folder`).
    """
    from ..checkpoint import load_weights
    from ..distill import Supervised

    preflight(config, "train", resume=resume, overwrite=overwrite, pseudo=pseudo)
    model = build_model(config)
    if run_budget(config, "train") is not NO_BUDGET:  # given a budget, train refuses an over-budget model too
        build_student(config, model, command="train")
    config = resolve_transforms(config, model)
    train_set, val = labeled_data(config, pseudo)
    if config.ssar.epochs > 0:
        load_weights(model, _ssar_pretrain(config, model, val, ctx, resume), weights="model")
    return fit(Supervised(model, config.loss.task), train_set, val, config, ctx,
                sampler=sampler_of(config, train_set), resume=resume, allow_changes=allow_changes, callbacks=callbacks)
