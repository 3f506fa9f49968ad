"""One writer per run folder: the stages that write a run hold its folder's writer lock for their
whole life, taken before anything looks at or removes what the folder holds."""

from __future__ import annotations

import functools
import os
from typing import Any, Callable, TypeVar, cast

from ..config import RunConfig
from ..engine.distributed import DistContext, rank_zero_writer_lock
from .building import run_context

__all__ = ["holds_run_folder"]

Stage = TypeVar("Stage", bound=Callable[..., Any])


def holds_run_folder(stage: Stage) -> Stage:
    """Run ``stage(config, ..., ctx=None, ...)`` with the writer lock of ``config.train.output_dir``
    (:func:`~kdfiqa.engine.distributed.rank_zero_writer_lock`): the stage is handed the run's
    :class:`~kdfiqa.engine.distributed.DistContext` (made here when not given, so that under
    ``torchrun`` every rank learns of a refusal before the first barrier) and starts its checks only
    once the folder is its own. A second writer of the folder, in another process, is refused with
    one line naming the holder's pid; a stage nested in another of the same process writes its own
    subfolder (``ssar``, ``self_train_N``) or holds the same lock already."""

    @functools.wraps(stage)
    def locked(config: RunConfig, *args: Any, ctx: DistContext | None = None, **kwargs: Any) -> Any:
        ctx = run_context(config, ctx)
        with rank_zero_writer_lock(os.path.join(config.train.output_dir, ""), ctx):
            return stage(config, *args, ctx=ctx, **kwargs)

    return cast(Stage, locked)
