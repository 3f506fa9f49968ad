"""The run configuration's schema: typed sections, and how layers of settings resolve into a :class:`RunConfig`.

A run of ``kdfiqa train``/``distill`` is described by one :class:`RunConfig` with six sections:

* ``model``: the network being trained (registry name, keyword arguments, training resolution);
* ``data``: image root and CSVs, validation split, transform specs for :func:`kdfiqa.data.build_transform`;
* ``train``: optimisation, the fields of :class:`kdfiqa.engine.TrainConfig` (epochs, batch size,
  optimiser, schedule, AMP, EMA, output folder, ...);
* ``loss``: the task loss, a name or formula for :class:`kdfiqa.losses.WeightedSum`;
* ``distill``: teachers, distillation/feature losses, budget, pseudo-labelling and self-training;
* ``ssar``: RankCORE's self-supervised ranking pretraining (off unless ``ssar.epochs > 0``).

Every key is checked against the sections' fields and every value against the field's type; a bad
one is a :class:`~kdfiqa.errors.ConfigError` naming the file and line (or the flag) at fault. Where
the layers come from (YAML files, recipes, ``--set``) is :mod:`kdfiqa.config.loader`.
"""

from __future__ import annotations

import dataclasses
import difflib
import typing
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence, Union

import yaml

from ..engine.config import TrainConfig
from ..data.splits import SPLIT_METHODS
from ..errors import ConfigError, spelled
from ..options import COMMANDS, MAX_SEED, Naming, OptionError, check_options, conform, describe, option
from ..size import Size

__all__ = ["COMMANDS", "ModelSection", "DataSection", "LossSection", "DistillSection", "SSARSection", "RunConfig",
           "ConfigLayer", "SECTIONS", "resolve_config", "SPLIT_METHODS", "CALIBRATION_SETS", "HEAD_STARTS",
           "PSEUDO_SETS", "UNLABELED_USES"]


SizeSpec = Union[int, list]
"""A resolution: ``224`` (square) or ``[height, width]``."""

CALIBRATION_SETS = ("train_split", "all")
"""Labels a pseudo-label calibration is fitted on: the training share of ``data.csv`` (validation
labels never shape the pseudo-labels), or all of it (the ECNU-SJTU winner's fit on train.csv)."""
HEAD_STARTS = ("keep", "fresh")
"""How a run started from a checkpoint (``model.init``) starts its head: from the checkpoint's
weights, or freshly initialised on the checkpoint's backbone (the ECNU-SJTU enhanced teacher)."""
PSEUDO_SETS = ("last", "all")
"""Which pseudo-label sets of ``data.unlabeled`` a self-training distillation trains the student on."""
UNLABELED_USES = ("pseudo", "online", "both")
"""How ``distill`` uses ``data.unlabeled``: the teacher labels it once (``pseudo``, offline); its
images join training as label-less samples that the teacher scores online (``online``); or both,
pseudo-labels and online teacher targets on the same images (``both``)."""


SIZE_FIELDS = ("model.input", "distill.teacher_input", "distill.deploy_input")
"""Settings that hold input sizes (``distill.deploy_input`` a list of them)."""


def _sizes(value: Any, path: str, where: str) -> Any:
    """The size setting ``path`` as a layer gives it, checked where it was written (file and line,
    flag): text such as ``224x336`` becomes ``[224, 336]`` (``224`` for a square), other values stay
    as given."""
    if value is None:
        return None
    if path == "distill.deploy_input" and isinstance(value, list):
        return [_sizes(item, "", where) for item in value]
    size = Size.parse(value, where, rgb=True)
    return size.as_config() if isinstance(value, str) else value


def _size_field(where: str, value: Any) -> None:
    """Raise unless ``value`` (when not None) is an RGB input size such as 224 or [224, 336]."""
    if value is not None:
        Size.parse(value, where, rgb=True)


def _transform_field(where: str, spec: Any) -> None:
    """Build ``spec`` once (with a stand-in size when it leaves ``size`` to the model) so a bad
    transform is refused before any model is built."""
    if spec is None:
        return
    from ..data.transforms import build_transform

    probe = dict(spec)
    if probe.get("mode") != "native" and "preset" not in probe:
        probe.setdefault("size", 32)
    try:
        build_transform(probe)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


@dataclass
class ModelSection:
    """The network being trained."""

    name: str | None = option(None, resume="model", flag="--model", metavar="NAME",
                              help="registered model, timm:NAME (`kdfiqa models`) or a model file "
                                   "(.yaml/.json, as `kdfiqa search --out` writes)")
    """Registered model name or ``timm:NAME`` (``kdfiqa models`` lists them); a model file
    (:mod:`kdfiqa.models.model_file`) is expanded by :func:`resolve_config` into ``name``, ``kwargs``
    (the section's own win) and ``input`` (when not set), so the run config names the registered model."""
    kwargs: dict = option(factory=dict, resume="model", help="keyword arguments of the model factory")
    """Keyword arguments for the model factory (e.g. ``drop_path_rate``)."""
    head: dict | None = option(None, resume="model", help="quality-head options for backbone names")
    """Quality-head options for backbone names (see :class:`kdfiqa.models.heads.FIQARegressor`)."""
    input: SizeSpec | None = option(None, resume="refuse", flag="--input", metavar="SIZE",
                                    help="training resolution: 224 or 224x336 (default: the model's)")
    """Training resolution, filling ``size`` in transforms that leave it out (default: the model's)."""
    init: str | None = option(None, resume="allow", flag="--init", metavar="CKPT",
                              help="start from the weights of a kdfiqa checkpoint or model folder")
    """A kdfiqa checkpoint or model folder whose weights start the run (fine-tuning)."""
    init_head: str = option("keep", resume="allow", choices=HEAD_STARTS, needs="init",
                            help="with --init: keep the checkpoint's head, or start a fresh one on its backbone")
    """With ``init``: the head from the checkpoint (``keep``) or freshly initialised (``fresh``)."""
    pretrained: bool = option(False, resume="allow", flag="--pretrained",
                              help="load the model's published weights (needs them locally or a network)")
    """Load the factory's published weights (needs them on disk or a network connection)."""

    def __post_init__(self) -> None:
        check_options(self, "model")
        _size_field(spelled("model.input (--input)", "model.input"), self.input)


@dataclass
class DataSection:
    """Where the images and labels are and how they are turned into tensors."""

    root: str | None = option(None, resume="refuse", flag="--root", metavar="DIR", help="folder the CSV's image names are relative to")
    csv: str | None = option(None, resume="refuse", flag="--csv", metavar="FILE",
                             help="labels: challenge format (image_name,score) or a headed CSV")
    val_root: str | None = option(None, resume="refuse", flag="--val-root", metavar="DIR", needs="val_csv",
                                  help="image folder of --val-csv (default: --root)")
    """Image root of ``val_csv`` (default: ``root``)."""
    val_csv: str | None = option(None, resume="refuse", flag="--val-csv", metavar="FILE", help="validation labels (default: a split of --csv)")
    val_fraction: float = option(0.1, resume="refuse", flag="--val-fraction", metavar="F", above=0, below=1,
                                 help="share of --csv held out for validation (default 0.1)")
    """Held-out share of ``csv`` when no ``val_csv`` is given."""
    split_seed: int = option(0, resume="refuse", at_least=0, at_most=MAX_SEED, help="seed of the validation split")
    split_method: str = option("kdfiqa", resume="refuse", choices=SPLIT_METHODS,
                               help="how the validation split is drawn: kdfiqa, or sklearn (the indices "
                                    "of scikit-learn's train_test_split, as the ECNU-SJTU winner splits)")
    """How the validation split is drawn (see :data:`SPLIT_METHODS`)."""
    train_transform: dict | None = option(None, resume="refuse", help="training transform spec (kdfiqa.data.build_transform)")
    """Spec for :func:`kdfiqa.data.build_transform`; ``size`` defaults to ``model.input``."""
    eval_transform: dict | None = option(None, resume="refuse", help="evaluation transform spec")
    """Spec used for validation; it becomes the trained model's deployment transform, which
    ``evaluate``/``predict``/``export`` apply."""
    sampler: str | None = option(None, resume="refuse", flag="--sampler", choices=("ssus",),
                                 help="score-stratified uniform sampling (RankCORE)")
    """``None`` (shuffle) or ``"ssus"`` (RankCORE's score-stratified uniform sampler)."""
    strata: int = option(10, resume="refuse", at_least=2, needs="sampler", help="score strata of the ssus sampler")
    """Number of score strata for the ``ssus`` sampler."""
    samples_per_epoch: int | None = option(
        None, resume="refuse", flag="--samples-per-epoch", metavar="N", at_least=1,
        help="draw N training samples an epoch (fresh random orders, cycled) instead of one pass")
    """Epoch length in samples (:class:`~kdfiqa.data.samplers.FixedLengthSampler`): runs on data
    sets of different sizes take the same number of steps."""
    pseudo_csv: str | None = option(None, resume="refuse", flag="--pseudo-csv", metavar="FILE",
                                    help="pseudo-labels added to the training labels, used as given")
    """Pseudo-labels (``image,score``) added to the training labels (offline distillation)."""
    pseudo_root: str | None = option(None, resume="refuse", flag="--pseudo-root", metavar="DIR", needs="pseudo_csv",
                                     help="folder the --pseudo-csv names are relative to (default: --root), or "
                                          "the list file or tar shards they name")
    """Image root of ``pseudo_csv`` (default: ``root``); for a CSV written by ``kdfiqa pseudo-label``
    that is its ``--images`` (a folder, or the image list file or tar shards whose names it holds)."""
    unlabeled: str | None = option(None, resume="refuse", flag="--unlabeled", metavar="IMAGES",
                                   help="images for the teacher to pseudo-label (distill) or for SSAR pretraining "
                                        "(train): a folder, a list file (.txt) or tar shards (data-{000..009}.tar)")
    """Unlabeled images (a folder, an image list file or tar shards:
    :func:`~kdfiqa.data.image_sources.list_images`): ``distill`` has the teacher label them (never
    together with ``pseudo_csv``); ``train`` uses them for SSAR pretraining."""
    skip_bad: bool = option(False, resume="allow", flag="--skip-bad",
                            help="drop unreadable images (each logged, counted) instead of stopping")
    """Drop missing, empty, truncated or undecodable images (each logged) instead of stopping."""
    allow_outside_root: bool = option(False, resume="allow", flag="--allow-outside-root",
                                      help="accept CSV names that lead outside their image folder (../, symlinks)")
    """Accept image names that resolve outside their root (refused by default)."""

    def __post_init__(self) -> None:
        check_options(self, "data")
        if self.sampler is not None and self.samples_per_epoch is not None:
            raise ConfigError(f"{spelled('--sampler ssus', 'data.sampler')} draws its own epochs; drop "
                              f"{spelled('--samples-per-epoch', 'data.samples_per_epoch')} or the sampler")

    def validate(self) -> None:
        """Build each transform spec once (:func:`kdfiqa.data.build_transform`)."""
        _transform_field("data.train_transform", self.train_transform)
        _transform_field("data.eval_transform", self.eval_transform)


@dataclass
class LossSection:
    """The task loss on scores against MOS."""

    task: str = option("mse", resume="refuse", flag="--task-loss", metavar="FORMULA",
                       help='loss against the labels, e.g. "0.75*plcc + 0.25*rank"')
    """A registered name or a formula such as ``"0.75*plcc + 0.25*rank"``."""

    def __post_init__(self) -> None:
        check_options(self, "loss")

    def validate(self) -> None:
        """Parse the formula into its registered losses (:class:`kdfiqa.losses.WeightedSum`)."""
        _loss_field(spelled("loss.task (--task-loss)", "loss.task"), self.task)


def _loss_field(where: str, formula: str | None) -> None:
    """Parse ``formula`` into its loss terms so an unknown loss is refused before any model is built."""
    if formula is None:
        return
    from ..losses import WeightedSum

    try:
        WeightedSum(formula)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


@dataclass
class DistillSection:
    """Teachers and what the student learns from them."""

    teachers: list = option(factory=list, resume="refuse", flag="--teacher", metavar="SOURCE", repeat=True, commands=("distill",),
                            help="name, timm:NAME, checkpoint.pt or scores.csv (repeat for an ensemble)")
    """Each a registered name, ``timm:NAME``, a checkpoint or a ``image,score`` CSV; several are averaged."""
    teacher_input: SizeSpec | None = option(None, resume="refuse", flag="--teacher-input", metavar="SIZE", commands=("distill",),
                                            help="teacher resolution, e.g. 512 (default: the teacher's own)")
    """The teachers' resolution (their own view of each crop); default: the teacher's own."""
    loss: str | None = option("temperature_mse", resume="refuse", flag="--distill-loss", metavar="FORMULA", commands=("distill",),
                              help='loss on the logits, e.g. "0.5*temperature_mse"; none: labels only')
    """Distillation formula on logits, e.g. ``"0.5*temperature_mse"``; ``None`` when the teacher only
    teaches through pseudo-labels (offline distillation)."""
    feature: list = option(factory=list, resume="refuse", flag="--feature-loss", metavar="S:T[:LOSS[:W]]", repeat=True,
                           commands=("distill",), help="match student module S to teacher module T (repeatable)")
    """Feature losses as ``STUDENT_MODULE:TEACHER_MODULE[:LOSS[:WEIGHT]]`` (module paths on the bare models)."""
    budget: str | None = option(None, resume="allow", flag="--budget", metavar="NAME",
                                help="budget the model must fit at its deployment size before training starts "
                                     "(distill: vquala2025 unless told; train: none unless told; none: no check)")
    """Budget the model must fit before training starts: for ``distill`` ``None`` means the default
    budget (vquala2025), for ``train`` no check; ``"none"``: no check."""
    deploy_input: list = option(factory=list, resume="allow", flag="--deploy-input", metavar="SIZE", repeat=True,
                                help="size(s) the student is deployed at, where the budget is checked, "
                                     "with the budget's own (224 for vquala2025) where that is larger "
                                     "(default: --input)")
    """Deployment resolutions the budget is checked at (default: the training input), each raised to
    the budget's deployment size where that is larger, and the evaluation size."""
    view_cache: int = option(0, resume="refuse", flag="--view-cache", metavar="K", at_least=0, at_most=64,
                             commands=("distill",),
                             help="score K stored random views of each image with the teacher once and "
                                  "train on them instead of running it every step (0: online; at most 64)")
    """Views per image of the crop-level teacher cache (:mod:`kdfiqa.distill.view_cache`); 0 runs the
    teacher on every batch."""
    allow_over_budget: bool = option(False, resume="allow", flag="--allow-over-budget",
                                     help="train a student over budget anyway (loudly logged)")
    calibrate: bool = option(False, resume="refuse", flag="--calibrate", commands=("distill",),
                             help="map the teacher's pseudo-labels of --unlabeled to the label scale "
                                  "(4-parameter logistic fitted on the training share of --csv)")
    """Map pseudo-labels to the label scale with a 4-parameter logistic fitted on the labeled set."""
    raw_if_degenerate: bool = option(False, resume="allow", flag="--raw-if-degenerate",
                                     needs=("calibrate", "calibrate_online"), commands=("distill",),
                                     help="with --calibrate or --calibrate-online: keep the raw teacher scores when "
                                          "the fit is degenerate (refused otherwise)")
    calibrate_on: str = option("train_split", resume="refuse", choices=CALIBRATION_SETS, needs="calibrate",
                               help="labels the calibration is fitted on: train_split (the training share "
                                    "of --csv) or all (every row of --csv, validation share included, as "
                                    "the ECNU-SJTU winner fits it)")
    """Which labels the pseudo-label calibration is fitted on (see :data:`CALIBRATION_SETS`)."""
    clip_pseudo_labels: bool = option(True, resume="refuse", needs="calibrate", help="clip calibrated pseudo-labels to [0, 1] (false: keep "
                                                  "the fitted curve's values, as the ECNU-SJTU winner does)")
    """Clip calibrated pseudo-labels to the label range [0, 1]."""
    self_train: int = option(0, resume="refuse", flag="--self-train", metavar="N", at_least=0, commands=("distill",),
                             help="self-training rounds of the teacher on labels + its pseudo-labels")
    """Rounds of self-training: the teacher is retrained on labels ∪ its pseudo-labels this many times
    before it labels the student's data (ECNU-SJTU's loop)."""
    self_train_head: str = option("keep", resume="refuse", choices=HEAD_STARTS, needs="self_train",
                                  help="self-training starts the teacher's head from its weights (keep) or "
                                       "afresh on its backbone (fresh: the ECNU-SJTU enhanced teacher)")
    """How each self-training round starts the teacher's head (see :data:`HEAD_STARTS`)."""
    pseudo_sets: str = option("last", resume="refuse", choices=PSEUDO_SETS, needs="self_train",
                              help="pseudo-labels the student trains on: last (the final teacher's) or all "
                                   "(every self-training round's as well, as the ECNU-SJTU winner does)")
    """Which teachers' pseudo-labels of ``data.unlabeled`` join the student's training set."""

    unlabeled_use: str = option("pseudo", resume="refuse", flag="--unlabeled-use", choices=UNLABELED_USES,
                                needs=("loss", "feature"), commands=("distill",),
                                help="what --unlabeled images do: pseudo (the teacher labels them once), "
                                     "online (they join training unlabeled, the teacher scoring each view: "
                                     "needs --distill-loss or --feature-loss) or both")
    """How ``data.unlabeled`` is used (see :data:`UNLABELED_USES`): online use needs an online
    distillation loss (``loss`` or ``feature``); the task loss never sees a label-less sample."""
    labeled_per_batch: int | None = option(None, resume="refuse", flag="--labeled-per-batch", metavar="N",
                                           at_least=1, commands=("distill",),
                                           help="every batch holds exactly N labeled and batch-size - N "
                                                "--unlabeled images; an epoch passes the labels once "
                                                "(needs --unlabeled-use online or both)")
    """Labeled samples in every batch (:class:`~kdfiqa.data.samplers.TwoStreamSampler`), the rest
    from ``data.unlabeled`` used online; the epoch length follows the labels alone. ``None``: mixed
    data are shuffled together."""
    calibrate_online: bool = option(False, resume="refuse", flag="--calibrate-online", needs="loss",
                                    commands=("distill",),
                                    help="map the teacher's online outputs onto the label scale (4-parameter "
                                         "logistic fitted once on its scores of the labeled training images)")
    """Put the teacher's online outputs on the label scale with the 4-parameter logistic that
    calibrates pseudo-labels, fitted once before training on the teacher's scores of the labeled
    training share; kept in ``teacher_calibration.json`` and the checkpoints, never refitted on
    resume."""

    def __post_init__(self) -> None:
        if isinstance(self.loss, str) and self.loss.strip().lower() in ("none", "null", ""):
            self.loss = None  # "--distill-loss none": the teacher teaches through pseudo-labels only
        check_options(self, "distill")
        _size_field(spelled("distill.teacher_input (--teacher-input)", "distill.teacher_input"), self.teacher_input)
        for size in self.deploy_input:
            _size_field(spelled("distill.deploy_input (--deploy-input)", "distill.deploy_input"), size)

    def validate(self) -> None:
        """Parse the distillation formula and the feature pairs, and look the budget up."""
        from ..distill.features import parse_feature_pairs

        _loss_field(spelled("distill.loss (--distill-loss)", "distill.loss"), self.loss)
        if self.budget is not None and self.budget != "none":
            from ..budget.presets import get_budget

            get_budget(self.budget)
        parse_feature_pairs(self.feature)


@dataclass
class SSARSection:
    """Self-Supervised Adaptive Ranking pretraining (seed §2, RankCORE)."""

    epochs: int = option(0, resume="refuse", at_least=0, help="SSAR pretraining epochs (0: off)")
    """Pretraining epochs on (I, T_s(I)) pairs before supervised training; 0 turns SSAR off."""
    margin: float = option(0.1, resume="refuse", at_least=0, help="lambda of the adaptive margin")
    """λ of the adaptive margin m(s) = λ·s."""
    lr: float | None = option(None, resume="refuse", above=0, help="pretraining learning rate (default: train.lr)")
    """Pretraining learning rate (default: ``train.lr``)."""
    degradations: list = option(factory=list, resume="refuse", help="degradation names to draw T from")
    """Degradation names to draw T from (empty: :class:`~kdfiqa.distill.ssar.SSARPairs`' default,
    blur, noise, jpeg and downup)."""

    def __post_init__(self) -> None:
        check_options(self, "ssar")


@dataclass
class RunConfig:
    """The resolved configuration of one run; ``to_dict()`` is what checkpoints store."""

    description: str = ""
    source: str = ""
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainConfig = field(default_factory=TrainConfig)
    loss: LossSection = field(default_factory=LossSection)
    distill: DistillSection = field(default_factory=DistillSection)
    ssar: SSARSection = field(default_factory=SSARSection)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts, lists and scalars (YAML/JSON/``torch.save(weights_only)`` safe)."""
        out = dataclasses.asdict(self)
        out["train"] = self.train.to_dict()
        return out

    def validate(self) -> None:
        """The checks that build or look something up: each transform spec is built, the loss formulas
        and feature pairs parsed, the budget looked up; a bad one is refused with one line naming the
        setting. The values themselves were checked when the sections were built; this runs once
        before any model is (:func:`kdfiqa.pipeline.validate`, ``--print-config``)."""
        self.data.validate()
        self.loss.validate()
        self.distill.validate()
        self._check_quality_augment()

    def _check_quality_augment(self) -> None:
        """A training transform that alters image quality (``quality_augment``) is refused unless a
        teacher scores the altered views online (``distill.loss`` or ``distill.feature``): the
        labels describe the unaltered images only."""
        from ..data.transform_spec import TransformSpec

        if self.data.train_transform is None or not TransformSpec.parse(self.data.train_transform).alters_quality:
            return
        if self.distill.loss is None and not self.distill.feature:
            raise ConfigError("data.train_transform.quality_augment alters the training images, which only a "
                              f"teacher scoring them online may train on: set {spelled('--distill-loss', 'distill.loss')} or "
                              f"{spelled('--feature-loss', 'distill.feature')}, or drop quality_augment")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str = "config") -> "RunConfig":
        """Rebuild a config from :meth:`to_dict` output (e.g. a checkpoint's ``"config"``)."""
        return resolve_config(None, [ConfigLayer(source, data)])

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)


SECTIONS: dict[str, type] = {f.name: f.default_factory for f in dataclasses.fields(RunConfig)  # type: ignore[misc]
                             if f.default_factory is not dataclasses.MISSING}
SCALARS = tuple(f.name for f in dataclasses.fields(RunConfig) if f.name not in SECTIONS)
FILE_KEYS = frozenset((*SCALARS, *SECTIONS, "commands"))


@dataclass
class ConfigLayer:
    """One source of settings: nested ``values`` plus where each key came from, for error messages.

    ``lines`` maps a dotted key (``"train.lr"``) to its line in ``source``; keys without a line are
    reported by ``source`` alone (``--set``, a dict). ``flags``: the values were given by dedicated
    command-line flags, which errors then name.
    """

    source: str
    values: Mapping[str, Any]
    lines: Mapping[str, int] = field(default_factory=dict)
    flags: bool = False

    def where(self, key: str) -> str:
        line = self.lines.get(key)
        return f"{self.source}:{line}" if line else self.source


# --------------------------------------------------------------------------------------- resolution


def did_you_mean(key: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, sorted(choices), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _apply(target: dict[str, Any], layer: ConfigLayer, origins: dict[str, ConfigLayer]) -> None:
    """Merge ``layer`` into ``target`` (nested dicts of section values), checking keys and types, and
    note in ``origins`` that it gave each ``section.field`` it sets."""
    for key, value in layer.values.items():
        if key in SCALARS:
            target[key] = _typed(RunConfig, key, value, layer, key)
            continue
        if key not in SECTIONS:
            raise ConfigError(f"{layer.where(key)}: unknown section {key!r}{did_you_mean(key, FILE_KEYS - {'commands'})}")
        if not isinstance(value, Mapping):
            raise ConfigError(f"{layer.where(key)}: section {key!r} must be a mapping of settings")
        section_cls = SECTIONS[key]
        names = [f.name for f in dataclasses.fields(section_cls)]
        for name, item in value.items():
            path = f"{key}.{name}"
            field_name, _, inner = str(name).partition(".")
            if field_name not in names:
                raise ConfigError(f"{layer.where(path)}: unknown setting {path!r}{did_you_mean(str(name), names)}; "
                                  f"{key} takes: {', '.join(names)}")
            if inner:
                item = _set_nested(target[key].get(field_name), inner.split("."), item)
            elif path in SIZE_FIELDS:
                item = _sizes(item, path, f"{layer.where(path)}: {path}")
            target[key][field_name] = _typed(section_cls, field_name, item, layer, path)
            origins[f"{key}.{field_name}"] = layer


def _set_nested(mapping: Any, keys: list[str], value: Any) -> dict[str, Any]:
    """A copy of ``mapping`` (a dict or ``None``) with ``value`` stored under the key path ``keys``."""
    out = dict(mapping) if isinstance(mapping, Mapping) else {}
    head, *tail = keys
    out[head] = _set_nested(out.get(head), tail, value) if tail else value
    return out


def _typed(cls: type, name: str, value: Any, layer: ConfigLayer, path: str) -> Any:
    hint = typing.get_type_hints(cls)[name]
    try:
        return conform(value, hint)
    except TypeError:
        raise ConfigError(f"{layer.where(path)}: {path} must be {describe(hint)}, "
                          f"got {value!r} ({type(value).__name__})") from None


def _follow_input(merged: dict[str, Any], before: Any, layer: ConfigLayer) -> None:
    """A layer that changes ``model.input`` (``--input 48`` over a recipe) moves the transforms the
    earlier layers fixed to it (:meth:`~kdfiqa.data.transform_spec.TransformSpec.rescaled`), unless it sets them
    itself: the training resolution a user asks for is the one the network sees."""
    from ..data.transform_spec import TransformSpec

    after, data = merged["model"]["input"], merged["data"]
    own = set((layer.values.get("data") or {}) if isinstance(layer.values.get("data"), Mapping) else ())
    if after is None or after == before:
        return
    reference = before
    if reference is None and data["train_transform"]:
        reference = TransformSpec.parse(data["train_transform"]).size
    if reference is None:
        return
    old, new = Size.parse(reference, "model.input"), Size.parse(after, "model.input")
    for key in ("train_transform", "eval_transform"):
        if data[key] and key not in own:
            data[key] = TransformSpec.parse(data[key]).rescaled(old, new).to_dict()


def _expand_model_file(model: dict[str, Any]) -> None:
    """A ``model.name`` that is a model file (:mod:`kdfiqa.models.model_file`, as ``kdfiqa search
    --out`` writes) becomes the registered name it holds, its keyword arguments under the section's
    own, and its input size where ``model.input`` is not set."""
    name = model["name"]
    if name is None or not name.lower().endswith((".yaml", ".yml", ".json")):
        return
    from ..models.model_file import read_model_file

    found = read_model_file(name)
    model["name"], model["kwargs"] = found.name, {**found.kwargs, **model["kwargs"]}
    if model["input"] is None and found.input is not None:
        model["input"] = list(found.input)


def _naming(section: str, cls: type, layer: ConfigLayer | None) -> Naming:
    """How an error names ``section``'s fields when the refused one came from ``layer``: by their
    flags after a flag, by ``file:line: section.field`` or ``--set: section.field`` otherwise."""
    if layer is None:
        return Naming(section, cls)
    meta = {f.name: f.metadata for f in dataclasses.fields(cls)}
    if layer.flags:
        def flag(name: str) -> str:
            return meta[name]["flag"] or f"{section}.{name}"

        return Naming(section, cls, at=flag, name=flag)
    return Naming(section, cls, at=lambda name: f"{layer.where(f'{section}.{name}')}: {section}.{name}",
                  name=lambda name: f"{section}.{name}")


def resolve_config(command: str | None, layers: Sequence[ConfigLayer]) -> RunConfig:
    """Defaults overlaid with ``layers`` in order; see the module docstring for the usual order.

    A model file given as ``model.name`` is expanded (:func:`_expand_model_file`); each section then
    checks its values as it is built, a refused one named where the layers gave it. The checks that
    build transforms and losses or look up registries are :meth:`RunConfig.validate`."""
    merged = RunConfig().to_dict()
    origins: dict[str, ConfigLayer] = {}
    for layer in layers:
        before = merged["model"]["input"]
        _apply(merged, layer, origins)
        _follow_input(merged, before, layer)
    _expand_model_file(merged["model"])
    sections = {}
    for name, cls in SECTIONS.items():
        try:
            sections[name] = cls(**merged[name])
        except OptionError as exc:
            raise exc.reworded(_naming(name, cls, origins.get(f"{name}.{exc.field}"))) from None
    return RunConfig(**{k: merged[k] for k in SCALARS}, **sections)
