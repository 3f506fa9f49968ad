"""Offline distillation: score images with a teacher and write them as challenge-format labels.

The challenge winner's recipe (ECNU-SJTU, seed): a teacher scores unlabelled faces, its raw scores
are mapped onto the label scale by a 4-parameter logistic fitted on a labelled set
(:func:`kdfiqa.metrics.fit_logistic4`), and the student trains on labels ∪ pseudo-labels.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from ..data.csv_files import write_scores
from ..engine.distributed import DistContext
from ..errors import DataError, spelled
from ..metrics import COLLAPSE_SPREAD, Logistic4, fit_logistic4
from .label_parts import LabelParts
from .score_table import batch_names
from .teacher import Teacher, TeacherSource

__all__ = ["TeacherScores", "score_with_teacher", "teacher_batch_scorer", "fit_calibration", "pseudo_label",
           "write_scores_csv", "calibration_fault"]

log = logging.getLogger(__name__)

PSEUDO_LABEL_FORMAT = ".8g"
"""How a pseudo-label is written: eight significant digits."""


@dataclass
class TeacherScores:
    """What a teacher said about a data set: ``names``, ``scores`` (:meth:`Teacher.scores`: σ of its
    logits, or a linear-output network's raw regression) and, for a labelled data set, the
    ``labels`` (else ``None``), all in data-set order."""

    names: list[str]
    scores: np.ndarray
    labels: np.ndarray | None


def score_with_teacher(
    teacher: Teacher, data: Dataset | DataLoader, *, batch_size: int = 32, num_workers: int = 0,
    ctx: DistContext | None = None, amp: str = "none", channels_last: bool = False,
    shard_size: int | None = None, kept: Mapping[int, list[tuple]] | None = None,
    on_shard: Callable[[int, list[tuple]], None] | None = None,
) -> TeacherScores:
    """Run ``teacher`` over every item of ``data`` (a data set, or a loader whose data set, batch size,
    workers and collation are used; its order is the data set's), shared by the ranks of ``ctx``
    (:func:`~kdfiqa.engine.sharded.map_sharded`: each image scored once, every rank gets all
    scores in data-set order). ``amp`` and ``channels_last`` apply on CUDA
    (:func:`teacher_batch_scorer`). With ``shard_size`` the images are scored in shards of that many
    (whole batches); the shards in ``kept`` (number -> rows) are taken as they are and each newly
    scored one is handed to ``on_shard`` on the rank that scored it (:class:`LabelParts`)."""
    from ..engine.distributed import local_context
    from ..engine.sharded import flatten, map_sharded

    ctx = ctx if ctx is not None else local_context("cpu")
    dataset, collate = (data.dataset, data.collate_fn) if isinstance(data, DataLoader) else (data, None)
    if isinstance(data, DataLoader):
        batch_size, num_workers = data.batch_size or 1, data.num_workers
    kept = dict(kept or {})
    scored = map_sharded(dataset, teacher_batch_scorer(teacher, amp=amp, channels_last=channels_last), ctx,
                         batch_size=batch_size, num_workers=num_workers, collate_fn=collate, chunk_size=shard_size,
                         skip=kept, on_chunk=on_shard)
    if on_shard is not None:
        log.info("scored %d images, %d kept from earlier parts", sum(map(len, scored.values())),
                 sum(map(len, kept.values())))
    rows = flatten({**kept, **scored})
    if not rows:
        raise DataError("no images to score: the data set is empty")
    labelled = [label is not None for _, _, label in rows]
    if any(labelled) and not all(labelled):
        raise DataError("some batches have a 'score' and others do not; use one kind of data set")
    return TeacherScores([name for name, _, _ in rows], np.array([score for _, score, _ in rows], dtype=np.float64),
                         np.array([label for _, _, label in rows], dtype=np.float64) if all(labelled) else None)


def teacher_batch_scorer(teacher: Teacher, *, amp: str = "none",
                         channels_last: bool = False) -> Callable[[Mapping[str, Any]], list[tuple]]:
    """``batch -> [(name, teacher score, label or None), ...]``: :meth:`Teacher.scores` of one batch,
    under autocast (:func:`kdfiqa.engine.amp.autocast`: ``bf16``/``fp16`` on CUDA, a no-op on the CPU)
    and, with ``channels_last`` on CUDA, with the images in channels-last memory format."""
    from ..engine.amp import autocast

    device = next(teacher.parameters(), torch.empty(0)).device
    last = channels_last and device.type == "cuda"

    def score(batch: Mapping[str, Any]) -> list[tuple]:
        if last:
            batch = {k: v.contiguous(memory_format=torch.channels_last) if k in ("image", "teacher_image")
                     and isinstance(v, torch.Tensor) and v.dim() == 4 else v for k, v in batch.items()}
        with autocast(device, amp):
            scores = teacher.scores(batch).reshape(-1).double().cpu().tolist()
        labels = (torch.as_tensor(batch["score"]).reshape(-1).double().tolist() if "score" in batch
                  else [None] * len(scores))
        return list(zip(batch_names(batch), scores, labels))

    return score


def fit_calibration(teacher: Teacher, calibrate_on: Dataset | DataLoader, *, batch_size: int = 32,
                    num_workers: int = 0, ctx: DistContext | None = None, amp: str = "none",
                    channels_last: bool = False) -> tuple[Logistic4, TeacherScores]:
    """The 4-parameter logistic f(x) = (b1 − b2) / (1 + exp(−(x − b3) / |b4|)) + b2 fitted from the
    teacher's scores of the labelled ``calibrate_on`` to their labels (:func:`kdfiqa.metrics.fit_logistic4`,
    VQEG practice as in the ECNU-SJTU entry), and those scores (scored as :func:`score_with_teacher`
    does, shared by the ranks of ``ctx``)."""
    labelled = score_with_teacher(teacher, calibrate_on, batch_size=batch_size, num_workers=num_workers, ctx=ctx,
                                  amp=amp, channels_last=channels_last)
    if labelled.labels is None:
        raise DataError("calibrate_on: the calibration data set has no 'score' labels; give a labelled one")
    return fit_logistic4(labelled.scores, labelled.labels), labelled


MIN_DISTINCT_SHARE = 0.1
"""A calibration must keep at least this share of the teacher's distinct scores distinct (and 3)."""
MIN_RANK_AGREEMENT = 0.9
"""Spearman correlation a calibration must keep between the teacher's scores and the mapped ones:
a 4-parameter logistic is monotone, so only clipping and flat stretches can lower it."""
MIN_SPAN = 1e-3
"""The least range (max - min) of calibrated pseudo-labels on the 0..1 scale."""


def calibration_fault(raw: np.ndarray, mapped: np.ndarray) -> str | None:
    """Why mapping the teacher's ``raw`` scores to ``mapped`` is degenerate, or ``None`` when it is
    not: a span below :data:`MIN_SPAN`, fewer distinct values than :data:`MIN_DISTINCT_SHARE` of the
    raw ones (or 3), or a Spearman agreement with the raw order below :data:`MIN_RANK_AGREEMENT`."""
    from scipy import stats

    span = float(mapped.max() - mapped.min()) if mapped.size else 0.0
    if span < MIN_SPAN:
        return f"every pseudo-label within {span:.2g} of {float(mapped.mean()):.4f}: a flat curve"
    distinct, raw_distinct = np.unique(np.round(mapped, 6)).size, np.unique(raw).size
    if distinct < max(3, MIN_DISTINCT_SHARE * raw_distinct):
        return f"{raw_distinct} distinct teacher scores map to {distinct} distinct pseudo-labels"
    if raw_distinct > 1:
        agreement = float(stats.spearmanr(raw, mapped)[0])
        if not agreement >= MIN_RANK_AGREEMENT:
            return f"rank agreement with the teacher's scores {agreement:.3f} < {MIN_RANK_AGREEMENT}"
    return None


def write_scores_csv(path: str | os.PathLike[str], names: Sequence[str], scores: Sequence[float], *,
                     overwrite: bool = True) -> Path:
    """Write header-less ``image_name,score`` rows (the challenge format) atomically to ``path``, the
    scores to :data:`PSEUDO_LABEL_FORMAT`; without ``overwrite`` an existing file is refused (see
    :func:`kdfiqa.data.csv_files.write_scores`)."""
    return write_scores(path, names, scores, float_format=PSEUDO_LABEL_FORMAT, overwrite=overwrite)


def pseudo_label(
    teacher: Teacher | TeacherSource | Sequence[TeacherSource],
    images: Dataset | DataLoader,
    out_csv: str | os.PathLike[str],
    *,
    calibrate_on: Dataset | DataLoader | None = None,
    clip: bool = True,
    raw_if_degenerate: bool = False,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device | None = None,
    overwrite: bool = True,
    ctx: DistContext | None = None,
    amp: str = "none",
    channels_last: bool = False,
    parts: LabelParts | None = None,
    shard_size: int | None = None,
    resume: bool = False,
    **teacher_kwargs: Any,
) -> dict[str, float]:
    """Score ``images`` with ``teacher`` and write them to ``out_csv`` as challenge-format labels.

    The pseudo-label of an image is the teacher's score s (:meth:`Teacher.scores`: σ(z_t), or a
    linear-output teacher's raw regression, as the ECNU-SJTU winner uses it). With ``calibrate_on``
    (a labelled data set) the teacher also scores those images, a 4-parameter logistic
    f(x) = (b1 − b2) / (1 + exp(−(x − b3) / |b4|)) + b2 is fitted from its scores to their labels
    (:func:`kdfiqa.metrics.fit_logistic4`, VQEG practice as in the ECNU-SJTU entry), and every
    pseudo-label becomes f(s), clipped to [0, 1] (the label range; clipped values are counted in the
    log) unless ``clip`` is false (the winner's ``test_unlabeled_images.py`` keeps f(s) as it is).
    Returns ``{name: pseudo-label}`` in data-set order.

    A degenerate fit (:func:`calibration_fault`: a flat curve, few distinct pseudo-labels, or an order
    that no longer follows the teacher's) is refused with one line, or, with ``raw_if_degenerate``,
    replaced by the raw scores with a warning.

    ``teacher`` is a :class:`Teacher` or anything it accepts (``teacher_kwargs`` and ``device`` go to
    it); names are written as the data set gives them (relative to its root). Without ``overwrite``
    an existing ``out_csv`` is refused, also one another process wrote while the teacher was scoring
    (:class:`~kdfiqa.atomic_write.OutputExistsError`).

    Under ``torchrun`` (``ctx``) the ranks share the scoring (:func:`score_with_teacher`), every rank
    computes the same calibration from the gathered scores and rank 0 alone writes ``out_csv``: the
    same bytes as one process. With ``parts`` the images are scored in shards of ``shard_size`` and
    each shard is kept in a part file as soon as it is scored; ``resume`` keeps the parts an
    interrupted run wrote and scores only the missing shards; the parts are removed once
    ``out_csv`` is written, unless ``parts`` keeps them.
    """
    from ..engine.distributed import local_context
    from ..engine.sharded import chunk_ranges

    ctx = ctx if ctx is not None else local_context("cpu")
    if not isinstance(teacher, Teacher):
        teacher = Teacher(teacher, device=device, **teacher_kwargs)
    elif device is not None:
        teacher.to(device)
    kept: dict[int, list[tuple]] = {}
    if parts is not None:
        if shard_size is None:
            raise ValueError("part files need a shard size")
        names = list(getattr(images, "names"))
        kept = parts.start(chunk_ranges(len(names), batch_size, shard_size), names, resume)
    raw = score_with_teacher(teacher, images, batch_size=batch_size, num_workers=num_workers, ctx=ctx, amp=amp,
                             channels_last=channels_last, shard_size=shard_size if parts is not None else None,
                             kept=kept, on_shard=parts.write if parts is not None else None)
    scores = raw.scores
    if calibrate_on is not None:
        mapping, labelled = fit_calibration(teacher, calibrate_on, batch_size=batch_size, num_workers=num_workers,
                                            ctx=ctx, amp=amp, channels_last=channels_last)
        mapped = np.asarray(mapping(scores), dtype=np.float64)
        outside = int(np.count_nonzero((mapped < 0.0) | (mapped > 1.0)))
        if outside:
            log.info("calibration: %d of %d pseudo-labels fell outside [0, 1]%s", outside, mapped.size,
                     " and were clipped" if clip else " (kept: no clipping)")
        calibrated = np.clip(mapped, 0.0, 1.0) if clip else mapped
        fault = calibration_fault(scores, calibrated)
        if fault is None:
            scores = calibrated
            log.info("calibrated on %d labelled images: %s", labelled.scores.size, mapping)
        elif raw_if_degenerate:
            log.warning("calibration on %d labelled images is degenerate (%s): the raw teacher scores are "
                        "written instead", labelled.scores.size, fault)
        else:
            raise DataError(f"calibration on {labelled.scores.size} labelled images is degenerate ({fault}); "
                            "the teacher may be too weak: train it longer, pseudo-label without "
                            f"{spelled('--calibrate', 'calibrate_on')}, or keep the raw scores with "
                            f"{spelled('--raw-if-degenerate', 'raw_if_degenerate=True')}")
    if scores.size > 1 and float(np.std(scores)) < COLLAPSE_SPREAD:
        log.warning("the teacher's %d pseudo-labels are near-constant (spread %.2e < %g): it has collapsed, and "
                    "training on them teaches nothing; use a better teacher", scores.size, float(np.std(scores)),
                    COLLAPSE_SPREAD)
    if ctx.is_main:
        write_scores_csv(out_csv, raw.names, scores, overwrite=overwrite)
        log.info("wrote %d pseudo-labels to %s", len(raw.names), out_csv)
        if parts is not None:
            parts.finish()
    ctx.barrier()
    return dict(zip(raw.names, scores.tolist()))
