"""The ``distill`` stage: :func:`distill` (the Python API, teacher and labels given or built) and
:func:`run_distill` (``kdfiqa distill``: self-training and labelling of ``data.unlabeled`` first), both
ending in :func:`_train_student`; with ``distill.calibrate_online`` the teacher's calibration onto the
label scale is fitted there once (:func:`teacher_calibration`) and kept with the run."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any, Mapping, Sequence

from torch import nn
from torch.utils.data import Dataset

from ..config import RunConfig
from ..engine.callbacks import Callback
from ..engine.distributed import DistContext, all_gather_objects
from ..errors import CheckpointError, DataError, KdfiqaError, spelled
from ..metrics import Logistic4
from .building import build_student, build_teacher, checked_student, resolve_transforms
from .checks import preflight, refuse_other_teacher_size
from .data import labeled_data, sampler_of
from .labelling import label_unlabeled, self_train
from .locking import holds_run_folder
from .results import PSEUDO_LABELS, VIEW_CACHE, Labels, RunResult
from .training import fit

__all__ = ["distill", "run_distill", "teacher_calibration", "TeacherCalibrationRecord", "TEACHER_CALIBRATION"]

TEACHER_CALIBRATION = "teacher_calibration.json"
"""The teacher's calibration onto the label scale (``distill.calibrate_online``), in the run folder."""
PARAMETERS = ("b1", "b2", "b3", "b4")

log = logging.getLogger("kdfiqa.pipeline")


@holds_run_folder
def distill(config: RunConfig, *, teacher: Any = None, pseudo: Labels | Sequence[Labels] | None = None,
            student: Any = None,
            ctx: DistContext | None = None, resume: bool = False, allow_changes: bool = False,
            overwrite: bool = False, callbacks: Sequence[Callback] = ()) -> RunResult:
    """Train the student ``config.model`` under ``teacher`` (a :class:`~kdfiqa.distill.Teacher`;
    default: built from ``distill.teachers``) on labels ∪ ``pseudo`` (default: ``data.pseudo_csv``).

    The student (``student``, a :class:`~kdfiqa.distill.Student`, or built here) is checked against
    ``distill.budget`` at its deployment size(s) before anything trains. With ``distill.loss`` and
    ``distill.feature`` empty it learns from labels ∪ pseudo-labels only (offline distillation);
    otherwise through :class:`~kdfiqa.distill.Distiller`, the teacher seeing its own view of each
    crop at its resolution; with ``distill.view_cache = K`` the teacher scores K stored views of
    every training image once (:func:`~kdfiqa.distill.build_view_cache`, kept in
    ``output_dir/teacher_views.pt``) and training reads those scores instead of running it. With
    ``distill.calibrate_online`` the teacher's outputs are mapped onto the label scale by a
    4-parameter logistic fitted once on its scores of the labeled training images
    (:func:`teacher_calibration`). With ``distill.unlabeled_use = "online"`` (or ``"both"``) the
    images of ``data.unlabeled`` are trained on through the teacher's online targets (label-less,
    or pseudo-labeled as well), ``distill.labeled_per_batch`` fixing the labeled share of each batch.
    ``callbacks`` run in the student's training after the default ones. The run folder is this
    call's alone while it runs (:func:`~kdfiqa.pipeline.locking.holds_run_folder`).
    """
    preflight(config, "distill", resume=resume, overwrite=overwrite, pseudo=pseudo,
               teacher_given=teacher is not None)
    refuse_other_teacher_size(config, teacher)
    return _train_student(config, teacher=teacher, pseudo=pseudo, student=checked_student(config, student), ctx=ctx,
                    resume=resume, allow_changes=allow_changes, overwrite=overwrite, callbacks=callbacks)


def _train_student(config: RunConfig, *, teacher: Any, pseudo: Labels | Sequence[Labels] | None, student: Any, ctx: DistContext,
             resume: bool, allow_changes: bool, overwrite: bool, callbacks: Sequence[Callback] = ()) -> RunResult:
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

    extra: list[Callback] = []
    calibration = None
    if online and config.distill.calibrate_online:  # the teacher still sees its own view here
        calibration = teacher_calibration(config, teacher, ctx, resume=resume)
        extra.append(TeacherCalibrationRecord(calibration))
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
                                         feature_losses=config.distill.feature or None,
                                         teacher_calibration=calibration)
        declare_feed(teacher)  # over the Distiller's own guess from the student's deploy config
    else:
        objective = Supervised(student.model, config.loss.task)
    return fit(objective, train_set, val, config, ctx, sampler=sampler_of(config, train_set), resume=resume,
                allow_changes=allow_changes, callbacks=[*extra, *callbacks])


class TeacherCalibrationRecord(Callback):
    """Keeps the teacher's calibration (a :class:`~kdfiqa.metrics.Logistic4`, or ``None``: the raw
    outputs kept after a degenerate fit under ``distill.raw_if_degenerate``) in every checkpoint the
    run writes (its state: the parameters b1..b4, or ``{"raw": True}``), so a resumed run reads it back
    instead of refitting (:func:`teacher_calibration`); a checkpoint holding another one is refused."""

    state_key = "TeacherCalibration"  # type: ignore[assignment]

    def __init__(self, calibration: Logistic4 | None) -> None:
        self.calibration = calibration

    def state_dict(self) -> dict[str, Any]:
        return {"raw": True} if self.calibration is None else dataclasses.asdict(self.calibration)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        stored = _stored_calibration(state)
        if stored != self.calibration:
            raise ValueError(f"it holds the teacher calibration {stored or 'raw'}, this run uses "
                             f"{self.calibration or 'raw'}")


def _stored_calibration(state: Mapping[str, Any]) -> Logistic4 | None:
    """The calibration a record or ``teacher_calibration.json`` holds (``None``: the raw outputs)."""
    if state.get("raw") is True:
        return None
    return Logistic4(*(float(state[name]) for name in PARAMETERS))


def teacher_calibration(config: RunConfig, teacher: Any, ctx: DistContext, *,
                        resume: bool = False) -> Logistic4 | None:
    """The 4-parameter logistic mapping ``teacher``'s scores onto the label scale
    (``distill.calibrate_online``), fitted once per run from the teacher's scores (each rank scoring
    its share, :func:`~kdfiqa.engine.sharded.map_sharded`) of the labeled training images (the
    training share of ``data.csv``, rendered as the teacher is deployed, no augmentation) to their
    labels, with the fit that calibrates pseudo-labels
    (:func:`~kdfiqa.distill.pseudo_label.fit_calibration`), written to ``teacher_calibration.json``
    in the run folder by rank 0. A resumed run reads the parameters its ``last.pt`` holds
    (:class:`TeacherCalibrationRecord`) and never refits. A degenerate fit
    (:func:`~kdfiqa.distill.pseudo_label.calibration_fault`) is refused with one line, or, with
    ``distill.raw_if_degenerate``, warned about and ``None`` returned: the raw outputs are kept."""
    from ..checkpoint import load_checkpoint

    out = Path(config.train.output_dir)
    last = out / "last.pt"
    if resume and last.is_file():
        stored = (load_checkpoint(last).get("callbacks") or {}).get(TeacherCalibrationRecord.state_key)
        if not isinstance(stored, Mapping) or not (stored.get("raw") is True
                                                   or all(name in stored for name in PARAMETERS)):
            flag = spelled("--calibrate-online", "distill.calibrate_online")
            raise CheckpointError(f"{last}: holds no teacher calibration ({flag}); resume with the settings the run "
                                  "was started with, or start a new run")
        return _stored_calibration(stored)
    refused: KdfiqaError | None = None
    try:  # every rank scores its share of the labeled images; rank 0 writes the fit
        _fit_teacher_calibration(config, teacher, out / TEACHER_CALIBRATION, ctx)
    except KdfiqaError as exc:
        refused = exc
    said = all_gather_objects(None if refused is None else str(refused), ctx)[0]  # every rank learns of a refusal
    if refused is not None:
        raise refused
    if said is not None:
        raise DataError(said)
    return _stored_calibration(json.loads((out / TEACHER_CALIBRATION).read_text(encoding="utf-8")))


def _fit_teacher_calibration(config: RunConfig, teacher: Any, path: Path, ctx: DistContext) -> None:
    import numpy as np

    from ..atomic_write import write_atomic
    from ..data import FIQADataset, build_transform, split_dataset
    from ..distill.pseudo_label import calibration_fault, fit_calibration

    data = config.data
    labeled = FIQADataset(data.root, data.csv, transform=build_transform(teacher.eval_transform),
                          allow_outside_root=data.allow_outside_root)
    if not data.val_csv:
        labeled = split_dataset(labeled, data.val_fraction, data.split_seed, data.split_method)[0]
    mapping, scored = fit_calibration(teacher, labeled, batch_size=config.train.batch_size,
                                      num_workers=config.train.num_workers, ctx=ctx)
    fault = calibration_fault(scored.scores, np.clip(np.asarray(mapping(scored.scores)), 0.0, 1.0))
    if fault is not None and not config.distill.raw_if_degenerate:
        raise DataError(f"teacher calibration on {scored.scores.size} labelled images is degenerate ({fault}); "
                        f"the teacher may be too weak: train it longer, keep its raw outputs with "
                        f"{spelled('--raw-if-degenerate', 'distill.raw_if_degenerate=True')}, or distill without "
                        f"{spelled('--calibrate-online', 'distill.calibrate_online')}")
    if not ctx.is_main:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    if fault is not None:
        log.warning("teacher calibration on %d labelled images is degenerate (%s): the teacher's raw outputs are "
                    "distilled instead", scored.scores.size, fault)
        write_atomic(path, json.dumps({"raw": True, "fault": fault, "images": int(scored.scores.size)}, indent=2)
                     + "\n")
        return
    log.info("teacher calibration on %d labelled images: %s -> %s", scored.scores.size, mapping, path)
    write_atomic(path, json.dumps({**dataclasses.asdict(mapping), "images": int(scored.scores.size)}, indent=2) + "\n")


def _cached_views(config: RunConfig, teacher: Any, train_set: Dataset, ctx: DistContext, *,
                  rebuild: bool = False) -> Dataset:
    """``train_set`` as :class:`~kdfiqa.distill.CachedViews` of the run's view cache, built once by
    all ranks, each scoring its share, and saved by rank 0 when the run folder has none (or ``rebuild``: a run started over); a cache of another
    teacher or transform is refused."""
    from ..distill.view_cache import CachedViews, ViewCache, build_view_cache, teacher_fingerprint

    path = Path(config.train.output_dir) / VIEW_CACHE
    if all_gather_objects(rebuild or not path.is_file(), ctx)[0]:  # rank 0's view of the run folder
        log.info("teacher: scoring %d stored views of each of %d training images once -> %s",
                 config.distill.view_cache, len(train_set), path)
        cache = build_view_cache(teacher, train_set, views=config.distill.view_cache,
                                 batch_size=config.train.batch_size, num_workers=config.train.num_workers,
                                 seed=config.train.seed, ctx=ctx)  # every rank scores its share
        if ctx.is_main:
            cache.save(path)
    ctx.barrier()
    cache = ViewCache.load(path, teacher=teacher_fingerprint(teacher), transform=train_set.transform.spec,
                           views=config.distill.view_cache)
    return CachedViews(train_set, cache)


@holds_run_folder
def run_distill(config: RunConfig, *, ctx: DistContext | None = None, resume: bool = False,
                allow_changes: bool = False, overwrite: bool = False,
                callbacks: Sequence[Callback] = ()) -> RunResult:
    """``kdfiqa distill``: check the student's budget, build the teacher once, self-train it and have
    it label ``data.unlabeled`` when asked (``distill.unlabeled_use`` ``pseudo`` or ``both``; with
    ``online`` its images join training label-less instead), then :func:`distill` (``callbacks``
    running in the student's training after the default ones), holding the run folder as
    :func:`distill` does."""
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
    labelled = config.data.unlabeled and config.distill.unlabeled_use != "online"
    pseudo = ([*earlier, label_unlabeled(config, teacher, Path(config.train.output_dir) / PSEUDO_LABELS, ctx,
                                          resume=resume)]
              if labelled else None)
    return _train_student(config, teacher=teacher, pseudo=pseudo, student=student, ctx=ctx, resume=resume,
                    allow_changes=allow_changes, overwrite=overwrite, callbacks=callbacks)
