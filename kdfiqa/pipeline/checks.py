"""Everything a stage checks before it builds a model: required settings and their combinations, files
and folders, the validation split, the run folder, and what ``--resume`` may not change."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Sequence

from ..config import SECTIONS, RunConfig, load_stored_config
from ..data.transform_spec import TransformSpec
from ..errors import CheckpointError, ConfigError, spelled
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
    if kind == "images" and not found.is_dir():
        from ..data.image_sources import is_image_source
        from ..data.tar_shards import is_shard_spec

        if not is_image_source(path):
            raise ConfigError(f"{flag} {path}: no such folder (give a folder, an image list file .txt or tar "
                              "shards data-{000..009}.tar)")
        if not is_shard_spec(path) and not found.is_file():  # shards are checked one by one when listed
            raise ConfigError(f"{flag} {path}: no such image list file")
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
    data, distill_ = config.data, config.distill
    required(data.root, f"{spelled('--root DIR (data.root)', 'data.root')}, the folder of labeled images,")
    required(data.csv, f"{spelled('--csv FILE (data.csv)', 'data.csv')}, the labels,")
    for value, flag, kind in ((data.root, spelled("--root", "data.root"), "dir"),
                              (data.csv, spelled("--csv", "data.csv"), "file"),
                              (data.val_root, spelled("--val-root", "data.val_root"), "dir"),
                              (data.val_csv, spelled("--val-csv", "data.val_csv"), "file"),
                              (data.pseudo_csv, spelled("--pseudo-csv", "data.pseudo_csv"), "file"),
                              (data.pseudo_root, spelled("--pseudo-root", "data.pseudo_root"), "images"),
                              (data.unlabeled, spelled("--unlabeled", "data.unlabeled"), "images"),
                              (config.model.init, spelled("--init", "model.init"), "weights")):
        _existing(value, flag, kind)
    config.validate()  # builds transforms and losses: after the files, so that a missing one is refused without torch
    _check_model_name(required(config.model.name, f"a model to train: {spelled('--model NAME (model.name)', 'model.name')}"))
    if pseudo is not None and data.pseudo_csv:
        given = ", ".join(str(labels.csv) for labels in label_sets(pseudo))
        raise ConfigError(f"pseudo-labels given twice: data.pseudo_csv ({data.pseudo_csv}) and {given}; give one")
    if data.pseudo_csv and data.unlabeled and command == "distill":
        raise ConfigError(f"{spelled('--pseudo-csv', 'data.pseudo_csv')} (pseudo-labels used as given) and "
                          f"{spelled('--unlabeled', 'data.unlabeled')} (a folder for the teacher to label) cannot be "
                          f"combined: give one; the CSV's image folder is {spelled('--pseudo-root', 'data.pseudo_root')}")
    if command == "train":
        if data.train_transform is not None and TransformSpec.parse(data.train_transform).alters_quality:
            raise ConfigError("data.train_transform.quality_augment alters the training images, whose labels "
                              "then describe another image: train has no teacher to score them; use kdfiqa "
                              "distill with --distill-loss, or drop quality_augment")
        if data.unlabeled and config.ssar.epochs == 0:
            raise ConfigError(f"train uses {spelled('--unlabeled', 'data.unlabeled')} only for SSAR pretraining (set "
                              "ssar.epochs > 0); to train on pseudo-labels give "
                              f"{spelled('--pseudo-csv FILE --pseudo-root DIR', 'data.pseudo_csv and data.pseudo_root')}")
    else:
        online = distill_.loss is not None or bool(distill_.feature)
        has_teacher = teacher_given or bool(distill_.teachers)
        if not has_teacher and not (data.pseudo_csv or pseudo):
            raise ConfigError(f"no teacher: pass {spelled('--teacher', 'distill.teachers')} (a model name, timm:NAME, "
                              f"checkpoint or scores CSV) or {spelled('--pseudo-csv', 'data.pseudo_csv')} with pseudo-labels")
        if online and not has_teacher:
            raise ConfigError(f"{spelled('--distill-loss/--feature-loss', 'distill.loss/distill.feature')} need a teacher: "
                              f"pass {spelled('--teacher', 'distill.teachers')}, or "
                              f"{spelled('--distill-loss none', 'distill.loss=None')}")
        if (distill_.calibrate or distill_.self_train) and not data.unlabeled:
            raise ConfigError(f"{spelled('--calibrate', 'distill.calibrate')} and {spelled('--self-train', 'distill.self_train')} "
                              f"act on the teacher's labels of {spelled('--unlabeled DIR', 'data.unlabeled')}; add "
                              f"{spelled('--unlabeled', 'data.unlabeled')} (to calibrate a CSV, use "
                              "kdfiqa pseudo-label --calibrate)")
        if distill_.view_cache and (distill_.feature or distill_.loss is None):
            raise ConfigError(f"{spelled('--view-cache', 'distill.view_cache')} stores the teacher's scores for a "
                              f"distillation loss; it needs {spelled('--distill-loss', 'distill.loss')} and cannot serve "
                              f"{spelled('--feature-loss', 'distill.feature')} (features are not cached)")
        _check_unlabeled_use(config)
        first = str(distill_.teachers[0]) if distill_.teachers else ""
        if distill_.self_train and not first.endswith((".pt", ".pth")):
            raise ConfigError(f"{spelled('--self-train', 'distill.self_train')} retrains the teacher, so the first "
                              f"{spelled('--teacher', 'of distill.teachers')} must be a kdfiqa checkpoint")
        if distill_.self_train and Path(first).is_file():  # each round retrains with its stored run config
            load_stored_config(first)


def _check_unlabeled_use(config: RunConfig) -> None:
    """The settings of unlabeled images used online that span sections: ``--unlabeled-use`` needs the
    images, ``--labeled-per-batch`` needs them used online, fits the batch and draws its own epochs."""
    data, distill_ = config.data, config.distill
    use = spelled(f"--unlabeled-use {distill_.unlabeled_use}", f"distill.unlabeled_use={distill_.unlabeled_use!r}")
    unlabeled, per_batch_name = spelled("--unlabeled", "data.unlabeled"), spelled("--labeled-per-batch",
                                                                                    "distill.labeled_per_batch")
    if distill_.unlabeled_use != "pseudo" and not data.unlabeled:
        raise ConfigError(f"{use} trains on the images of {unlabeled}, which is not given; add {unlabeled}")
    if distill_.unlabeled_use == "online" and data.sampler == "ssus":
        raise ConfigError(f"{spelled('--sampler ssus', 'data.sampler=ssus')} draws by label, and {use} adds images "
                          f"without one; drop the sampler or set {per_batch_name}")
    if distill_.unlabeled_use == "online" and distill_.calibrate:
        raise ConfigError(f"{spelled('--calibrate', 'distill.calibrate')} maps pseudo-labels, and {use} makes none; "
                          f"use {spelled('--calibrate-online', 'distill.calibrate_online')} for the teacher's online "
                          f"outputs, or {spelled('--unlabeled-use both', 'distill.unlabeled_use=both')}")
    per_batch = distill_.labeled_per_batch
    if per_batch is None:
        return
    if distill_.unlabeled_use == "pseudo":
        raise ConfigError(f"{per_batch_name} splits each batch between the labels and the {unlabeled} images trained "
                          f"on online; add {spelled('--unlabeled-use online', 'distill.unlabeled_use=online')} (or both)")
    if per_batch > config.train.batch_size:
        raise ConfigError(f"{per_batch_name} {per_batch} exceeds {spelled('--batch-size', 'train.batch_size')} "
                          f"{config.train.batch_size}; give at most the batch size")
    if data.sampler is not None:
        raise ConfigError(f"{per_batch_name} draws its own batches; drop {spelled('--sampler', 'data.sampler')}")


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
                f"{spelled('--val-fraction', 'data.val_fraction')} {data.val_fraction:g} of the {count} labels in "
                f"{data.csv} leaves {n_val} validation image(s), fewer than the {MIN_VALIDATION} needed to rank a "
                f"model: raise {spelled('--val-fraction', 'data.val_fraction')} (e.g. "
                f"{min(0.5, MIN_VALIDATION / max(count, 1) + 0.01):.2f}) or pass {spelled('--val-csv', 'data.val_csv')}")
        if n_train < 1:
            raise ConfigError(f"{spelled('--val-fraction', 'data.val_fraction')} {data.val_fraction:g} leaves no "
                              f"training image of the {count} in {data.csv}; lower "
                              f"{spelled('--val-fraction', 'data.val_fraction')}")
    if (train_cfg.drop_last and n_train < train_cfg.batch_size and data.samples_per_epoch is None
            and config.distill.labeled_per_batch is None):
        raise ConfigError(
            f"the training share has {n_train} labeled image(s), fewer than "
            f"{spelled('--batch-size', 'train.batch_size')} {train_cfg.batch_size}, so no full batch: lower "
            f"{spelled('--batch-size', 'train.batch_size')} (e.g. {max(1, n_train)}) or keep the last partial batch "
            f"with {spelled('--set train.drop_last=false', 'train.drop_last=False')}")


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
    and, unless ``resume`` or ``overwrite``, holding no earlier run (nor the part files of its
    labelling, :func:`_kept_labelling`); ``resume`` needs a ``last.pt`` file of this run (of its final
    stage or of an earlier one) or such part files."""
    from ..outputs import check_output_dir

    out = Path(config.train.output_dir)
    labelling = _kept_labelling(out)
    if resume and not labelling and not any(p.is_file() for p in out.rglob("last.pt")):
        raise CheckpointError(f"{spelled('--resume', 'resume=True')}: no last.pt file (nor a labelling of "
                              f"{spelled('--unlabeled', 'data.unlabeled')}) under {out}; check "
                              f"{spelled('--out', 'train.output_dir')}, or start without {spelled('--resume', 'resume=True')}")
    data = config.data
    inputs = [data.csv, data.val_csv, data.pseudo_csv, config.model.init, *map(str, config.distill.teachers)]
    check_output_dir(out, inputs=inputs, resume=resume, overwrite=overwrite, flag=spelled("--out", "train.output_dir"))
    if labelling and not (resume or overwrite):  # no run file: the run stopped before its first checkpoint
        raise ConfigError(f"{spelled('--out', 'train.output_dir')} {out}: holds the teacher's scores of "
                          f"{spelled('--unlabeled', 'data.unlabeled')} from an interrupted run ({labelling[0]}); "
                          f"continue it with {spelled('--resume', 'resume=True')}, or pass "
                          f"{spelled('--overwrite', 'overwrite=True')} to start a new run there")
    if overwrite and not resume:  # a new run: nothing of an earlier one stays
        from ..engine.distributed import is_main_process

        if is_main_process():
            _remove_earlier_stages(out, [Path(p).resolve() for p in inputs if p])


def _kept_labelling(out: Path) -> list[Path]:
    """The part-file folders that hold the teacher's scores of a run in ``out``: its own pseudo-labels'
    and each self-training round's (:mod:`kdfiqa.distill.label_parts`; kept by ``distill``, so that a
    resumed run scores no image twice)."""
    from ..outputs import holds_label_parts, label_parts_folder

    csvs = [out / PSEUDO_LABELS, *(stage / PSEUDO_LABELS for stage in sorted(out.glob("self_train_*")))]
    return [label_parts_folder(csv) for csv in csvs if holds_label_parts(csv)]


def _remove_earlier_stages(out: Path, inputs: list[Path]) -> None:
    """Remove what an earlier run's stages left in ``out``: the SSAR and self-training stage folders,
    its pseudo-labels (and their part files) and its teacher view cache (the run files themselves go
    when training starts), keeping any that holds one of this run's ``inputs`` (a teacher of an
    earlier round, say)."""
    import shutil

    from ..outputs import label_parts_folder

    def holds_input(path: Path) -> bool:
        path = path.resolve()
        return any(p == path or path in p.parents for p in inputs)

    for stage in [out / "ssar", *sorted(out.glob("self_train_*"))]:
        if stage.is_dir() and not holds_input(stage):
            shutil.rmtree(stage)
    for name in (PSEUDO_LABELS, VIEW_CACHE):
        if not holds_input(out / name):
            (out / name).unlink(missing_ok=True)
    parts = label_parts_folder(out / PSEUDO_LABELS)
    if parts.is_dir() and not holds_input(parts):
        shutil.rmtree(parts)


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
        found = load_stored_config(last)  # validated whole, as a config file is
        stored = found.to_dict() if found is not None else {}
    current = config.to_dict()
    for section, rules in RESUME_KEYS.items():
        before = stored.get(section) if isinstance(stored.get(section), dict) else {}
        for key, rule in rules.items():
            if key in before and before[key] != current[section][key]:
                was = f"{spelled('--resume', 'resume=True')}: {section}.{key} was {before[key]!r} in {last}, now {current[section][key]!r}"
                if rule == "model":  # last.pt holds that model's weights: none other resumes
                    raise ConfigError(f"{was}; a run resumes with its own model: resume with the run's settings, "
                                      f"or start a new run (another {spelled('--out', 'train.output_dir')}, or "
                                      f"{spelled('--overwrite', 'overwrite=True')})")
                raise ConfigError(
                    f"{was}; it changes the objective, the schedule or the data order: resume with the run's "
                    f"settings, or add {spelled('--allow-changes', 'allow_changes=True')} to resume with the new one")


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
