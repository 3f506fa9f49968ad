"""The teacher's labels: the ``pseudo-label`` stage, the labelling of a run's ``data.unlabeled``, and
ECNU-SJTU's self-training rounds."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..engine.distributed import DistContext, init_distributed, rank_zero_writer_lock
from ..errors import spelled
from ..options import LABEL_SHARD_BATCHES
from .building import build_teacher, run_context
from .checks import required
from .data import refuse_labeled_in_unlabeled
from .results import PSEUDO_LABELS, Labels
from .training import train

__all__ = ["pseudo_label", "fused_teacher", "label_unlabeled", "self_train", "SelfTrained"]


def pseudo_label(teacher: Any, images: str | os.PathLike[str], out_csv: str | os.PathLike[str], *,
                 calibrate_on: Labels | None = None, holdout: tuple[float, int, str] | None = None,
                 clip: bool = True, raw_if_degenerate: bool = False, normalize: str | None = None,
                 batch_size: int = 32, num_workers: int = 0, ctx: DistContext | None = None,
                 overwrite: bool = False, amp: str = "none", channels_last: bool = False,
                 shard_batches: int | None = None, resume: bool = False, keep_parts: bool = False,
                 fuse: bool = False) -> Labels:
    """Score every image under ``images`` with ``teacher`` (a :class:`~kdfiqa.distill.Teacher`, or
    what it is built from: a checkpoint, a model name, a model) into the challenge-format ``out_csv``
    and return it as :class:`Labels` rooted at ``images``. An existing ``out_csv`` is replaced only
    with ``overwrite``, and never when it is one of the inputs (the teacher's checkpoint, the
    calibration CSV, the images folder).

    Images are rendered as the teacher is deployed (:attr:`~kdfiqa.distill.Teacher.eval_transform`:
    a trained teacher's evaluation transform at its resolution, e.g. Resize + CenterCrop, as the
    ECNU-SJTU winner labels; else a resize); ``normalize`` overrides its normalisation. With
    ``calibrate_on`` (a labeled set) the scores are mapped to the label scale by a 4-parameter
    logistic fitted on it (the winner's method) and clipped to [0, 1] unless ``clip`` is false;
    ``holdout = (val_fraction, split_seed, split_method)`` leaves out the validation share
    :func:`labeled_data` splits off the same CSV, so validation labels never shape the
    pseudo-labels; a degenerate fit is refused unless ``raw_if_degenerate`` (then the raw scores are
    kept, with a warning). Under ``torchrun`` every rank scores its share of the images (and of the
    calibration set), gathered in order on rank 0, which writes what one process writes
    (:func:`kdfiqa.distill.pseudo_label`); ``amp`` (``bf16``) and ``channels_last`` apply on CUDA.
    With ``shard_batches`` the images are scored in shards of that many batches, each kept in a part
    file next to ``out_csv`` (:mod:`kdfiqa.distill.label_parts`) as soon as it is scored; ``resume``
    keeps the parts of an interrupted run and scores only the missing shards; ``keep_parts`` keeps
    them once the CSV is written too (a ``distill`` run's record of its labelling). With ``fuse`` each
    teacher network scores in its inference form where that form is verified to match it
    (:func:`fused_teacher`). ``out_csv`` is this
    call's alone while it runs: another process writing it holds its writer lock
    (:func:`~kdfiqa.engine.distributed.rank_zero_writer_lock`) and refuses this call.
    """
    from ..data import UnlabeledImageFolder, build_transform, split_dataset
    from ..distill import Teacher
    from ..distill import pseudo_label as label_with_teacher
    from ..distill.label_parts import LabelParts, labelling_fingerprint
    from ..outputs import check_output_file

    teacher = teacher if isinstance(teacher, Teacher) else Teacher(teacher)
    if fuse:
        fused_teacher(teacher)
    ctx = ctx if ctx is not None else init_distributed("cpu")
    with rank_zero_writer_lock(out_csv, ctx):
        check_output_file(out_csv, inputs=[*teacher.sources, calibrate_on.csv if calibrate_on else None, images],
                          overwrite=overwrite, flag=spelled("--out", "out_csv"))
        spec = teacher.eval_transform
        transform_spec = spec if normalize is None else {**spec, "normalize": normalize}
        transform = build_transform(transform_spec)
        folder = UnlabeledImageFolder(images, transform=transform)
        calibration = None
        if calibrate_on is not None:
            calibration = calibrate_on.dataset(transform)
            if holdout is not None:
                calibration = split_dataset(calibration, *holdout)[0]
        parts, shard_size = None, None
        if shard_batches is not None:
            shard_size = shard_batches * batch_size
            parts = LabelParts(out_csv, labelling_fingerprint(teacher, transform_spec, folder.names, batch_size,
                                                              shard_size, amp), ctx, keep=keep_parts)
        label_with_teacher(teacher, folder, out_csv, calibrate_on=calibration, clip=clip,
                           raw_if_degenerate=raw_if_degenerate, batch_size=batch_size, num_workers=num_workers,
                           overwrite=overwrite, ctx=ctx, amp=amp, channels_last=channels_last, parts=parts,
                           shard_size=shard_size, resume=resume)
    # kdfiqa wrote these scores: unclipped calibrations and linear-output teachers may leave [0, 1]
    return Labels(Path(out_csv), Path(images), score_range=None)


def fused_teacher(teacher: Any) -> Any:
    """``teacher`` (a :class:`~kdfiqa.distill.Teacher`) with each of its networks replaced, in place,
    by its inference form (:func:`kdfiqa.inference.verified_inference_form`: batch norms folded,
    channels-last weights) where that form's outputs match the network's to
    :data:`~kdfiqa.inference.FUSE_TOLERANCE` at the teacher's resolution; a network that fails the
    check keeps its training form (with a one-line warning)."""
    import torch

    from ..distill.teacher import NetworkTeacher
    from ..inference import verified_inference_form

    for member in teacher.members:
        if isinstance(member, NetworkTeacher) and member.input_size is not None:
            device = next(member.network.parameters(), torch.empty(0)).device
            fused = verified_inference_form(member.network.cpu(), member.input_size, source="teacher")
            member.network = (member.network if fused is None else fused.requires_grad_(False)).to(device)
    return teacher


def label_unlabeled(config: RunConfig, teacher: Any, out_csv: Path, ctx: DistContext, *,
                    resume: bool = False) -> Labels:
    """A run's own pseudo-labelling of ``data.unlabeled`` into ``out_csv`` (calibrated on the labeled
    split as the config says), its teacher scores kept in part files of
    :data:`~kdfiqa.options.LABEL_SHARD_BATCHES` batches that stay in the run folder, so that a
    ``resume`` scores only the shards the run had not kept (none once its labelling finished)."""
    refuse_labeled_in_unlabeled(config)
    data, distill_ = config.data, config.distill
    calibrate = Labels(Path(data.csv), Path(data.root)) if distill_.calibrate else None
    held_out = not data.val_csv and distill_.calibrate_on == "train_split"
    return pseudo_label(teacher, required(data.unlabeled, spelled("--unlabeled DIR", "data.unlabeled")), out_csv, calibrate_on=calibrate,
                        holdout=(data.val_fraction, data.split_seed, data.split_method) if held_out else None,
                        clip=distill_.clip_pseudo_labels, raw_if_degenerate=distill_.raw_if_degenerate,
                        batch_size=config.train.batch_size, num_workers=config.train.num_workers, ctx=ctx,
                        shard_batches=LABEL_SHARD_BATCHES, resume=resume, keep_parts=True,
                        overwrite=True)  # the run's own file: the run folder's check came first


def _teacher_run_config(config: RunConfig, teacher: str, output_dir: Path) -> RunConfig:
    """The config that retrains ``teacher`` (a kdfiqa checkpoint): its own stored run config, with
    this run's labeled data, starting from its weights. The network is the checkpoint's own model
    spec, allow-listed as every rebuild is (:func:`~kdfiqa.models.rebuild.stored_model_spec`), never
    the stored run config's raw ``model.kwargs``; that config is validated whole on load
    (:func:`~kdfiqa.config.load_stored_config`)."""
    from ..config import load_stored_config
    from ..models.rebuild import stored_model_spec

    name, kwargs = stored_model_spec(teacher)
    base = load_stored_config(teacher) or config
    return dataclasses.replace(
        base,
        model=dataclasses.replace(base.model, name=name, kwargs={k: v for k, v in kwargs.items() if k != "pretrained"},
                                  init=str(teacher), init_head=config.distill.self_train_head, pretrained=False),
        data=dataclasses.replace(config.data, train_transform=base.data.train_transform,
                                 eval_transform=base.data.eval_transform, pseudo_csv=None, pseudo_root=None,
                                 unlabeled=None),
        train=dataclasses.replace(base.train, device=config.train.device, quiet=config.train.quiet,
                                  output_dir=str(output_dir)),
        ssar=dataclasses.replace(base.ssar, epochs=0),
    )


@dataclass(frozen=True)
class SelfTrained:
    """What :func:`self_train` leaves: the final teacher checkpoint and each round's pseudo-labels."""

    teacher: str
    pseudo: tuple[Labels, ...]


def self_train(config: RunConfig, teacher: str, *, ctx: DistContext | None = None, resume: bool = False,
               overwrite: bool = False) -> SelfTrained:
    """ECNU-SJTU's loop, ``distill.self_train`` rounds: the teacher pseudo-labels ``data.unlabeled``
    and is retrained on labels ∪ pseudo-labels from its weights, with its own stored settings;
    ``distill.self_train_head = "fresh"`` starts a fresh head on its backbone (the winner's enhanced
    teacher, ``FIQA_Swin_B(pretrained_path=teacher)``). Rounds go to ``output_dir/self_train_N``."""
    ctx = run_context(config, ctx)
    rounds = []
    for round_ in range(1, config.distill.self_train + 1):
        stage_dir = Path(config.train.output_dir) / f"self_train_{round_}"
        labels = label_unlabeled(config, build_teacher(config, ctx, [teacher]), stage_dir / PSEUDO_LABELS, ctx,
                                 resume=resume)
        retrain = _teacher_run_config(config, teacher, stage_dir / "teacher")
        resumable = resume and (stage_dir / "teacher" / "last.pt").is_file()
        teacher = str(train(retrain, pseudo=labels, ctx=ctx, resume=resumable, overwrite=overwrite).checkpoint)
        rounds.append(labels)
    return SelfTrained(teacher, tuple(rounds))
