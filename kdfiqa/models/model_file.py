"""Model files: a network written down as a registered name, factory keyword arguments and an input size.

A model file is a YAML (``.yaml``, ``.yml``) or JSON (``.json``) mapping of at most three fields::

    name: emo2_1m                               # a registered model or timm:NAME (`kdfiqa models`)
    kwargs: {depths: [2, 2, 9, 3], embed_dims: [32, 48, 80, 200]}   # optional factory arguments
    input: [224, 224]                           # optional: the size it is trained and deployed at

``kdfiqa search --out`` writes one for each configuration of its Pareto front. ``kdfiqa train`` and
``distill`` take one as ``--model FILE`` (:class:`kdfiqa.config.ModelSection` expands it into
``name``/``kwargs``/``input``, so a run's config and its checkpoints name the registered model and
rebuild without the file), and ``kdfiqa budget FILE`` measures the network it describes.

A file is read whole only when it is at most :data:`MAX_MODEL_FILE_BYTES`; ``kwargs`` may hold only
the settings a checkpoint may replay (:func:`~kdfiqa.models.registry.restorable_kwargs`: never
``pretrained`` or a path); any fault is one :class:`~kdfiqa.errors.ConfigError` naming the file,
the line where YAML gives one, and the field.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from torch import nn

from ..atomic_write import write_atomic
from ..errors import ConfigError, KdfiqaError
from ..size import Size
from .deploy import deploy_config, plain_values, set_deploy_config
from .registry import check_model_spec, create_model, restorable_kwargs

__all__ = ["MODEL_FILE_SUFFIXES", "MAX_MODEL_FILE_BYTES", "ModelFile", "is_model_file", "read_model_file",
           "write_model_file", "build_model_file"]

MODEL_FILE_SUFFIXES = (".yaml", ".yml", ".json")
"""File name endings that mark a model file (case-insensitive)."""
MAX_MODEL_FILE_BYTES = 64 << 10
"""The largest model file read (64 KiB): one holds a name, a few keyword arguments and a size."""
FIELDS = ("name", "kwargs", "input")


@dataclass(frozen=True)
class ModelFile:
    """What a model file says: ``create_model(name, **kwargs)``, deployed at ``input`` (H, W)."""

    path: str
    name: str
    kwargs: dict = field(default_factory=dict)
    input: tuple[int, int] | None = None


def is_model_file(value: Any) -> bool:
    """Whether ``value`` (a model name or path) names a model file, by its ending."""
    return isinstance(value, (str, os.PathLike)) and os.fspath(value).lower().endswith(MODEL_FILE_SUFFIXES)


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise ConfigError(f"{path}: model file not found")
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_MODEL_FILE_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the model file ({exc.strerror or exc})") from None
    if len(data) > MAX_MODEL_FILE_BYTES:
        raise ConfigError(f"{path}: larger than {MAX_MODEL_FILE_BYTES >> 10} KiB; a model file holds a name, "
                          "kwargs and an input size")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; a model file is YAML or JSON") from None


def _parse(text: str, path: Path) -> tuple[Any, dict[str, int]]:
    """The file's values and the line of each top-level key (YAML only)."""
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text), {}
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
    import yaml

    from ..safe_yaml import safe_yaml

    values, node = safe_yaml(text, str(path))
    lines = ({key.value: key.start_mark.line + 1 for key, _ in node.value}
             if isinstance(node, yaml.MappingNode) else {})
    return values, lines


def read_model_file(path: str | os.PathLike) -> ModelFile:
    """Read and check the model file at ``path`` (see the module docstring)."""
    path = Path(path)
    values, lines = _parse(_read_text(path), path)

    def where(key: str) -> str:
        return f"{path}:{lines[key]}: {key}" if key in lines else f"{path}: {key}"

    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a model file is a mapping of {', '.join(FIELDS)}, got {type(values).__name__}")
    unknown = sorted(str(k) for k in values if k not in FIELDS)
    if unknown:
        raise ConfigError(f"{where(unknown[0])}: unknown field; a model file holds {', '.join(FIELDS)}")
    name = values.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where('name')}: a registered model name is required, got {name!r}")
    if is_model_file(name):
        raise ConfigError(f"{where('name')}: {name!r} is a model file; name a registered model")
    try:
        allowed = restorable_kwargs(name)
    except KdfiqaError as exc:
        raise ConfigError(f"{where('name')}: {exc}") from None
    kwargs = values.get("kwargs") or {}
    if not isinstance(kwargs, dict) or not all(isinstance(k, str) for k in kwargs):
        raise ConfigError(f"{where('kwargs')}: a mapping of factory arguments is required, got {kwargs!r}")
    refused = sorted(set(kwargs) - allowed)
    if refused:
        raise ConfigError(f"{where('kwargs')}.{refused[0]}: not a setting {name} accepts from a file "
                          f"(it accepts {', '.join(sorted(allowed))})")
    try:
        check_model_spec(name, kwargs)
    except KdfiqaError as exc:
        raise ConfigError(f"{where('kwargs')}: {exc}") from None
    size = values.get("input")
    return ModelFile(str(path), name, plain_values(kwargs),
                     None if size is None else Size.parse(size, where("input"), rgb=True).hw)


def write_model_file(path: str | os.PathLike, name: str, kwargs: Mapping[str, Any],
                     input_size: tuple[int, int] | None = None, *, comment: str = "", overwrite: bool = True) -> Path:
    """Write a model file (YAML or JSON by ``path``'s ending) that :func:`read_model_file` reads
    back as ``name``, ``kwargs``, ``input_size``; ``comment`` lines head a YAML file. The file is
    written atomically; without ``overwrite`` an existing one is refused
    (:class:`~kdfiqa.atomic_write.OutputExistsError`)."""
    import yaml

    path = Path(path)
    values: dict[str, Any] = {"name": name, "kwargs": plain_values(kwargs)}
    if input_size is not None:
        values["input"] = list(input_size)
    if path.suffix.lower() == ".json":
        text = json.dumps(values, indent=2) + "\n"
    else:
        head = "".join(f"# {line}\n" for line in comment.splitlines())
        text = head + yaml.safe_dump(values, sort_keys=False, default_flow_style=None)
    return write_atomic(path, text, overwrite=overwrite)


def build_model_file(path: str | os.PathLike, **overrides: Any) -> nn.Module:
    """The model a model file describes (``overrides`` added to its ``kwargs``), carrying the file's
    input size as its deployment size."""
    spec = read_model_file(path)
    try:
        model = create_model(spec.name, **{**spec.kwargs, **overrides})
    except KdfiqaError as exc:  # out of bounds, or refused by the factory (create_model says which)
        raise ConfigError(f"{path}: kwargs: {exc}") from None
    if spec.input is not None:
        set_deploy_config(model, deploy_config(model).replace(input_size=spec.input))
    return model
