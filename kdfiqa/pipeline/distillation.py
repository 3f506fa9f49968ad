"""The ``distill`` stage: :func:`distill` (the Python API, teacher and labels given or built) and
:func:`run_distill` (``kdfiqa distill``: self-training and labelling of ``data.unlabeled`` first), both
ending in :func:`_train_student`."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from torch import nn
from torch.utils.data import Dataset

from ..config import RunConfig
from ..engine.distributed import DistContext
from .building import build_student, build_teacher, checked_student, resolve_transforms
from .checks import preflight, refuse_other_teacher_size
from .data import labeled_data, sampler_of
from .labelling import label_unlabeled, self_train
from .locking import holds_run_folder
from .results import PSEUDO_LABELS, VIEW_CACHE, Labels, RunResult
from .training import fit

if TYPE_CHECKING:
    from ..engine.callbacks import Callback

__all__ = ["distill", "run_distill"]

log = logging.getLogger("kdfiqa.pipeline")


@holds_run_folder
def distill(config: RunConfig, *, teacher: Any = None, pseudo: Labels | Sequence[Labels] | None = None,
            student: Any = None,
            ctx: DistContext | None = None, resume: bool = False, allow_changes: bool = False,
            overwrite: bool = False, callbacks: Sequence["Callback"] = ()) -> RunResult:
    """Train the student ``config.model`` under ``teacher`` (a :class:`~kdfiqa.distill.Teacher`;
    default: built from ``distill.teachers``) on labels ∪ ``pseudo`` (default: ``data.pseudo_csv``).

    The student (``student``, a :class:`~kdfiqa.distill.Student`, or built here) is checked against
    ``distill.budget`` at its deployment size(s) before anything trains. With ``distill.loss`` and
    ``distill.feature`` empty it learns from labels ∪ pseudo-labels only (offline distillation);
    otherwise through :class:`~kdfiqa.distill.Distiller`, the teacher seeing its own view of each
    crop at its resolution; with ``distill.view_cache = K`` the teacher scores K stored views of
    every training image once (:func:`~kdfiqa.distill.build_view_cache`, kept in
    ``output_dir/teacher_views.pt``) and training reads those scores instead of running it.
    ``callbacks`` run in the student's training after the default ones. The run folder is this
    call's alone while it runs (:func:`~kdfiqa.pipeline.locking.holds_run_folder`).
    """
    preflight(config, "distill", resume=resume, overwrite=overwrite, pseudo=pseudo,
               teacher_given=teacher is not None)
    refuse_other_teacher_size(config, teacher)
    return _train_student(config, teacher=teacher, pseudo=pseudo, student=checked_student(config, student), ctx=ctx,
                    resume=resume, allow_changes=allow_changes, overwrite=overwrite, callbacks=callbacks)


def _train_student(config: RunConfig, *, teacher: Any, pseudo: Labels | Sequence[Labels] | None, student: Any, ctx: DistContext,
             resume: bool, allow_changes: bool, overwrite: bool, callbacks: Sequence["Callback"] = ()) -> RunResult:
    """:func:`distill` after its checks (which :func:`run_distill` has made already)."""
    from ..distill import Distiller, Supervised, Teacher
    from ..distill.view_cache import CachedTeacher

    online = config.distill.loss is not None or bool(config.distill.feature)
    if online and teacher is None:
        teacher = build_teacher(config, ctx)
    teacher_size = teacher.input_size[1:] if online and teacher.input_size is not None else None
    config = resolve_transforms(config, student.model, teacher_size=teacher_size,
                                teacher_normalize=getattr(teacher, "normalize", None) if online else None)
    train_set, val = labeled_data(config, pseudo)
    spec = config.data.train_transform

    def declare_feed(to: Any) -> None:
        """Tell the teacher how this run's data normalises what it is fed (its view, the student's)."""
        if hasattr(to, "set_input_normalize"):
            to.set_input_normalize(teacher_image=spec.get("teacher_normalize", spec["normalize"]),
                                   image=spec["normalize"])

    if online:  # a teacher of scores must score every training image: checked now, not mid-epoch
        from ..distill.score_table import ScoreTable

        for member in getattr(teacher, "members", []):
            if isinstance(member, ScoreTable):
                member.require(train_set.names, where="of the training images")
        declare_feed(teacher)
    if online and config.distill.view_cache:
        train_set = _cached_views(config, teacher, train_set, ctx, rebuild=overwrite)
        teacher = Teacher(CachedTeacher())
    if online:
        objective: nn.Module = Distiller(teacher, student, task_loss=config.loss.task,
                                         distill_loss=config.distill.loss,
                                         feature_losses=config.distill.feature or None)
        declare_feed(teacher)  # over the Distiller's own guess from the student's deploy config
    else:
        objective = Supervised(student.model, config.loss.task)
    return fit(objective, train_set, val, config, ctx, sampler=sampler_of(config, train_set), resume=resume,
                allow_changes=allow_changes, callbacks=callbacks)


def _cached_views(config: RunConfig, teacher: Any, train_set: Dataset, ctx: DistContext, *,
                  rebuild: bool = False) -> Dataset:
    """``train_set`` as :class:`~kdfiqa.distill.CachedViews` of the run's view cache, built once on
    rank 0 when the run folder has none (or ``rebuild``: a run started over); a cache of another
    teacher or transform is refused."""
    from ..distill.view_cache import CachedViews, ViewCache, build_view_cache, teacher_fingerprint

    path = Path(config.train.output_dir) / VIEW_CACHE
    if ctx.is_main and (rebuild or not path.is_file()):
        log.info("teacher: scoring %d stored views of each of %d training images once -> %s",
                 config.distill.view_cache, len(train_set), path)
        build_view_cache(teacher, train_set, views=config.distill.view_cache, batch_size=config.train.batch_size,
                         num_workers=config.train.num_workers, seed=config.train.seed).save(path)
    ctx.barrier()
    cache = ViewCache.load(path, teacher=teacher_fingerprint(teacher), transform=train_set.transform.spec,
                           views=config.distill.view_cache)
    return CachedViews(train_set, cache)


@holds_run_folder
def run_distill(config: RunConfig, *, ctx: DistContext | None = None, resume: bool = False,
                allow_changes: bool = False, overwrite: bool = False,
                callbacks: Sequence["Callback"] = ()) -> RunResult:
    """``kdfiqa distill``: check the student's budget, build the teacher once, self-train it and have
    it label ``data.unlabeled`` when asked, then :func:`distill` (``callbacks`` running in the
    student's training after the default ones), holding the run folder as :func:`distill` does."""
    preflight(config, "distill", resume=resume, overwrite=overwrite)
    student = build_student(config)
    earlier: tuple[Labels, ...] = ()
    if config.data.unlabeled and config.distill.self_train:
        teachers = list(config.distill.teachers)
        rounds = self_train(config, teachers[0], ctx=ctx, resume=resume, overwrite=overwrite)
        config = dataclasses.replace(config, distill=dataclasses.replace(
            config.distill, teachers=[rounds.teacher, *teachers[1:]]))
        earlier = rounds.pseudo if config.distill.pseudo_sets == "all" else ()
    teacher = build_teacher(config, ctx)
    pseudo = ([*earlier, label_unlabeled(config, teacher, Path(config.train.output_dir) / PSEUDO_LABELS, ctx)]
              if config.data.unlabeled else None)
    return _train_student(config, teacher=teacher, pseudo=pseudo, student=student, ctx=ctx, resume=resume,
                    allow_changes=allow_changes, overwrite=overwrite, callbacks=callbacks)
