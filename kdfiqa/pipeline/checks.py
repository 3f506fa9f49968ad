"""Everything a stage checks before it builds a model: required settings and their combinations, files
and folders, the validation split, the run folder, and what ``--resume`` may not change."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from ..config import SECTIONS, RunConfig
from ..data.transform_spec import TransformSpec
from ..engine.distributed import is_main_process
from ..errors import CheckpointError, ConfigError
from ..size import Size, format_size
from .results import PSEUDO_LABELS, VIEW_CACHE, Labels, label_sets

__all__ = ["validate", "preflight", "check_unchanged", "refuse_other_teacher_size", "required", "RESUME_KEYS", "MIN_VALIDATION"]

MIN_VALIDATION = 3
"""The fewest validation images that can rank a model (SRCC and PLCC need three)."""


def required(value: str | None, what: str) -> str:
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
    if kind == "weights" and not found.is_file():
        from ..models.model_folder import is_model_folder

        if not is_model_folder(found):
            raise ConfigError(f"{flag} {path}: no such checkpoint file or model folder (model.safetensors and "
                              "config.json)")


def validate(config: RunConfig, command: str, *, pseudo: Labels | Sequence[Labels] | None = None,
             teacher_given: bool = False) -> None:
    """Every check that needs no model: required settings, combinations, files and folders.

    Values were checked when the config's sections were built; this builds what they name
    (:meth:`RunConfig.validate`) and adds what spans sections. ``pseudo``/``teacher_given`` say what
    a caller of :func:`distill` hands over directly.
    """
    config.validate()
    data, distill_ = config.data, config.distill
    _check_model_name(required(config.model.name, "a model to train: --model NAME (model.name)"))
    required(data.root, "--root DIR (data.root), the folder of labeled images,")
    required(data.csv, "--csv FILE (data.csv), the labels,")
    if pseudo is not None and data.pseudo_csv:
        given = ", ".join(str(labels.csv) for labels in label_sets(pseudo))
        raise ConfigError(f"pseudo-labels given twice: data.pseudo_csv ({data.pseudo_csv}) and {given}; give one")
    if data.pseudo_csv and data.unlabeled and command == "distill":
        raise ConfigError("--pseudo-csv (pseudo-labels used as given) and --unlabeled (a folder for the "
                          "teacher to label) cannot be combined: give one; the CSV's image folder is --pseudo-root")
    if command == "train":
        if data.train_transform is not None and TransformSpec.parse(data.train_transform).alters_quality:
            raise ConfigError("data.train_transform.quality_augment alters the training images, whose labels "
                              "then describe another image: train has no teacher to score them; use kdfiqa "
                              "distill with --distill-loss, or drop quality_augment")
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
        _check_unlabeled_use(config)
        first = str(distill_.teachers[0]) if distill_.teachers else ""
        if distill_.self_train and not first.endswith((".pt", ".pth")):
            raise ConfigError("--self-train retrains the teacher, so the first --teacher must be a kdfiqa checkpoint")
    for value, flag, kind in ((data.root, "--root", "dir"), (data.csv, "--csv", "file"),
                              (data.val_root, "--val-root", "dir"), (data.val_csv, "--val-csv", "file"),
                              (data.pseudo_csv, "--pseudo-csv", "file"), (data.pseudo_root, "--pseudo-root", "dir"),
                              (data.unlabeled, "--unlabeled", "dir"), (config.model.init, "--init", "weights")):
        _existing(value, flag, kind)


def _check_unlabeled_use(config: RunConfig) -> None:
    """The settings of unlabeled images used online that span sections: ``--unlabeled-use`` needs the
    images, ``--labeled-per-batch`` needs them used online, fits the batch and draws its own epochs."""
    data, distill_ = config.data, config.distill
    if distill_.unlabeled_use != "pseudo" and not data.unlabeled:
        raise ConfigError(f"--unlabeled-use {distill_.unlabeled_use} trains on the images of --unlabeled DIR; "
                          "add --unlabeled")
    if distill_.unlabeled_use == "online" and data.sampler == "ssus":
        raise ConfigError("--sampler ssus draws by label, and --unlabeled-use online adds images without one; "
                          "drop --sampler or use --labeled-per-batch N")
    if distill_.unlabeled_use == "online" and distill_.calibrate:
        raise ConfigError("--calibrate maps pseudo-labels, and --unlabeled-use online makes none; use "
                          "--calibrate-online for the teacher's online outputs, or --unlabeled-use both")
    per_batch = distill_.labeled_per_batch
    if per_batch is None:
        return
    if distill_.unlabeled_use == "pseudo":
        raise ConfigError("--labeled-per-batch splits each batch between the labels and the --unlabeled images "
                          "trained on online; add --unlabeled-use online (or both)")
    if per_batch > config.train.batch_size:
        raise ConfigError(f"--labeled-per-batch {per_batch} exceeds --batch-size {config.train.batch_size}; "
                          "give at most the batch size")
    if data.sampler is not None:
        raise ConfigError("--labeled-per-batch draws its own batches; drop --sampler")


def _check_model_name(name: str) -> None:
    """An unknown registered name (with close matches) or timm name, refused before anything is built."""
    from ..models import model_info
    from ..models.registry import TIMM_PREFIX

    if name.startswith(TIMM_PREFIX):
        import timm

        if not timm.is_model(name[len(TIMM_PREFIX):]):
            raise ConfigError(f"unknown timm model {name[len(TIMM_PREFIX):]!r} (timm.list_models() lists them)")
        return
    model_info(name)


def _check_split(config: RunConfig, count: int) -> None:
    """Refuse, before any model is built, a validation split too small to rank a model and a
    training share that gives no full batch."""
    from ..data.datasets import validation_count

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
    if (train_cfg.drop_last and n_train < train_cfg.batch_size and data.samples_per_epoch is None
            and config.distill.labeled_per_batch is None):
        raise ConfigError(
            f"the training share has {n_train} labeled image(s), fewer than --batch-size {train_cfg.batch_size}, "
            f"so no full batch: lower --batch-size (e.g. {max(1, n_train)}) or keep the last partial batch "
            "with --set train.drop_last=false")


def _count_labels(config: RunConfig) -> int:
    from ..data import read_labels

    return len(read_labels(config.data.csv))


def preflight(config: RunConfig, command: str, *, resume: bool, overwrite: bool,
               pseudo: Labels | Sequence[Labels] | None = None,
               teacher_given: bool = False) -> None:
    """What every stage checks before it builds a model: the experiment trackers' packages
    (``--log-to``), the run folder, the config as a whole (:func:`validate`) and the size of the
    validation split."""
    from ..engine.tracking import check_backends

    check_backends(config.train.log_to)
    _check_output(config, resume, overwrite)
    validate(config, command, pseudo=pseudo, teacher_given=teacher_given)
    _check_split(config, _count_labels(config))


def _check_output(config: RunConfig, resume: bool, overwrite: bool) -> None:
    """The run folder (:func:`kdfiqa.outputs.check_output_dir`): writable, none of the run's inputs,
    and, unless ``resume`` or ``overwrite``, holding no earlier run; ``resume`` needs a ``last.pt``
    file of this run (of its final stage or of an earlier one)."""
    from ..outputs import check_output_dir

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


RESUME_KEYS: dict[str, dict[str, str]] = {
    section: {f.name: f.metadata["resume"] for f in dataclasses.fields(cls) if f.metadata["resume"] != "allow"}
    for section, cls in SECTIONS.items()
}
"""``{section: {field: rule}}``, the settings that shape what a run trains, towards what, on which
schedule and data order, from each field's declared ``resume`` (:data:`kdfiqa.options.RESUME_RULES`):
``--resume`` refuses to change them silently (the model first, so that a different model is named as
such)."""


def check_unchanged(config: RunConfig, last: Path, *, stored: dict[str, Any] | None = None) -> None:
    """Refuse to resume ``last`` with a setting of :data:`RESUME_KEYS` changed, naming it; ``stored``:
    the run config ``last`` holds, when the caller has read it."""
    if stored is None:
        from ..checkpoint import load_checkpoint

        stored = load_checkpoint(last).get("config") or {}
    current = config.to_dict()
    for section, rules in RESUME_KEYS.items():
        before = stored.get(section) if isinstance(stored.get(section), dict) else {}
        for key, rule in rules.items():
            if key in before and before[key] != current[section][key]:
                was = f"--resume: {section}.{key} was {before[key]!r} in {last}, now {current[section][key]!r}"
                if rule == "model":  # last.pt holds that model's weights: none other resumes
                    raise ConfigError(f"{was}; a run resumes with its own model: resume with the run's settings, "
                                      "or start a new run (another --out, or --overwrite)")
                raise ConfigError(
                    f"{was}; it changes the objective, the schedule or the data order: resume with the run's "
                    "settings, or add --allow-changes to resume with the new one")


def refuse_other_teacher_size(config: RunConfig, teacher: Any) -> None:
    """A given teacher runs at its own size: a ``distill.teacher_input`` that says otherwise is refused
    rather than ignored."""
    own = getattr(teacher, "input_size", None)
    if config.distill.teacher_input is None or own is None:
        return
    asked = Size.parse(config.distill.teacher_input, "distill.teacher_input")
    if asked.chw != tuple(own):
        raise ConfigError(f"distill.teacher_input is {asked}, but the given teacher runs at {format_size(own)}: "
                          f"build it with Teacher(..., input_size={asked.hw}) or leave distill.teacher_input out")
