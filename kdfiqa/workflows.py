"""Whole runs built from a :class:`~kdfiqa.config.RunConfig`: what ``kdfiqa train``, ``distill`` and
``pseudo-label`` do, usable from Python as well.

* :func:`train_model`: supervised training of one model; with ``ssar.epochs > 0`` it is preceded by
  RankCORE's SSAR pretraining on (I, T_s(I)) pairs (seed §2) and then fine-tuned from it.
* :func:`distill_model`: a budget-checked student under a frozen teacher (or ensemble). With
  ``data.unlabeled`` the teacher first pseudo-labels those images (optionally calibrated by a
  4-parameter logistic on the labeled set), after ``distill.self_train`` rounds of the ECNU-SJTU loop
  (teacher → pseudo-labels → teacher retrained on labels ∪ pseudo-labels), and the student trains on
  labels ∪ pseudo-labels.
* :func:`pseudo_label_folder`: score a folder of images with a teacher into a challenge-format CSV.

Each run writes ``best.pt``, ``last.pt`` and ``log.jsonl`` into ``train.output_dir``; the
checkpoints' ``"config"`` is the resolved run config, whose ``data.eval_transform`` is the full
transform spec that ``evaluate``/``predict``/``export`` apply by default.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.utils.data import Dataset, Sampler

from .budget import VQUALA2025, Budget, parse_input_size
from .config import RunConfig
from .errors import CheckpointError, ConfigError

__all__ = [
    "RunResult",
    "BUDGETS",
    "build_model",
    "resolve_transforms",
    "budget_sizes",
    "train_model",
    "distill_model",
    "pseudo_label_folder",
    "self_train",
]

log = logging.getLogger(__name__)

BUDGETS: dict[str, Budget] = {VQUALA2025.name: VQUALA2025}
"""Budgets ``distill.budget`` can name."""

PSEUDO_LABELS = "pseudo_labels.csv"


@dataclass
class RunResult:
    """Where a run left its files and what it saw."""

    output_dir: Path
    checkpoint: Path
    """``best.pt`` (``last.pt`` when the run had no validation set)."""
    history: list[dict[str, Any]]
    config: RunConfig
    """The resolved configuration stored in the checkpoints."""


def is_main_process() -> bool:
    """True outside ``torchrun`` and on its rank 0: the process that prints and writes files."""
    return int(os.environ.get("RANK", "0")) == 0


# ------------------------------------------------------------------------------------------ models


def build_model(config: RunConfig) -> nn.Module:
    """``config.model`` built through the registry, initialised from ``model.init`` when given.

    The factory keyword arguments are kept on the model as ``model_kwargs`` so that the checkpoint
    rebuilds the same network.
    """
    from .checkpoint import load_weights
    from .models import create_model

    section = config.model
    if not section.name:
        raise ConfigError("no model to train: pass --model NAME (or set model.name in the recipe/config)")
    kwargs = dict(section.kwargs)
    if section.pretrained:
        kwargs["pretrained"] = True
    if section.head is not None:
        kwargs["head"] = dict(section.head)
    model = create_model(section.name, **kwargs)
    if section.init:
        if not Path(section.init).is_file():
            raise CheckpointError(f"model.init: {section.init} does not exist; give a kdfiqa checkpoint")
        load_weights(model, section.init)
    return model


def _hw(size: Any) -> list[int]:
    _, h, w = parse_input_size(tuple(size) if isinstance(size, list) else size)
    return [h, w]


def resolve_transforms(config: RunConfig, model: nn.Module,
                       teacher_size: Sequence[int] | None = None) -> RunConfig:
    """A copy of ``config`` with ``model.input`` and both transform specs filled in.

    ``model.input`` defaults to the model's ``default_input_size``; a transform without ``size``
    gets it; the training transform defaults to resize + flip and the evaluation one to a resize,
    both with the training transform's normalisation. ``teacher_size`` adds the teacher's view of the
    same crop to the training transform (unless it names one already).
    """
    size = _hw(config.model.input or tuple(getattr(model, "default_input_size", (3, 224, 224))))
    train = dict(config.data.train_transform or {"mode": "resize", "flip": True})
    normalize = train.get("normalize", "imagenet")
    train.setdefault("normalize", normalize)
    evaluation = dict(config.data.eval_transform or {"mode": "resize"})
    evaluation.setdefault("normalize", normalize)
    for spec in (train, evaluation):
        if spec.get("mode") != "native" and "preset" not in spec:
            spec.setdefault("size", size)
    if teacher_size is not None:
        train.setdefault("teacher_size", _hw(teacher_size))
    return dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, input=size),
        data=dataclasses.replace(config.data, train_transform=train, eval_transform=evaluation),
    )


def budget_sizes(config: RunConfig) -> list[tuple[int, int, int]]:
    """The resolutions the trained model runs at: the training input and the evaluation size.

    Native-resolution evaluation has no fixed size, so the training input stands for it.
    """
    sizes = [parse_input_size(tuple(config.model.input))]
    spec = config.data.eval_transform or {}
    crop = spec.get("crop", spec.get("size"))
    if spec.get("mode") != "native" and crop is not None:
        sizes.append(parse_input_size(tuple(_hw(crop))))
    return list(dict.fromkeys(sizes))


def _budget(config: RunConfig) -> Budget:
    name = config.distill.budget
    if name is None or name == "none":
        return Budget(max_gflops=float("inf"), max_params=2**62, name="none")
    if name not in BUDGETS:
        raise ConfigError(f"distill.budget: unknown budget {name!r}; choose one of {', '.join(BUDGETS)} or none")
    return BUDGETS[name]


# -------------------------------------------------------------------------------------------- data


def _require(value: str | None, what: str) -> str:
    if not value:
        raise ConfigError(f"{what} is required")
    return value


def labeled_data(config: RunConfig) -> tuple[Dataset, Dataset]:
    """(train, validation) data sets of a config whose transforms are resolved.

    Validation is ``data.val_csv`` or a ``val_fraction`` split of ``data.csv`` seeded by
    ``split_seed``; pseudo-labels (``data.pseudo_csv``) join the training part only. Every image is
    decoded once up front, so a bad file fails the run before its first step.
    """
    from .data import FIQADataset, build_transform, split_dataset, validate_images

    data = config.data
    root = _require(data.root, "--root DIR (data.root), the folder of labeled images,")
    csv = _require(data.csv, "--csv FILE (data.csv), the labels,")
    train_tf, eval_tf = build_transform(data.train_transform), build_transform(data.eval_transform)
    labeled = FIQADataset(root, csv, transform=train_tf)
    if data.val_csv:
        train, val = labeled, FIQADataset(data.val_root or root, data.val_csv, transform=eval_tf)
    else:
        train, val = split_dataset(labeled, data.val_fraction, data.split_seed)
        val = val.with_transform(eval_tf)
    if data.pseudo_csv:
        pseudo_root = data.pseudo_root or data.unlabeled or root
        pseudo = FIQADataset(pseudo_root, data.pseudo_csv, transform=train_tf)
        train = FIQADataset.merge([train, pseudo])
        log.info("training on %d labeled + %d pseudo-labeled images", len(train) - len(pseudo), len(pseudo))
    skipped = sum(validate_images(dataset, skip_bad=data.skip_bad) for dataset in (train, val))
    if skipped:
        log.warning("skipped %d unreadable image(s) (--skip-bad); training on %d, validating on %d",
                    skipped, len(train), len(val))
    return train, val


def _sampler(config: RunConfig, train: Dataset) -> Sampler[int] | None:
    from .data import SSUSSampler

    if config.data.sampler is None:
        return None
    if config.data.sampler != "ssus":
        raise ConfigError(f"data.sampler: unknown sampler {config.data.sampler!r}; use ssus or leave it unset")
    return SSUSSampler(train.scores, num_strata=config.data.strata, seed=config.train.seed)


# ---------------------------------------------------------------------------------------- training


def _resume_path(output_dir: Path, resume: bool) -> Path | None:
    last = output_dir / "last.pt"
    return last if resume and last.is_file() else None


def _check_resumable(config: RunConfig, resume: bool) -> None:
    """``resume`` needs a ``last.pt`` of this run (of its final stage or of an earlier one)."""
    out = Path(config.train.output_dir)
    if resume and not any(out.rglob("last.pt")):
        raise CheckpointError(f"--resume: no last.pt under {out}; check --out, or start without --resume")


def _fit(objective: nn.Module, train: Dataset, val: Dataset | None, config: RunConfig, *,
         sampler: Sampler[int] | None = None, resume: bool = False) -> RunResult:
    from .engine import Trainer

    train_config = config.train
    if (config.data.eval_transform or {}).get("mode") == "native" and train_config.val_batch_size is None:
        train_config = dataclasses.replace(train_config, val_batch_size=1)
    config = dataclasses.replace(config, train=train_config)
    output_dir = Path(train_config.output_dir)
    trainer = Trainer(objective, train, val, train_config, sampler=sampler,
                      run_config={k: v for k, v in config.to_dict().items() if k != "train"})
    history = trainer.fit(resume=_resume_path(output_dir, resume))
    best = output_dir / "best.pt"
    return RunResult(output_dir, best if best.is_file() else output_dir / "last.pt", history, config)


def _stage(config: RunConfig, name: str, **train_changes: Any) -> RunConfig:
    out = str(Path(config.train.output_dir) / name)
    return dataclasses.replace(config, train=dataclasses.replace(config.train, output_dir=out, **train_changes))


def _ssar_pretrain(config: RunConfig, model: nn.Module, val: Dataset, resume: bool) -> Path:
    """SSAR stage (seed §2): rank (I, T_s(I)) pairs with the adaptive margin λ·s, no labels used."""
    from .data import FIQADataset, UnlabeledImageFolder, build_transform
    from .distill import SSARObjective
    from .distill.ssar import SSARPairs

    transform = build_transform(config.data.train_transform)
    if config.data.unlabeled:
        images = UnlabeledImageFolder(config.data.unlabeled, transform=transform)
    else:
        images = FIQADataset(config.data.root, config.data.csv, transform=transform)
    kinds = {"kinds": tuple(config.ssar.degradations)} if config.ssar.degradations else {}
    pairs = SSARPairs(images, seed=config.train.seed, **kinds)
    stage = _stage(config, "ssar", epochs=config.ssar.epochs, lr=config.ssar.lr or config.train.lr)
    result = _fit(SSARObjective(model, margin_scale=config.ssar.margin), pairs, val, stage, resume=resume)
    return result.output_dir / "last.pt"


def train_model(config: RunConfig, *, resume: bool = False) -> RunResult:
    """Train ``config.model`` on the labeled data with the task loss ``config.loss.task``.

    With ``ssar.epochs > 0`` the model is first pretrained by SSAR (``output_dir/ssar``) and the
    supervised run starts from those weights.
    """
    from .checkpoint import load_weights
    from .distill import Supervised

    _check_resumable(config, resume)
    model = build_model(config)
    config = resolve_transforms(config, model)
    train, val = labeled_data(config)
    if config.ssar.epochs > 0:
        pretrained = _ssar_pretrain(config, model, val, resume)
        load_weights(model, pretrained, weights="model")
    return _fit(Supervised(model, config.loss.task), train, val, config,
                sampler=_sampler(config, train), resume=resume)


# ----------------------------------------------------------------------------------- distillation


def _on_main_process(config: RunConfig, work: Callable[[], Any]) -> None:
    """Run ``work`` on rank 0 only; under ``torchrun`` the other ranks wait for it."""
    from .engine import init_distributed

    ctx = init_distributed(config.train.device)
    if ctx.is_main:
        work()
    ctx.barrier()


def _device(config: RunConfig) -> torch.device:
    from .engine import init_distributed

    return init_distributed(config.train.device).device


def pseudo_label_folder(teachers: Sequence[str] | str, images: str | os.PathLike[str], out_csv: str | os.PathLike[str],
                        *, teacher_input: Any = None, calibrate_root: str | None = None,
                        calibrate_csv: str | None = None, calibrate_holdout: tuple[float, int] | None = None,
                        normalize: str = "imagenet", batch_size: int = 32, num_workers: int = 0,
                        device: str | torch.device | None = None) -> Path:
    """Score every image under ``images`` with the teacher(s) into the challenge-format ``out_csv``.

    Images are resized to the teacher's resolution (``teacher_input``, else the first network's own)
    with ``normalize``. With ``calibrate_root``/``calibrate_csv`` (a labeled set) the scores are
    mapped to the label scale by a 4-parameter logistic fitted on it (the ECNU-SJTU winner's method).
    ``calibrate_holdout`` = ``(val_fraction, split_seed)`` leaves out the validation share that
    :func:`labeled_data` splits off the same CSV, so validation labels never shape the pseudo-labels.
    """
    from .data import FIQADataset, UnlabeledImageFolder, build_transform, split_dataset
    from .distill import Teacher, pseudo_label

    teacher = Teacher(list(teachers) if not isinstance(teachers, str) else teachers,
                      input_size=teacher_input, device=device)
    size = teacher.input_size or (parse_input_size(teacher_input) if teacher_input else None)
    if size is None:
        raise ConfigError("pseudo-labelling needs a teacher network (a model name or checkpoint), "
                          "not only a CSV of scores; or pass --teacher-input")
    transform = build_transform({"mode": "resize", "size": list(size[1:]), "normalize": normalize})
    folder = UnlabeledImageFolder(images, transform=transform)
    calibration = None
    if calibrate_csv or calibrate_root:
        calibration = FIQADataset(_require(calibrate_root, "--root (the labeled images) for --calibrate"),
                                  _require(calibrate_csv, "--csv (the labels) for --calibrate"),
                                  transform=transform)
        if calibrate_holdout is not None:
            calibration = split_dataset(calibration, *calibrate_holdout)[0]
    pseudo_label(teacher, folder, out_csv, calibrate_on=calibration, batch_size=batch_size,
                 num_workers=num_workers)
    return Path(out_csv)


def _teacher_model_config(config: RunConfig, teacher: str) -> RunConfig:
    """The config that retrains ``teacher`` (a kdfiqa checkpoint): its own stored run config, with
    this run's data, starting from its weights."""
    from .checkpoint import load_checkpoint

    if not str(teacher).endswith((".pt", ".pth")):
        raise ConfigError(f"self-training retrains the teacher, so it must be a kdfiqa checkpoint, not {teacher!r}")
    stored = load_checkpoint(teacher).get("config") or {}
    base = RunConfig.from_dict(stored, source=f"{teacher} config") if stored else config
    return dataclasses.replace(
        base,
        model=dataclasses.replace(base.model, init=str(teacher), pretrained=False),
        data=dataclasses.replace(config.data, train_transform=base.data.train_transform,
                                 eval_transform=base.data.eval_transform, pseudo_csv=None),
        train=dataclasses.replace(base.train, device=config.train.device, quiet=config.train.quiet),
        ssar=dataclasses.replace(base.ssar, epochs=0),
    )


def _label_unlabeled(config: RunConfig, teachers: Sequence[str], out_csv: Path) -> Path:
    data = config.data
    normalize = (data.train_transform or {}).get("normalize", "imagenet")

    def work() -> None:
        pseudo_label_folder(teachers, _require(data.unlabeled, "data.unlabeled"), out_csv,
                            teacher_input=config.distill.teacher_input,
                            calibrate_root=data.root if config.distill.calibrate else None,
                            calibrate_csv=data.csv if config.distill.calibrate else None,
                            calibrate_holdout=None if data.val_csv else (data.val_fraction, data.split_seed),
                            normalize=normalize, batch_size=config.train.batch_size,
                            num_workers=config.train.num_workers, device=_device(config))

    _on_main_process(config, work)
    return out_csv


def self_train(config: RunConfig, teacher: str, *, resume: bool = False) -> str:
    """ECNU-SJTU's loop, ``distill.self_train`` rounds: the teacher pseudo-labels ``data.unlabeled``
    and is retrained (from its weights, with its own stored settings) on labels ∪ pseudo-labels.
    Returns the final teacher checkpoint. Rounds go to ``output_dir/self_train_N``."""
    for round_ in range(1, config.distill.self_train + 1):
        stage_dir = Path(config.train.output_dir) / f"self_train_{round_}"
        csv = _label_unlabeled(config, [teacher], stage_dir / PSEUDO_LABELS)
        retrain = _teacher_model_config(config, teacher)
        retrain = dataclasses.replace(
            retrain, data=dataclasses.replace(retrain.data, pseudo_csv=str(csv), pseudo_root=config.data.unlabeled),
            train=dataclasses.replace(retrain.train, output_dir=str(stage_dir / "teacher")))
        resumable = resume and (stage_dir / "teacher" / "last.pt").is_file()
        teacher = str(train_model(retrain, resume=resumable).checkpoint)
    return teacher


def _feature_pairs(specs: Sequence[Any]) -> list[Any]:
    """``"STUDENT_MODULE:TEACHER_MODULE[:LOSS[:WEIGHT]]"`` strings (or mappings) as Distiller pairs."""
    pairs = []
    for spec in specs:
        if isinstance(spec, str):
            parts = spec.split(":")
            if not 2 <= len(parts) <= 4:
                raise ConfigError(f"feature loss {spec!r}: expected STUDENT_MODULE:TEACHER_MODULE[:LOSS[:WEIGHT]]")
            if len(parts) == 4:
                try:
                    parts[3] = float(parts[3])
                except ValueError:
                    raise ConfigError(f"feature loss {spec!r}: weight {parts[3]!r} is not a number") from None
            spec = tuple(parts)
        pairs.append(spec)
    return pairs


def distill_model(config: RunConfig, *, resume: bool = False) -> RunResult:
    """Distil ``config.distill.teachers`` into the student ``config.model``.

    The student is measured against ``distill.budget`` at :func:`budget_sizes` before anything
    else runs; over budget is an error unless ``distill.allow_over_budget`` (loudly logged). With
    ``data.unlabeled`` the (self-trained) teacher pseudo-labels it first. Without a distillation or
    feature loss the student learns from labels ∪ pseudo-labels only (offline distillation).
    """
    from .distill import Distiller, Student, Supervised, Teacher

    teachers = list(config.distill.teachers)
    if not teachers and not config.data.pseudo_csv:
        raise ConfigError("no teacher: pass --teacher (a model name, timm:NAME, checkpoint or scores CSV) "
                          "or --pseudo-csv with pseudo-labels")
    _check_resumable(config, resume)
    model = build_model(config)
    config = resolve_transforms(config, model)
    student = Student(model, budget=_budget(config), input_sizes=budget_sizes(config),
                      allow_over_budget=config.distill.allow_over_budget)
    if config.data.unlabeled and teachers:
        if config.distill.self_train:
            teachers = [self_train(config, teachers[0], resume=resume), *teachers[1:]]
        csv = _label_unlabeled(config, teachers, Path(config.train.output_dir) / PSEUDO_LABELS)
        config = dataclasses.replace(config, data=dataclasses.replace(
            config.data, pseudo_csv=str(csv), pseudo_root=config.data.unlabeled))
        config = dataclasses.replace(config, distill=dataclasses.replace(config.distill, teachers=teachers))
    features = _feature_pairs(config.distill.feature)
    if config.distill.loss is None and not features:
        objective: nn.Module = Supervised(student.model, config.loss.task)
    else:
        if not teachers:
            raise ConfigError("distill.loss/feature need a teacher: pass --teacher, or set distill.loss to null")
        teacher = Teacher(teachers, input_size=config.distill.teacher_input)
        if teacher.input_size is not None:
            config = resolve_transforms(config, model, teacher_size=teacher.input_size[1:])
        objective = Distiller(teacher, student, task_loss=config.loss.task,
                              distill_loss=config.distill.loss, feature_losses=features or None)
    train, val = labeled_data(config)
    return _fit(objective, train, val, config, sampler=_sampler(config, train), resume=resume)
