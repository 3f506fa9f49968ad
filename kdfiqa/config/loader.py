"""Where a run's settings come from: recipes, ``--config`` files, dedicated flags and ``--set`` overrides.

Recipes (``kdfiqa/recipes/*.yaml``) and ``--config`` files share one format: the sections of
:mod:`kdfiqa.config.schema` at the top level, optional ``description`` and ``source`` lines, and an
optional ``commands`` mapping whose ``train``/``distill`` entries hold sections that apply only to
that command (e.g. a recipe's teacher is trained by ``kdfiqa train`` and its student by ``kdfiqa
distill``). Layers apply in this order, later ones winning: defaults, recipe, config file, dedicated
flags, ``--set section.key=value``. YAML is read through :func:`kdfiqa.safe_yaml.safe_yaml`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from ..errors import CheckpointError, ConfigError
from ..options import COMMANDS
from ..safe_yaml import key_lines, safe_yaml
from .schema import FILE_KEYS, ConfigLayer, RunConfig, did_you_mean

__all__ = ["load_config_file", "load_stored_config", "list_recipes", "recipe_path", "load_recipe", "parse_override",
           "overrides_layer", "build_layers"]


def _read_yaml(text: str, source: str) -> tuple[dict[str, Any], dict[str, int]]:
    values, node = safe_yaml(text, source)
    if values is None:
        return {}, {}
    if not isinstance(values, dict):
        raise ConfigError(f"{source}: a config file must be a mapping of sections, got {type(values).__name__}")
    lines: dict[str, int] = {}
    key_lines(node, "", lines)
    return values, lines


def load_config_file(path: str | Path, command: str | None = None) -> list[ConfigLayer]:
    """The layers of a recipe or config file: its top-level sections, then ``commands[command]``. A
    kdfiqa checkpoint (``.pt``, ``.pth``, ``.ckpt``) gives the run configuration it stores
    (:func:`load_stored_config`), so that a run can start from another's settings."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    from ..targets import CHECKPOINT_SUFFIXES

    if path.suffix.lower() in CHECKPOINT_SUFFIXES:
        stored = load_stored_config(path)
        if stored is None:
            raise ConfigError(f"{path}: this checkpoint stores no run configuration (it was written outside a "
                              "training run); give a YAML config file")
        return [ConfigLayer(f"{path} (its stored run config)", stored.to_dict())]
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}); save the config file as UTF-8") from None
    return _file_layers(text, str(path), command)


def _file_layers(text: str, source: str, command: str | None) -> list[ConfigLayer]:
    values, lines = _read_yaml(text, source)
    for key in values:
        if key not in FILE_KEYS:
            raise ConfigError(f"{source}:{lines.get(key, '?')}: unknown section {key!r}{did_you_mean(key, FILE_KEYS)}")
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


def load_stored_config(path: str | Path) -> RunConfig | None:
    """The run configuration the kdfiqa checkpoint at ``path`` stores (what resume, self-training and
    ``--config CKPT`` reuse), validated whole as a config file is: its sections and settings, every
    option's type, choices and range, every size, and the checks that parse transforms, losses and
    feature pairs (:meth:`~kdfiqa.config.RunConfig.validate`). None when it stores none (a checkpoint
    written outside a run). A refused one is :class:`~kdfiqa.errors.CheckpointError`, one line naming
    ``path`` and the field; the checkpoint itself is read by :func:`kdfiqa.checkpoint.load_checkpoint`."""
    from ..checkpoint import load_checkpoint

    config = load_checkpoint(path).get("config")
    if config is None or config == {}:
        return None
    where = f"{path} (its stored run config)"
    if not isinstance(config, dict):
        raise CheckpointError(f"{where}: must be a mapping of sections, got {type(config).__name__}")
    model = config.get("model")
    name = model.get("name") if isinstance(model, dict) else None
    if isinstance(name, str) and name.lower().endswith((".yaml", ".yml", ".json")):  # a run stores the name it read
        raise CheckpointError(f"{where}: model.name {name!r} names a model file, where a run stores the registered "
                              "name the file held; use a checkpoint written by kdfiqa")
    try:
        stored = RunConfig.from_dict(config, source=where)
        stored.validate()
    except ConfigError as exc:
        text = str(exc)
        raise CheckpointError(text if text.startswith(where) else f"{where}: {text}") from None
    return stored


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
        raise ConfigError(f"unknown recipe {name!r}{did_you_mean(name, names)}; `kdfiqa recipes` lists: "
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
        value = safe_yaml(raw, f"--set {key}")[0] if raw.strip() else None
    except ConfigError:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML (or too large)") from None
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
        layers.append(ConfigLayer("command-line flags", nested, flags=True))
    if sets:
        layers.append(overrides_layer(sets))
    return layers
