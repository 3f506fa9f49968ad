"""Run configuration: typed sections filled from a recipe, a YAML file, flags and ``--set`` overrides.

A run of ``kdfiqa train``/``distill`` is described by one :class:`RunConfig` with six sections:

* ``model``: the network being trained (registry name, keyword arguments, training resolution);
* ``data``: image root and CSVs, validation split, transform specs for :func:`kdfiqa.data.build_transform`;
* ``train``: optimisation, the fields of :class:`kdfiqa.engine.TrainConfig` (epochs, batch size,
  optimiser, schedule, AMP, EMA, output folder, ...);
* ``loss``: the task loss, a name or formula for :class:`kdfiqa.losses.WeightedSum`;
* ``distill``: teachers, distillation/feature losses, budget, pseudo-labelling and self-training;
* ``ssar``: RankCORE's self-supervised ranking pretraining (off unless ``ssar.epochs > 0``).

Recipes (``kdfiqa/recipes/*.yaml``) and ``--config`` files share one format: those sections at the top
level, optional ``description`` and ``source`` lines, and an optional ``commands`` mapping whose
``train``/``distill`` entries hold sections that apply only to that command (e.g. a recipe's teacher
is trained by ``kdfiqa train`` and its student by ``kdfiqa distill``). Layers apply in this order,
later ones winning: defaults, recipe, config file, dedicated flags, ``--set section.key=value``.

Every key is checked against the sections' fields and every value against the field's type; a bad
one is a :class:`~kdfiqa.errors.ConfigError` naming the file and line (or the flag) at fault.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence, Union

import yaml

from .engine.config import TrainConfig
from .errors import ConfigError

__all__ = [
    "COMMANDS",
    "ModelSection",
    "DataSection",
    "LossSection",
    "DistillSection",
    "SSARSection",
    "RunConfig",
    "ConfigLayer",
    "load_config_file",
    "parse_override",
    "resolve_config",
    "list_recipes",
    "recipe_path",
    "load_recipe",
]

COMMANDS = ("train", "distill")
"""Commands a recipe or config file may hold command-specific sections for."""

_UNION_TYPES = (Union, getattr(types, "UnionType", Union))

SizeSpec = Union[int, list]
"""A resolution: ``224`` (square) or ``[height, width]``."""


@dataclass
class ModelSection:
    """The network being trained."""

    name: str | None = None
    """Registered model name or ``timm:NAME`` (``kdfiqa models`` lists them)."""
    kwargs: dict = field(default_factory=dict)
    """Keyword arguments for the model factory (e.g. ``drop_path_rate``)."""
    head: dict | None = None
    """Quality-head options for backbone names (see :class:`kdfiqa.models.heads.FIQARegressor`)."""
    input: SizeSpec | None = None
    """Training resolution, filling ``size`` in transforms that leave it out (default: the model's)."""
    init: str | None = None
    """A kdfiqa checkpoint whose weights start the run (fine-tuning)."""
    pretrained: bool = False
    """Load the factory's published weights (needs them on disk or a network connection)."""


@dataclass
class DataSection:
    """Where the images and labels are and how they are turned into tensors."""

    root: str | None = None
    csv: str | None = None
    val_root: str | None = None
    """Image root of ``val_csv`` (default: ``root``)."""
    val_csv: str | None = None
    val_fraction: float = 0.1
    """Held-out share of ``csv`` when no ``val_csv`` is given."""
    split_seed: int = 0
    train_transform: dict | None = None
    """Spec for :func:`kdfiqa.data.build_transform`; ``size`` defaults to ``model.input``."""
    eval_transform: dict | None = None
    """Spec used for validation, and by ``evaluate``/``predict``/``export`` of the saved model."""
    sampler: str | None = None
    """``None`` (shuffle) or ``"ssus"`` (RankCORE's score-stratified uniform sampler)."""
    strata: int = 10
    """Number of score strata for the ``ssus`` sampler."""
    pseudo_csv: str | None = None
    """Pseudo-labels (``image,score``) added to the training labels (offline distillation)."""
    pseudo_root: str | None = None
    """Image root of ``pseudo_csv`` (default: ``unlabeled``, else ``root``)."""
    unlabeled: str | None = None
    """Folder of unlabeled images (pseudo-labelling, self-training, SSAR pretraining)."""
    skip_bad: bool = False
    """Drop missing, empty, truncated or undecodable images (each logged) instead of stopping."""


@dataclass
class LossSection:
    """The task loss on scores against MOS."""

    task: str = "mse"
    """A registered name or a formula such as ``"0.75*plcc + 0.25*rank"``."""


@dataclass
class DistillSection:
    """Teachers and what the student learns from them."""

    teachers: list = field(default_factory=list)
    """Each a registered name, ``timm:NAME``, a checkpoint or a ``image,score`` CSV; several are averaged."""
    teacher_input: SizeSpec | None = None
    """The teachers' resolution (their own view of each crop); default: the teacher's own."""
    loss: str | None = "temperature_mse"
    """Distillation formula on logits, e.g. ``"0.5*temperature_mse"``; ``None`` when the teacher only
    teaches through pseudo-labels (offline distillation)."""
    feature: list = field(default_factory=list)
    """Feature losses as ``LOSS:STUDENT_MODULE:TEACHER_MODULE`` (module paths on the bare models)."""
    budget: str | None = "vquala2025"
    """Budget the student must fit before training starts (``None``: no check)."""
    allow_over_budget: bool = False
    calibrate: bool = False
    """Map pseudo-labels to the label scale with a 4-parameter logistic fitted on the labeled set."""
    self_train: int = 0
    """Rounds of self-training: the teacher is retrained on labels ∪ its pseudo-labels this many times
    before it labels the student's data (ECNU-SJTU's loop)."""


@dataclass
class SSARSection:
    """Self-Supervised Adaptive Ranking pretraining (seed §2, RankCORE)."""

    epochs: int = 0
    """Pretraining epochs on (I, T_s(I)) pairs before supervised training; 0 turns SSAR off."""
    margin: float = 0.1
    """λ of the adaptive margin m(s) = λ·s."""
    lr: float | None = None
    """Pretraining learning rate (default: ``train.lr``)."""
    degradations: list = field(default_factory=list)
    """Degradation names to draw T from (default: all of :mod:`kdfiqa.data.degradations`)."""


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
    reported by ``source`` alone (a flag, ``--set``, a dict).
    """

    source: str
    values: Mapping[str, Any]
    lines: Mapping[str, int] = field(default_factory=dict)

    def where(self, key: str) -> str:
        line = self.lines.get(key)
        return f"{self.source}:{line}" if line else self.source


# --------------------------------------------------------------------------------------------- YAML


def _key_lines(node: yaml.Node, prefix: str, out: dict[str, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = f"{prefix}{key_node.value}"
            out[key] = key_node.start_mark.line + 1
            _key_lines(value_node, key + ".", out)


def _read_yaml(text: str, source: str) -> tuple[dict[str, Any], dict[str, int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        values = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{source}:{mark.line + 1}" if mark else source
        raise ConfigError(f"{at}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if values is None:
        return {}, {}
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: a config file must be a mapping of sections, got {type(values).__name__}")
    lines: dict[str, int] = {}
    _key_lines(node, "", lines)
    return values, lines


def load_config_file(path: str | Path, command: str | None = None) -> list[ConfigLayer]:
    """The layers of a recipe or config file: its top-level sections, then ``commands[command]``."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    return _file_layers(path.read_text(encoding="utf-8"), str(path), command)


def _file_layers(text: str, source: str, command: str | None) -> list[ConfigLayer]:
    values, lines = _read_yaml(text, source)
    for key in values:
        if key not in FILE_KEYS:
            raise ConfigError(f"{source}:{lines.get(key, '?')}: unknown section {key!r}{_hint(key, FILE_KEYS)}")
    commands = values.get("commands") or {}
    if not isinstance(commands, dict) or set(commands) - set(COMMANDS):
        bad = sorted(set(commands) - set(COMMANDS)) if isinstance(commands, dict) else ["commands"]
        raise ConfigError(f"{source}:{lines.get('commands', '?')}: 'commands' may only hold "
                          f"{' and '.join(COMMANDS)} sections, not {bad[0]!r}")
    base = ConfigLayer(source, {k: v for k, v in values.items() if k != "commands"}, lines)
    layers = [base]
    if command is not None and commands.get(command):
        prefix = f"commands.{command}."
        sub_lines = {k[len(prefix):]: n for k, n in lines.items() if k.startswith(prefix)}
        layers.append(ConfigLayer(f"{source} [commands.{command}]", commands[command], sub_lines))
    return layers


# ------------------------------------------------------------------------------------------ recipes


def _recipe_dir() -> Any:
    return resources.files("kdfiqa") / "recipes"


def list_recipes() -> list[tuple[str, str]]:
    """``(name, one-line description)`` of every packaged recipe, sorted by name."""
    found = []
    for entry in _recipe_dir().iterdir():
        if entry.name.endswith(".yaml"):
            values, _ = _read_yaml(entry.read_text(encoding="utf-8"), entry.name)
            found.append((entry.name[: -len(".yaml")], str(values.get("description", "")).strip()))
    return sorted(found)


def recipe_path(name: str) -> Any:
    """The packaged recipe ``name`` (a traversable file); :class:`ConfigError` naming the known ones."""
    entry = _recipe_dir() / f"{name}.yaml"
    if not entry.is_file():
        names = [n for n, _ in list_recipes()]
        raise ConfigError(f"unknown recipe {name!r}{_hint(name, names)}; `kdfiqa recipes` lists: "
                          f"{', '.join(names)}")
    return entry


def load_recipe(name: str, command: str | None = None) -> list[ConfigLayer]:
    """The layers of recipe ``name`` (a packaged name, or a path to a YAML file) for ``command``."""
    if name.endswith((".yaml", ".yml")):
        return load_config_file(name, command)
    return _file_layers(recipe_path(name).read_text(encoding="utf-8"), f"recipe {name}", command)


# --------------------------------------------------------------------------------------- overrides


def parse_override(text: str) -> tuple[str, Any]:
    """``"train.lr=1e-4"`` → ``("train.lr", 0.0001)``; the value is read as YAML (lists, null, bools).

    Numbers in exponent form without a dot (``1e-4``), which YAML 1.1 reads as strings, are read as
    floats.
    """
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"--set {text!r}: expected SECTION.KEY=VALUE, e.g. train.lr=1e-4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML") from None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            pass
    return key, value


def overrides_layer(items: Iterable[str], source: str = "--set") -> ConfigLayer:
    """One layer from ``--set`` items. Keys below a field (``data.train_transform.flip``) update that
    mapping instead of replacing it."""
    values: dict[str, Any] = {}
    for item in items:
        key, value = parse_override(item)
        section, dot, rest = key.partition(".")
        if not dot:
            values[section] = value
            continue
        node = values.setdefault(section, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{source} {item!r}: {section!r} was already given a value")
        node[rest] = value
    return ConfigLayer(source, values)


# --------------------------------------------------------------------------------------- resolution


def _hint(key: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, sorted(choices), n=3, cutoff=0.6)
    return f" (did you mean {', '.join(close)}?)" if close else ""


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in _UNION_TYPES:
        return " or ".join(_describe(a) for a in typing.get_args(hint))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _check_type(value: Any, hint: Any) -> Any:
    """``value`` if it fits ``hint`` (ints accepted for floats), else raise ``TypeError``."""
    if typing.get_origin(hint) in _UNION_TYPES:
        for option in typing.get_args(hint):
            try:
                return _check_type(value, option)
            except TypeError:
                continue
        raise TypeError
    if hint is type(None):
        if value is None:
            return None
        raise TypeError
    origin = typing.get_origin(hint)
    if origin is tuple and isinstance(value, (list, tuple)):
        args = typing.get_args(hint)
        if len(args) != len(value):
            raise TypeError
        return tuple(_check_type(v, a) for v, a in zip(value, args))
    if origin is not None:
        hint = origin
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is int and isinstance(value, bool):
        raise TypeError
    if isinstance(value, hint):
        return value
    raise TypeError


def _apply(target: dict[str, Any], layer: ConfigLayer) -> None:
    """Merge ``layer`` into ``target`` (nested dicts of section values), checking keys and types."""
    for key, value in layer.values.items():
        if key in SCALARS:
            target[key] = _typed(RunConfig, key, value, layer, key)
            continue
        if key not in SECTIONS:
            raise ConfigError(f"{layer.where(key)}: unknown section {key!r}{_hint(key, FILE_KEYS - {'commands'})}")
        if not isinstance(value, Mapping):
            raise ConfigError(f"{layer.where(key)}: section {key!r} must be a mapping of settings")
        section_cls = SECTIONS[key]
        names = [f.name for f in dataclasses.fields(section_cls)]
        for name, item in value.items():
            path = f"{key}.{name}"
            field_name, _, inner = str(name).partition(".")
            if field_name not in names:
                raise ConfigError(f"{layer.where(path)}: unknown setting {path!r}{_hint(str(name), names)}; "
                                  f"{key} takes: {', '.join(names)}")
            if inner:
                item = _set_nested(target[key].get(field_name), inner.split("."), item)
            target[key][field_name] = _typed(section_cls, field_name, item, layer, path)


def _set_nested(mapping: Any, keys: list[str], value: Any) -> dict[str, Any]:
    """A copy of ``mapping`` (a dict or ``None``) with ``value`` stored under the key path ``keys``."""
    out = dict(mapping) if isinstance(mapping, Mapping) else {}
    head, *tail = keys
    out[head] = _set_nested(out.get(head), tail, value) if tail else value
    return out


def _typed(cls: type, name: str, value: Any, layer: ConfigLayer, path: str) -> Any:
    hint = typing.get_type_hints(cls)[name]
    try:
        return _check_type(value, hint)
    except TypeError:
        raise ConfigError(f"{layer.where(path)}: {path} must be {_describe(hint)}, "
                          f"got {value!r} ({type(value).__name__})") from None


def resolve_config(command: str | None, layers: Sequence[ConfigLayer]) -> RunConfig:
    """Defaults overlaid with ``layers`` in order; see the module docstring for the usual order."""
    merged = RunConfig().to_dict()
    for layer in layers:
        _apply(merged, layer)
    sections = {name: cls(**merged[name]) for name, cls in SECTIONS.items()}  # TrainConfig checks values
    return RunConfig(**{k: merged[k] for k in SCALARS}, **sections)


def build_layers(command: str, *, recipe: str | None = None, config_file: str | Path | None = None,
                 flags: Mapping[str, Any] | None = None, sets: Sequence[str] = ()) -> list[ConfigLayer]:
    """The layers of a command-line run in precedence order: recipe, ``--config``, flags, ``--set``.

    ``flags`` maps dotted keys (``"train.lr"``) to values given by dedicated flags; ``None`` values
    (flags not given) are skipped.
    """
    layers: list[ConfigLayer] = []
    if recipe:
        layers += load_recipe(recipe, command)
    if config_file:
        layers += load_config_file(config_file, command)
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    if given:
        nested: dict[str, Any] = {}
        for key, value in given.items():
            section, _, name = key.partition(".")
            nested.setdefault(section, {})[name] = value
        layers.append(ConfigLayer("command-line flags", nested))
    if sets:
        layers.append(overrides_layer(sets))
    return layers
