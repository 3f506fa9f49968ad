"""The stages of kdfiqa's main job, shared by the command line, the Python API and the demo.

============================  =============================  ==================================
stage                         takes                          returns
============================  =============================  ==================================
:func:`train`                 a :class:`RunConfig`           :class:`RunResult` (a checkpoint)
:func:`pseudo_label`          a :class:`Teacher`, a folder   :class:`Labels` (CSV + image root)
:func:`distill`               a config, a teacher, labels    :class:`RunResult` (the student)
============================  =============================  ==================================

``kdfiqa train`` is :func:`train`; ``kdfiqa pseudo-label`` is :func:`pseudo_label`; ``kdfiqa distill``
is :func:`run_distill`, which builds the teacher once from ``distill.teachers``, checks the student's
budget, runs ECNU-SJTU's self-training rounds and the teacher's labelling of ``data.unlabeled`` when
asked, and then :func:`distill`; ``kdfiqa demo`` (:mod:`kdfiqa.demo`) calls the same stages. A stage
takes explicit inputs and returns explicit outputs: no stage writes a value into a config that the
next one reads back, and a pseudo-label CSV a user gives is used as given.

Every stage validates its whole configuration (values, files, the validation split's size) before
it builds a model; the distributed context is made once (:func:`kdfiqa.engine.init_distributed`)
and passed down. A trained model's deployment config (:mod:`kdfiqa.models.deploy`) records the
evaluation transform it was validated with, so ``evaluate``/``predict``/``export`` of its checkpoint
feed it the same way.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Sampler

from .budget import Budget, parse_input_size
from .budget.presets import NO_BUDGET
from .config import RunConfig
from .engine.distributed import DistContext, init_distributed
from .errors import CheckpointError, ConfigError, DataError

__all__ = [
    "Labels",
    "RunResult",
    "validate",
    "build_model",
    "build_teacher",
    "build_student",
    "train",
    "pseudo_label",
    "self_train",
    "SelfTrained",
    "distill",
    "run_distill",
    "is_main_process",
]

log = logging.getLogger(__name__)

PSEUDO_LABELS = "pseudo_labels.csv"
MIN_VALIDATION = 3
"""The fewest validation images that can rank a model (SRCC and PLCC need three)."""


@dataclass(frozen=True)
class Labels:
    """A labels source: a CSV (formats in :mod:`kdfiqa.data.labels`) and the folder its names are
    relative to. :func:`pseudo_label` returns one; :func:`distill` and :func:`train` take one as
    ``pseudo`` and add it to the training share as given."""

    csv: Path
    root: Path
    score_range: tuple[float, float] | None = (0.0, 1.0)
    """Range every score must lie in (``None``: any finite score, as unclipped calibrated or raw
    linear-output pseudo-labels may fall outside [0, 1])."""

    def dataset(self, transform: Any = None, *, allow_outside_root: bool = False) -> Any:
        from .data import FIQADataset

        return FIQADataset(self.root, self.csv, transform=transform, allow_outside_root=allow_outside_root,
                           score_range=self.score_range)


@dataclass
class RunResult:
    """Where a training stage left its files and what it saw."""

    output_dir: Path
    checkpoint: Path
    """``best.pt`` (``last.pt`` when the run had no validation set)."""
    history: list[dict[str, Any]]
    config: RunConfig
    """The resolved configuration stored in the checkpoints."""

    @property
    def collapsed(self) -> bool:
        """Whether every validated epoch's predictions collapsed to a near-constant output (spread
        below :data:`~kdfiqa.metrics.COLLAPSE_SPREAD`), so no epoch could be kept as
        ``best.pt`` and :attr:`checkpoint` is a ``last.pt`` not worth deploying."""
        validated = [r for r in self.history if "spread" in r.get("val", {})]
        return bool(validated) and all(r.get("collapsed") for r in validated)


def is_main_process() -> bool:
    """True outside ``torchrun`` and on its rank 0: the process that prints and writes files."""
    return int(os.environ.get("RANK", "0")) == 0


def _context(config: RunConfig, ctx: DistContext | None) -> DistContext:
    return ctx if ctx is not None else init_distributed(config.train.device)


# -------------------------------------------------------------------------------------- validation


def _required(value: str | None, what: str) -> str:
    if not value:
        raise ConfigError(f"{what} is required")
    return value


def _existing(path: str | None, flag: str, kind: str) -> None:
    if path is None:
        return
    found = Path(path)
    if kind == "dir" and not found.is_dir():
        raise ConfigError(f"{flag} {path}: no such folder")
    if kind == "file" and not found.is_file():
        raise ConfigError(f"{flag} {path}: no such file")


def _label_sets(pseudo: Labels | Sequence[Labels] | None) -> list[Labels]:
    return [] if pseudo is None else [pseudo] if isinstance(pseudo, Labels) else list(pseudo)


def validate(config: RunConfig, command: str, *, pseudo: Labels | Sequence[Labels] | None = None,
             teacher_given: bool = False) -> None:
    """Every check that needs no model: required settings, combinations, files and folders.

    Values were checked when the config's sections were built; this adds what spans sections.
    ``pseudo``/``teacher_given`` say what a caller of :func:`distill` hands over directly.
    """
    data, distill_ = config.data, config.distill
    _check_model_name(_required(config.model.name, "a model to train: --model NAME (model.name)"))
    _required(data.root, "--root DIR (data.root), the folder of labeled images,")
    _required(data.csv, "--csv FILE (data.csv), the labels,")
    if pseudo is not None and data.pseudo_csv:
        given = ", ".join(str(labels.csv) for labels in _label_sets(pseudo))
        raise ConfigError(f"pseudo-labels given twice: data.pseudo_csv ({data.pseudo_csv}) and {given}; give one")
    if data.pseudo_root and not data.pseudo_csv:
        raise ConfigError("--pseudo-root is the image folder of --pseudo-csv; add --pseudo-csv FILE or drop it")
    if data.pseudo_csv and data.unlabeled and command == "distill":
        raise ConfigError("--pseudo-csv (pseudo-labels used as given) and --unlabeled (a folder for the "
                          "teacher to label) cannot be combined: give one; the CSV's image folder is --pseudo-root")
    if command == "train":
        if data.unlabeled and config.ssar.epochs == 0:
            raise ConfigError("train uses --unlabeled only for SSAR pretraining (set ssar.epochs > 0); "
                              "to train on pseudo-labels give --pseudo-csv FILE --pseudo-root DIR")
    else:
        online = distill_.loss is not None or bool(distill_.feature)
        has_teacher = teacher_given or bool(distill_.teachers)
        if not has_teacher and not (data.pseudo_csv or pseudo):
            raise ConfigError("no teacher: pass --teacher (a model name, timm:NAME, checkpoint or scores CSV) "
                              "or --pseudo-csv with pseudo-labels")
        if online and not has_teacher:
            raise ConfigError("--distill-loss/--feature-loss need a teacher: pass --teacher, or --distill-loss none")
        if (distill_.calibrate or distill_.self_train) and not data.unlabeled:
            raise ConfigError("--calibrate and --self-train act on the teacher's labels of --unlabeled DIR; "
                              "add --unlabeled (to calibrate a CSV, use kdfiqa pseudo-label --calibrate)")
        if distill_.view_cache and (distill_.feature or distill_.loss is None):
            raise ConfigError("--view-cache stores the teacher's scores for a distillation loss; it needs "
                              "--distill-loss and cannot serve --feature-loss (features are not cached)")
        first = str(distill_.teachers[0]) if distill_.teachers else ""
        if distill_.self_train and not first.endswith((".pt", ".pth")):
            raise ConfigError("--self-train retrains the teacher, so the first --teacher must be a kdfiqa checkpoint")
    for value, flag, kind in ((data.root, "--root", "dir"), (data.csv, "--csv", "file"),
                              (data.val_root, "--val-root", "dir"), (data.val_csv, "--val-csv", "file"),
                              (data.pseudo_csv, "--pseudo-csv", "file"), (data.pseudo_root, "--pseudo-root", "dir"),
                              (data.unlabeled, "--unlabeled", "dir"), (config.model.init, "--init", "file")):
        _existing(value, flag, kind)


def _check_model_name(name: str) -> None:
    """An unknown registered name (with close matches) or timm name, refused before anything is built."""
    from .models import model_info
    from .models.registry import TIMM_PREFIX

    if name.startswith(TIMM_PREFIX):
        import timm

        if not timm.is_model(name[len(TIMM_PREFIX):]):
            raise ConfigError(f"unknown timm model {name[len(TIMM_PREFIX):]!r} (timm.list_models() lists them)")
        return
    model_info(name)


def _check_split(config: RunConfig, count: int) -> None:
    """Refuse, before any model is built, a validation split too small to rank a model and a
    training share that gives no full batch."""
    from .data.datasets import validation_count

    data, train_cfg = config.data, config.train
    if data.val_csv:
        n_train = count
    else:
        n_val = validation_count(count, data.val_fraction, data.split_method)
        n_train = count - n_val
        if n_val < MIN_VALIDATION:
            raise ConfigError(
                f"--val-fraction {data.val_fraction:g} of the {count} labels in {data.csv} leaves {n_val} "
                f"validation image(s), fewer than the {MIN_VALIDATION} needed to rank a model: raise "
                f"--val-fraction (e.g. {min(0.5, MIN_VALIDATION / max(count, 1) + 0.01):.2f}) or pass --val-csv")
        if n_train < 1:
            raise ConfigError(f"--val-fraction {data.val_fraction:g} leaves no training image of the {count} "
                              f"in {data.csv}; lower --val-fraction")
    if train_cfg.drop_last and n_train < train_cfg.batch_size and data.samples_per_epoch is None:
        raise ConfigError(
            f"the training share has {n_train} labeled image(s), fewer than --batch-size {train_cfg.batch_size}, "
            f"so no full batch: lower --batch-size (e.g. {max(1, n_train)}) or keep the last partial batch "
            "with --set train.drop_last=false")


# ------------------------------------------------------------------------------------------ models


def build_model(config: RunConfig) -> nn.Module:
    """``config.model`` built through the registry with initial weights fixed by ``train.seed``
    (the same command and seed give the same weights), started from ``model.init`` when given."""
    from .checkpoint import load_weights
    from .models import create_model

    section = config.model
    kwargs = dict(section.kwargs)
    if section.pretrained:
        kwargs["pretrained"] = True
    if section.head is not None:
        kwargs["head"] = dict(section.head)
    torch.manual_seed(config.train.seed)
    model = create_model(_required(section.name, "--model NAME (model.name)"), **kwargs)
    if section.init:
        fresh = _head_state(model) if section.init_head == "fresh" else None
        load_weights(model, section.init)
        if fresh is not None:  # the checkpoint's backbone under the head this seed initialises
            model.head.load_state_dict(fresh)
    return model


def _head_state(model: nn.Module) -> dict[str, Tensor]:
    head = getattr(model, "head", None)
    if not isinstance(head, nn.Module):
        raise ConfigError(f"model.init_head=fresh: {type(model).__name__} has no .head module to start afresh; "
                          "use a kdfiqa FIQA model or model.init_head=keep")
    return {key: value.clone() for key, value in head.state_dict().items()}


def _hw(size: Any) -> list[int]:
    _, h, w = parse_input_size(size)
    return [h, w]


def resolve_transforms(config: RunConfig, model: nn.Module, teacher_size: Sequence[int] | None = None,
                       teacher_normalize: str | None = None) -> RunConfig:
    """A copy of ``config`` with ``model.input`` and both transform specs filled in.

    ``model.input`` defaults to the model's deployment size; a transform without ``size`` gets it;
    the training transform defaults to resize + flip and the evaluation one to a resize, both with
    the training transform's normalisation. ``teacher_size`` adds the teacher's view of the same
    crop to the training transform (unless it names one already), normalised as the teacher was
    trained, ``teacher_normalize``; a teacher of unknown size whose normalisation differs from the
    student's gets its view at the student's size.
    """
    from .models.deploy import deploy_config

    size = _hw(config.model.input or tuple(deploy_config(model).input_size))
    train_spec = dict(config.data.train_transform or {"mode": "resize", "flip": True})
    normalize = train_spec.get("normalize", deploy_config(model).normalize)
    train_spec.setdefault("normalize", normalize)
    evaluation = dict(config.data.eval_transform or {"mode": "resize"})
    evaluation.setdefault("normalize", normalize)
    for spec in (train_spec, evaluation):
        if spec.get("mode") != "native" and "preset" not in spec:
            spec.setdefault("size", size)
    if teacher_size is None and teacher_normalize not in (None, normalize):
        teacher_size = size
    if teacher_size is not None:
        train_spec.setdefault("teacher_size", _hw(teacher_size))
    if teacher_normalize is not None and "teacher_size" in train_spec:
        train_spec.setdefault("teacher_normalize", teacher_normalize)
    return dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, input=size),
        data=dataclasses.replace(config.data, train_transform=train_spec, eval_transform=evaluation),
    )


def _budget(config: RunConfig, command: str = "distill") -> Budget:
    """The budget a run checks: ``distill.budget``, which for ``distill`` defaults to the default
    budget and for ``train`` to none."""
    from .budget.presets import DEFAULT_BUDGET, as_budget

    return as_budget(config.distill.budget or (DEFAULT_BUDGET if command == "distill" else "none"))


def deploy_sizes(config: RunConfig, budget: Budget) -> list[tuple[int, int, int]]:
    """Where the student's budget is checked: at each size it runs at (``distill.deploy_input``, else
    the training input) or the budget's deployment size where that is larger
    (:meth:`~kdfiqa.budget.Budget.sizes_for`: ``vquala2025`` always checks 224x224), plus the
    size the evaluation transform feeds the network (the checkpoint's deployment size) unless one of
    those covers it in height and width."""
    from .data.transforms import expanded_spec

    train_size = parse_input_size(tuple(config.model.input))
    given = [parse_input_size(s) for s in config.distill.deploy_input] or [train_size]
    sizes = list(dict.fromkeys(s for size in given for s in budget.sizes_for(size)))
    # the evaluation transform's view, presets expanded: the size the checkpoint deploys at
    spec = expanded_spec(config.data.eval_transform) if config.data.eval_transform else {}
    if spec.get("mode") != "native" and spec.get("size") is not None:
        evaluation = parse_input_size(tuple(_hw(spec["size"])))
        if not any(s[1] >= evaluation[1] and s[2] >= evaluation[2] for s in sizes):
            sizes.append(evaluation)
    return list(dict.fromkeys(sizes))


def build_student(config: RunConfig, model: nn.Module | None = None, command: str = "distill") -> Any:
    """The student of ``config``, budget-checked at :func:`deploy_sizes` before any training step
    (over budget: :class:`~kdfiqa.budget.BudgetExceeded`, unless ``distill.allow_over_budget``)."""
    from .distill import Student

    model = model if model is not None else build_model(config)
    config = resolve_transforms(config, model)
    budget = _budget(config, command)
    student = Student(model, budget=budget, input_sizes=deploy_sizes(config, budget),
                      allow_over_budget=config.distill.allow_over_budget)
    if student.within_budget and budget is not NO_BUDGET and is_main_process():
        costs = "; ".join(f"{'x'.join(map(str, r.input_size[1:]))}: {r.gflops:.4f} GFLOPs, {r.params:,} params"
                          for r in student.reports)
        log.info("budget: %s fits %s at its deployment size (%s)", config.model.name, budget.describe(), costs)
    return student


def build_teacher(config: RunConfig, ctx: DistContext | None = None,
                  sources: Sequence[str] | None = None) -> Any:
    """The frozen teacher of ``distill.teachers`` (or ``sources``), built once, on ``ctx``'s device."""
    from .distill import Teacher

    teachers = list(sources if sources is not None else config.distill.teachers)
    if not teachers:
        return None
    return Teacher(teachers, input_size=config.distill.teacher_input, device=_context(config, ctx).device)


# -------------------------------------------------------------------------------------------- data


def labeled_data(config: RunConfig, pseudo: Labels | Sequence[Labels] | None = None) -> tuple[Dataset, Dataset]:
    """(train, validation) data sets of a config whose transforms are resolved.

    Validation is ``data.val_csv`` or a ``val_fraction`` split of ``data.csv`` seeded by
    ``split_seed`` (drawn by ``split_method``); pseudo-labels (``pseudo``: one set or several sets
    of the same images, each image then once per set; else ``data.pseudo_csv`` under
    ``data.pseudo_root``) join the training part only. Every image is decoded once up front, so a
    bad file fails the run before its first step.
    """
    from .data import FIQADataset, build_transform, split_dataset, validate_images

    data = config.data
    train_tf, eval_tf = build_transform(data.train_transform), build_transform(data.eval_transform)
    outside = data.allow_outside_root
    labeled = FIQADataset(data.root, data.csv, transform=train_tf, allow_outside_root=outside)
    if data.val_csv:
        train_set, val = labeled, FIQADataset(data.val_root or data.root, data.val_csv, transform=eval_tf,
                                              allow_outside_root=outside)
        _refuse_shared_images(train_set.samples, data.csv, {f"the validation set ({data.val_csv})": val},
                              kind="training images")
    else:
        train_set, val = split_dataset(labeled, data.val_fraction, data.split_seed, data.split_method)
        val = val.with_transform(eval_tf)
    if pseudo is None and data.pseudo_csv:
        pseudo = Labels(Path(data.pseudo_csv), Path(data.pseudo_root or data.root))
    sets = _label_sets(pseudo)
    if sets:
        extra = [labels.dataset(train_tf, allow_outside_root=outside) for labels in sets]
        for labels, dataset in zip(sets, extra):
            _refuse_shared_images(dataset.samples, labels.csv,
                                   {"the validation set": val, "the labeled training share": train_set})
        train_set = FIQADataset.merge([train_set, *extra], repeats=range(1, len(sets) + 1))
        log.info("training on %d labeled + %s pseudo-labeled images", len(train_set) - sum(map(len, extra)),
                 " + ".join(str(len(e)) for e in extra))
    skipped = validate_images([train_set, val], skip_bad=data.skip_bad)  # every bad file of both, listed at once
    if skipped:
        log.warning("skipped %d unreadable image(s) (--skip-bad); training on %d, validating on %d",
                    skipped, len(train_set), len(val))
    return train_set, val


def _refuse_shared_images(samples: Iterable[Any], source: Path | str, shares: Mapping[str, Any], *,
                          kind: str = "pseudo-labels") -> None:
    """Refuse ``samples`` (``kind``, from ``source``: a CSV or a folder) that are images of any of
    ``shares`` (description → data set: the validation set, the labeled training share): training
    on a validation image would inflate the metrics ``best.pt`` is chosen by, and a labeled image
    would be trained on twice."""
    where = {Path(os.path.realpath(s.path)): (share, s.name) for share, data in shares.items() for s in data.samples}
    for sample in samples:
        hit = where.get(Path(os.path.realpath(sample.path)))
        if hit is not None:
            share, name = hit
            raise DataError(f"{source}: image {sample.path} is also in {share} (as {name!r}); {kind} must come "
                            "from other images: remove it from one of them")


def _count_labels(config: RunConfig) -> int:
    from .data import read_labels

    return len(read_labels(config.data.csv))


def _sampler(config: RunConfig, train_set: Dataset) -> Sampler[int] | None:
    """SSUS (``data.sampler``), fixed-length epochs (``data.samples_per_epoch``) or ``None`` (the
    Trainer's shuffled passes)."""
    from .data.samplers import FixedLengthSampler, SSUSSampler

    if config.data.sampler == "ssus":
        return SSUSSampler(train_set.scores, num_strata=config.data.strata, seed=config.train.seed)
    if config.data.samples_per_epoch is not None:
        return FixedLengthSampler(len(train_set), config.data.samples_per_epoch, seed=config.train.seed)
    return None


# ---------------------------------------------------------------------------------------- training


def _preflight(config: RunConfig, command: str, *, resume: bool, overwrite: bool,
               pseudo: Labels | Sequence[Labels] | None = None,
               teacher_given: bool = False) -> None:
    """What every stage checks before it builds a model: the run folder, the config as a whole
    (:func:`validate`) and the size of the validation split."""
    _check_output(config, resume, overwrite)
    validate(config, command, pseudo=pseudo, teacher_given=teacher_given)
    _check_split(config, _count_labels(config))


def _check_output(config: RunConfig, resume: bool, overwrite: bool) -> None:
    """The run folder (:func:`kdfiqa.outputs.check_output_dir`): writable, none of the run's inputs,
    and, unless ``resume`` or ``overwrite``, holding no earlier run; ``resume`` needs a ``last.pt``
    file of this run (of its final stage or of an earlier one)."""
    from .outputs import check_output_dir

    out = Path(config.train.output_dir)
    if resume and not any(p.is_file() for p in out.rglob("last.pt")):
        raise CheckpointError(f"--resume: no last.pt file under {out}; check --out, or start without --resume")
    data = config.data
    inputs = [data.csv, data.val_csv, data.pseudo_csv, config.model.init, *map(str, config.distill.teachers)]
    check_output_dir(out, inputs=inputs, resume=resume, overwrite=overwrite)
    if overwrite and not resume and is_main_process():  # a new run: nothing of an earlier one stays
        _remove_earlier_stages(out, [Path(p).resolve() for p in inputs if p])


def _remove_earlier_stages(out: Path, inputs: list[Path]) -> None:
    """Remove what an earlier run's stages left in ``out``: the SSAR and self-training stage folders,
    its pseudo-labels and its teacher view cache (the run files themselves go when training starts),
    keeping any that holds one of this run's ``inputs`` (a teacher of an earlier round, say)."""
    import shutil

    def holds_input(path: Path) -> bool:
        path = path.resolve()
        return any(p == path or path in p.parents for p in inputs)

    for stage in [out / "ssar", *sorted(out.glob("self_train_*"))]:
        if stage.is_dir() and not holds_input(stage):
            shutil.rmtree(stage)
    for name in (PSEUDO_LABELS, VIEW_CACHE):
        if not holds_input(out / name):
            (out / name).unlink(missing_ok=True)


RESUME_KEYS = {
    "model": ("name", "kwargs", "head", "input"),
    "loss": ("task",),
    "distill": ("teacher_input", "loss", "feature", "view_cache"),
    "train": ("epochs", "batch_size", "drop_last", "optimizer", "lr", "weight_decay", "momentum", "betas",
              "scheduler", "warmup_epochs", "warmup_start_factor", "min_lr", "step_size", "gamma",
              "plateau_patience", "ema_decay", "seed"),
    "data": ("root", "csv", "val_root", "val_csv", "val_fraction", "split_seed", "sampler", "strata",
             "samples_per_epoch", "pseudo_csv", "pseudo_root", "train_transform"),
}
"""Settings that shape what a run trains, towards what, on which schedule and data order: ``--resume``
refuses to change them silently (the model first, so that a different model is named as such)."""


def _check_unchanged(config: RunConfig, last: Path) -> None:
    """Refuse to resume ``last`` with a setting of :data:`RESUME_KEYS` changed, naming it."""
    from .checkpoint import load_checkpoint

    stored = load_checkpoint(last).get("config") or {}
    current = config.to_dict()
    for section, keys in RESUME_KEYS.items():
        before = stored.get(section) if isinstance(stored.get(section), dict) else {}
        for key in keys:
            if key in before and before[key] != current[section][key]:
                was = f"--resume: {section}.{key} was {before[key]!r} in {last}, now {current[section][key]!r}"
                if section == "model" and key != "input":  # last.pt holds that model's weights: none other resumes
                    raise ConfigError(f"{was}; a run resumes with its own model: resume with the run's settings, "
                                      "or start a new run (another --out, or --overwrite)")
                raise ConfigError(
                    f"{was}; it changes the objective, the schedule or the data order: resume with the run's "
                    "settings, or add --allow-changes to resume with the new one")


def _fit(objective: nn.Module, train_set: Dataset, val: Dataset | None, config: RunConfig, ctx: DistContext, *,
         sampler: Sampler[int] | None = None, resume: bool = False, allow_changes: bool = False) -> RunResult:
    from .engine import Trainer
    from .outputs import RUN_FILES

    train_config = config.train
    if (config.data.eval_transform or {}).get("mode") == "native" and train_config.val_batch_size is None:
        train_config = dataclasses.replace(train_config, val_batch_size=1)
    config = dataclasses.replace(config, train=train_config)
    output_dir = Path(train_config.output_dir)
    last = output_dir / "last.pt"
    resume_from = last if resume and last.is_file() else None
    if resume_from is not None and not allow_changes:
        _check_unchanged(config, resume_from)
    if resume_from is None and ctx.is_main:  # a new run: no file of an earlier one may pass for its own
        for name in RUN_FILES:
            (output_dir / name).unlink(missing_ok=True)
    ctx.barrier()
    if ctx.is_main:
        size = "x".join(map(str, _hw(config.model.input)))
        log.info("%s: %s at %s on %s; %d training and %d validation images; %d epochs of batch %d; "
                 "output %s%s", type(objective).__name__.lower(), config.model.name, size, ctx.device,
                 len(train_set), len(val) if val is not None else 0, train_config.epochs, train_config.batch_size,
                 output_dir, " (resuming)" if resume_from is not None else "")
    trainer = Trainer(objective, train_set, val, train_config, sampler=sampler, ctx=ctx,
                      run_config={k: v for k, v in config.to_dict().items() if k != "train"})
    history = trainer.fit(resume=resume_from)
    best = output_dir / "best.pt"
    return RunResult(output_dir, best if best.is_file() else last, history, config)


def _stage(config: RunConfig, name: str, **train_changes: Any) -> RunConfig:
    out = str(Path(config.train.output_dir) / name)
    return dataclasses.replace(config, train=dataclasses.replace(config.train, output_dir=out, **train_changes))


def _ssar_pretrain(config: RunConfig, model: nn.Module, val: Dataset, ctx: DistContext, resume: bool) -> Path:
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
    result = _fit(SSARObjective(model, margin_scale=config.ssar.margin), pairs, val, stage, ctx, resume=resume)
    return result.output_dir / "last.pt"


def train(config: RunConfig, *, pseudo: Labels | None = None, ctx: DistContext | None = None,
          resume: bool = False, allow_changes: bool = False, overwrite: bool = False) -> RunResult:
    """Train ``config.model`` on the labeled data (and ``pseudo``) with the task loss ``loss.task``.

    With ``ssar.epochs > 0`` the model is first pretrained by SSAR (``output_dir/ssar``) and the
    supervised run starts from those weights. ``resume`` continues the run in ``train.output_dir``
    (refusing a changed schedule or data setting unless ``allow_changes``).
    """
    from .checkpoint import load_weights
    from .distill import Supervised

    _preflight(config, "train", resume=resume, overwrite=overwrite, pseudo=pseudo)
    ctx = _context(config, ctx)
    model = build_model(config)
    if _budget(config, "train") is not NO_BUDGET:  # given a budget, train refuses an over-budget model too
        build_student(config, model, command="train")
    config = resolve_transforms(config, model)
    train_set, val = labeled_data(config, pseudo)
    if config.ssar.epochs > 0:
        load_weights(model, _ssar_pretrain(config, model, val, ctx, resume), weights="model")
    return _fit(Supervised(model, config.loss.task), train_set, val, config, ctx,
                sampler=_sampler(config, train_set), resume=resume, allow_changes=allow_changes)


# ----------------------------------------------------------------------------------- pseudo-labels


def pseudo_label(teacher: Any, images: str | os.PathLike[str], out_csv: str | os.PathLike[str], *,
                 calibrate_on: Labels | None = None, holdout: tuple[float, int, str] | None = None,
                 clip: bool = True, raw_if_degenerate: bool = False, normalize: str | None = None,
                 batch_size: int = 32, num_workers: int = 0, ctx: DistContext | None = None,
                 overwrite: bool = False) -> Labels:
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
    kept, with a warning). Under ``torchrun`` rank 0 labels and the others wait.
    """
    from .data import UnlabeledImageFolder, build_transform, split_dataset
    from .distill import Teacher
    from .distill import pseudo_label as label_with_teacher
    from .outputs import check_output_file

    teacher = teacher if isinstance(teacher, Teacher) else Teacher(teacher)
    check_output_file(out_csv, inputs=[*teacher.sources, calibrate_on.csv if calibrate_on else None, images],
                      overwrite=overwrite, flag="out_csv", overwrite_flag="overwrite=True")
    spec = teacher.eval_transform
    transform = build_transform(spec if normalize is None else {**spec, "normalize": normalize})
    folder = UnlabeledImageFolder(images, transform=transform)
    calibration = None
    if calibrate_on is not None:
        calibration = calibrate_on.dataset(transform)
        if holdout is not None:
            calibration = split_dataset(calibration, *holdout)[0]
    ctx = ctx if ctx is not None else init_distributed("cpu")
    if ctx.is_main:
        label_with_teacher(teacher, folder, out_csv, calibrate_on=calibration, clip=clip,
                           raw_if_degenerate=raw_if_degenerate, batch_size=batch_size, num_workers=num_workers)
    ctx.barrier()
    # kdfiqa wrote these scores: unclipped calibrations and linear-output teachers may leave [0, 1]
    return Labels(Path(out_csv), Path(images), score_range=None)


def _refuse_labeled_in_unlabeled(config: RunConfig) -> None:
    """Before the teacher scores ``data.unlabeled``: none of its images may be a labeled or a
    validation image (:func:`_refuse_shared_images`), which would otherwise fail only after labelling."""
    from .data import FIQADataset, UnlabeledImageFolder

    data = config.data
    outside = data.allow_outside_root
    shares = {f"the labels ({data.csv})": FIQADataset(data.root, data.csv, allow_outside_root=outside)}
    if data.val_csv:
        shares[f"the validation set ({data.val_csv})"] = FIQADataset(data.val_root or data.root, data.val_csv,
                                                                     allow_outside_root=outside)
    folder = UnlabeledImageFolder(_required(data.unlabeled, "--unlabeled DIR"), allow_outside_root=outside)
    _refuse_shared_images(folder.samples, data.unlabeled, shares)


def _label_unlabeled(config: RunConfig, teacher: Any, out_csv: Path, ctx: DistContext) -> Labels:
    _refuse_labeled_in_unlabeled(config)
    data, distill_ = config.data, config.distill
    calibrate = Labels(Path(data.csv), Path(data.root)) if distill_.calibrate else None
    held_out = not data.val_csv and distill_.calibrate_on == "train_split"
    return pseudo_label(teacher, _required(data.unlabeled, "--unlabeled DIR"), out_csv, calibrate_on=calibrate,
                        holdout=(data.val_fraction, data.split_seed, data.split_method) if held_out else None,
                        clip=distill_.clip_pseudo_labels, raw_if_degenerate=distill_.raw_if_degenerate,
                        batch_size=config.train.batch_size, num_workers=config.train.num_workers, ctx=ctx,
                        overwrite=True)  # the run's own file: the run folder's check came first


def _teacher_run_config(config: RunConfig, teacher: str, output_dir: Path) -> RunConfig:
    """The config that retrains ``teacher`` (a kdfiqa checkpoint): its own stored run config, with
    this run's labeled data, starting from its weights."""
    from .checkpoint import load_checkpoint

    stored = load_checkpoint(teacher).get("config") or {}
    base = RunConfig.from_dict(stored, source=f"{teacher} config") if stored else config
    return dataclasses.replace(
        base,
        model=dataclasses.replace(base.model, init=str(teacher), init_head=config.distill.self_train_head,
                                  pretrained=False),
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
    ctx = _context(config, ctx)
    rounds = []
    for round_ in range(1, config.distill.self_train + 1):
        stage_dir = Path(config.train.output_dir) / f"self_train_{round_}"
        labels = _label_unlabeled(config, build_teacher(config, ctx, [teacher]), stage_dir / PSEUDO_LABELS, ctx)
        retrain = _teacher_run_config(config, teacher, stage_dir / "teacher")
        resumable = resume and (stage_dir / "teacher" / "last.pt").is_file()
        teacher = str(train(retrain, pseudo=labels, ctx=ctx, resume=resumable, overwrite=overwrite).checkpoint)
        rounds.append(labels)
    return SelfTrained(teacher, tuple(rounds))


# ----------------------------------------------------------------------------------- distillation


def distill(config: RunConfig, *, teacher: Any = None, pseudo: Labels | Sequence[Labels] | None = None,
            student: Any = None,
            ctx: DistContext | None = None, resume: bool = False, allow_changes: bool = False,
            overwrite: bool = False) -> RunResult:
    """Train the student ``config.model`` under ``teacher`` (a :class:`~kdfiqa.distill.Teacher`;
    default: built from ``distill.teachers``) on labels ∪ ``pseudo`` (default: ``data.pseudo_csv``).

    The student (``student``, a :class:`~kdfiqa.distill.Student`, or built here) is checked against
    ``distill.budget`` at its deployment size(s) before anything trains. With ``distill.loss`` and
    ``distill.feature`` empty it learns from labels ∪ pseudo-labels only (offline distillation);
    otherwise through :class:`~kdfiqa.distill.Distiller`, the teacher seeing its own view of each
    crop at its resolution; with ``distill.view_cache = K`` the teacher scores K stored views of
    every training image once (:func:`~kdfiqa.distill.build_view_cache`, kept in
    ``output_dir/teacher_views.pt``) and training reads those scores instead of running it.
    """
    _preflight(config, "distill", resume=resume, overwrite=overwrite, pseudo=pseudo,
               teacher_given=teacher is not None)
    _refuse_other_teacher_size(config, teacher)
    ctx = _context(config, ctx)
    return _distill(config, teacher=teacher, pseudo=pseudo, student=_checked_student(config, student), ctx=ctx,
                    resume=resume, allow_changes=allow_changes, overwrite=overwrite)


def _refuse_other_teacher_size(config: RunConfig, teacher: Any) -> None:
    """A given teacher runs at its own size: a ``distill.teacher_input`` that says otherwise is refused
    rather than ignored."""
    own = getattr(teacher, "input_size", None)
    if config.distill.teacher_input is None or own is None:
        return
    asked = parse_input_size(config.distill.teacher_input)
    if asked != own:
        raise ConfigError(f"distill.teacher_input is {'x'.join(map(str, asked[1:]))}, but the given teacher runs at "
                          f"{'x'.join(map(str, own[1:]))}: build it with Teacher(..., input_size={asked[1:]}) or "
                          "leave distill.teacher_input out")


def _checked_student(config: RunConfig, student: Any) -> Any:
    """The student of a run, checked at the run's own deployment sizes and budget
    (:func:`build_student`), whether built here or given (a :class:`~kdfiqa.distill.Student`, checked
    where it was built, or a bare model); a given Student's ``allow_over_budget`` is kept."""
    from .distill import Student

    if student is None:
        return build_student(config)
    if isinstance(student, Student) and student.allow_over_budget and not config.distill.allow_over_budget:
        config = dataclasses.replace(config, distill=dataclasses.replace(config.distill, allow_over_budget=True))
    return build_student(config, model=student.model if isinstance(student, Student) else student)


def _distill(config: RunConfig, *, teacher: Any, pseudo: Labels | Sequence[Labels] | None, student: Any, ctx: DistContext,
             resume: bool, allow_changes: bool, overwrite: bool) -> RunResult:
    """:func:`distill` after its checks (which :func:`run_distill` has made already)."""
    from .distill import Distiller, Supervised, Teacher
    from .distill.view_cache import CachedTeacher

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
        from .distill.score_table import ScoreTable

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
    return _fit(objective, train_set, val, config, ctx, sampler=_sampler(config, train_set), resume=resume,
                allow_changes=allow_changes)


VIEW_CACHE = "teacher_views.pt"


def _cached_views(config: RunConfig, teacher: Any, train_set: Dataset, ctx: DistContext, *,
                  rebuild: bool = False) -> Dataset:
    """``train_set`` as :class:`~kdfiqa.distill.CachedViews` of the run's view cache, built once on
    rank 0 when the run folder has none (or ``rebuild``: a run started over); a cache of another
    teacher or transform is refused."""
    from .distill.view_cache import CachedViews, ViewCache, build_view_cache, teacher_fingerprint

    path = Path(config.train.output_dir) / VIEW_CACHE
    if ctx.is_main and (rebuild or not path.is_file()):
        log.info("teacher: scoring %d stored views of each of %d training images once -> %s",
                 config.distill.view_cache, len(train_set), path)
        build_view_cache(teacher, train_set, views=config.distill.view_cache, batch_size=config.train.batch_size,
                         num_workers=config.train.num_workers, seed=config.train.seed).save(path)
    ctx.barrier()
    cache = ViewCache.load(path, teacher=teacher_fingerprint(teacher), transform=train_set.transform.spec)
    return CachedViews(train_set, cache)


def run_distill(config: RunConfig, *, ctx: DistContext | None = None, resume: bool = False,
                allow_changes: bool = False, overwrite: bool = False) -> RunResult:
    """``kdfiqa distill``: check the student's budget, build the teacher once, self-train it and have
    it label ``data.unlabeled`` when asked, then :func:`distill`."""
    _preflight(config, "distill", resume=resume, overwrite=overwrite)
    ctx = _context(config, ctx)
    student = build_student(config)
    earlier: tuple[Labels, ...] = ()
    if config.data.unlabeled and config.distill.self_train:
        teachers = list(config.distill.teachers)
        rounds = self_train(config, teachers[0], ctx=ctx, resume=resume, overwrite=overwrite)
        config = dataclasses.replace(config, distill=dataclasses.replace(
            config.distill, teachers=[rounds.teacher, *teachers[1:]]))
        earlier = rounds.pseudo if config.distill.pseudo_sets == "all" else ()
    teacher = build_teacher(config, ctx)
    pseudo = ([*earlier, _label_unlabeled(config, teacher, Path(config.train.output_dir) / PSEUDO_LABELS, ctx)]
              if config.data.unlabeled else None)
    return _distill(config, teacher=teacher, pseudo=pseudo, student=student, ctx=ctx, resume=resume,
                    allow_changes=allow_changes, overwrite=overwrite)
